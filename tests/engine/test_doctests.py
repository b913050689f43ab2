"""The docstring examples of the engine's pure parts run as tests (they are their manual)."""

from __future__ import annotations

import doctest
import importlib

import pytest

PURE_MODULES = ("rig.engine.judge", "rig.engine.cursor", "rig.events")


@pytest.mark.parametrize("name", PURE_MODULES)
def test_the_docstring_examples_of_a_pure_module_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
