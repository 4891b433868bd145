"""Every docstring example in the package runs (those that need a model file or a long training
are marked SKIP)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import edgeship

MODULES = sorted(info.name for info in pkgutil.walk_packages(edgeship.__path__, "edgeship."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
