"""The dependency direction of design.md section 8, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE = [
    "router/core/schema.py",
    "router/core/sanitize.py",
    "router/core/plan.py",
    "router/core/explain.py",
    "router/core/jsonscan.py",
    "consent/model.py",
    "consent/policy.py",
    "consent/resolve.py",
    "consent/signals.py",
    "consent/iab.py",
    "consent/tcf.py",
    "consent/gpp.py",
    "consent/usp.py",
    "consent/gcm.py",
    "consent/onetrust.py",
    "destinations/fields.py",
    "destinations/hashing.py",
    "destinations/dlp.py",
]
IO_MODULES = {"aiohttp", "redis", "opentelemetry", "asyncio", "socket", "subprocess", "requests"}


def imports(path: Path) -> set[str]:
    """Top-level module names imported by a file (at any depth in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("consent", ("router", "destinations")), ("destinations", ("router", "consent"))],
)
def test_packages_never_import_router_or_each_other(
    package: str, forbidden: tuple[str, ...]
) -> None:
    """consent/ and destinations/ import neither router/ nor each other."""
    for path in sorted((ROOT / package).glob("*.py")):
        bad = {m for m in imports(path) if m.split(".")[0] in forbidden}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    """Pure modules import no network, Redis, telemetry or event-loop library."""
    path = ROOT / module
    if not path.exists():
        pytest.skip(f"{module} not present")
    bad = {m for m in imports(path) if m.split(".")[0] in IO_MODULES}
    assert not bad, f"{module} imports {sorted(bad)}"
