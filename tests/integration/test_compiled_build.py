"""The compiled build (``make compiled``: mypyc over the pure core) decides exactly what the
pure-Python source decides: a corpus of generated events through both, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compiled_corpus import COMPILED

ROOT = Path(__file__).resolve().parents[2]
COMPILED_TREE = Path(os.environ.get("ROUTER_COMPILED_TREE", ROOT / "build" / "compiled"))


def _corpus(tree: Path) -> list[bytes]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.compiled_corpus", "--events", "1500"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        check=True,
        timeout=50,
    )
    return done.stdout.splitlines()


@pytest.fixture
def compiled_tree() -> Path:
    """The compiled build next to this tree; skipped when it was not built or is older than
    the source (CI builds it and sets ``ROUTER_REQUIRE_COMPILED=1``, so there it fails
    instead)."""
    if not (COMPILED_TREE / "router" / "core").is_dir() or COMPILED_TREE == ROOT:
        if os.environ.get("ROUTER_REQUIRE_COMPILED") == "1":
            pytest.fail(f"no compiled build in {COMPILED_TREE}: run `make compiled`")
        pytest.skip("no compiled build (make compiled)")
    stale = [
        m
        for m in COMPILED
        if (ROOT / f"{m.replace('.', '/')}.py").read_bytes()
        != (COMPILED_TREE / f"{m.replace('.', '/')}.py").read_bytes()
    ]
    if stale:  # `make run` builds it; an edit since then makes it stale until the next build
        message = f"the compiled build is older than the source of {stale}: make compiled"
        if os.environ.get("ROUTER_REQUIRE_COMPILED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return COMPILED_TREE


def test_the_compiled_build_gives_the_pure_builds_outputs(compiled_tree: Path) -> None:
    """Every output of the corpus (decode, sanitize, plan, audit records, explain, paths,
    defects) is the same bytes from both builds, and the compiled build really is compiled."""
    pure, compiled = _corpus(ROOT), _corpus(compiled_tree)
    assert pure[0] == b"[]"
    assert compiled[0] == ("[" + ",".join(f'"{m}"' for m in COMPILED) + "]").encode()
    assert len(pure) == len(compiled) > 1500
    for line, (want, got) in enumerate(zip(pure[1:], compiled[1:], strict=True), start=2):
        assert got == want, f"corpus line {line}: the compiled build differs"
