"""The examples in the runtime's docstrings run (those that need a model file are marked SKIP)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import edgeship.runtime

MODULES = sorted(info.name for info in pkgutil.iter_modules(edgeship.runtime.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"edgeship.runtime.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module.__name__}"
