"""The examples in the runtime's and the Edge TPU package's docstrings run (those that need a
model file are marked SKIP)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import edgeship.edgetpu
import edgeship.runtime

MODULES = sorted(f"{package.__name__}.{info.name}" for package in (edgeship.runtime, edgeship.edgetpu)
                 for info in pkgutil.iter_modules(package.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module.__name__}"
