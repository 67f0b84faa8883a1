"""``router serve`` says which build it runs: ``build_name`` looks at where a compiled module
was loaded from (an extension module: the mypyc build of ``scripts/build-compiled.sh``)."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType

import pytest

from router.cli import build_name
from router.core import plan


def _module(file: str | None) -> ModuleType:
    module = ModuleType("router.core.plan")
    module.__file__ = file
    return module


@pytest.mark.parametrize(
    "file",
    [
        "/srv/build/compiled/router/core/plan.cpython-311-x86_64-linux-gnu.so",
        *(f"/srv/router/core/plan{suffix}" for suffix in EXTENSION_SUFFIXES),
    ],
)
def test_an_extension_module_is_the_compiled_build(file: str) -> None:
    assert build_name(_module(file)) == "compiled"


@pytest.mark.parametrize("file", ["/srv/router/core/plan.py", "plan.pyc", "", None])
def test_a_source_or_an_unknown_origin_is_the_pure_build(file: str | None) -> None:
    assert build_name(_module(file)) == "pure"


def test_the_default_is_where_the_planner_was_loaded_from() -> None:
    compiled = plan.__file__ is not None and not plan.__file__.endswith(".py")
    assert build_name() == ("compiled" if compiled else "pure")
