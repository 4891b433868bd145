"""The examples in the Edge TPU package's docstrings run (those that need a model file are marked SKIP)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest

import edgeship.edgetpu

MODULES = sorted(info.name for info in pkgutil.iter_modules(edgeship.edgetpu.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"edgeship.edgetpu.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module.__name__}"


def test_the_edgetpu_package_never_imports_tensorflow():
    code = (f"import sys; import {', '.join('edgeship.edgetpu.' + m for m in MODULES)}; "
            "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
