"""The dependency direction of design.md section 8, checked on the transitive import closure.

A module's closure is every module it imports, directly or through the repository's modules
it imports (``from x import y`` names module ``x.y`` when that is a module, else ``x``;
importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``). Imports under
``if TYPE_CHECKING:`` never run and do not count; imports inside functions do. Third-party
and standard modules end the walk: their own imports are theirs.

Each row of ``RULES`` says which modules a scope (a package or a module) may never reach.
"Clock" is checked two ways: importing ``time`` is forbidden like any I/O module, and every
repository module in a pure closure is searched for calls of ``datetime.now``/``utcnow``/
``today`` and ``date.today`` (pure code takes ``now`` as an argument).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("consent", "destinations", "router")

IO = ("aiohttp", "redis", "opentelemetry", "asyncio", "logging", "time", "socket", "subprocess")
"""What pure code never reaches: network, Redis, telemetry, the event loop, logs, the clock."""
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})
CLOCK_OWNERS = frozenset({"datetime", "date"})


@dataclass(frozen=True)
class Rule:
    """Modules in ``scope`` (minus ``exempt``) never reach a module under ``forbidden``."""

    scope: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    pure: bool = False
    """Also no clock calls anywhere in the closure."""


RULES: dict[str, Rule] = {
    "consent is independent": Rule(("consent",), ("router", "destinations")),
    "destinations are independent": Rule(("destinations",), ("router", "consent")),
    "destinations are pure except the transport": Rule(
        ("destinations",), IO, exempt=("destinations.transport",), pure=True
    ),
    # consent.store is the Redis shell.
    "consent decoders and policy are pure": Rule(
        ("consent",), IO, exempt=("consent.store",), pure=True
    ),
    "router.core is pure and below every other router package": Rule(
        ("router.core",),
        (
            *IO,
            "router.edge",
            "router.queue",
            "router.delivery",
            "router.compliance",
            "router.observability",
            "router.runtime",
        ),
        pure=True,
    ),
    "the audit chain is pure": Rule(("router.compliance.audit_chain",), IO, pure=True),
    "router.queue is below the edge and delivery": Rule(
        ("router.queue",), ("router.edge", "router.delivery", "router.runtime")
    ),
    "router.delivery is below the edge": Rule(
        ("router.delivery",), ("router.edge", "router.runtime")
    ),
    "router.compliance is below the edge and delivery": Rule(
        ("router.compliance",), ("router.edge", "router.delivery", "router.runtime")
    ),
    "router.observability is below every package that uses it": Rule(
        ("router.observability",),
        ("router.edge", "router.queue", "router.delivery", "router.compliance", "router.runtime"),
    ),
    # The app factory is the edge's one wiring module: it takes the runtime. Handlers never
    # reach delivery or the composition root.
    "edge handlers never reach delivery or the composition root": Rule(
        ("router.edge",),
        ("router.delivery", "router.runtime", "router.cli"),
        exempt=("router.edge.app",),
    ),
}
NOT_YET: frozenset[str] = frozenset()
"""Scopes of rules that apply once the package exists (layout.md's order of moves)."""


def source_of(root: Path, name: str) -> Path | None:
    """The file of module ``name`` under ``root``, or None when it is not one of ours."""
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def direct_imports(root: Path, name: str) -> set[str]:
    """The modules module ``name`` imports at run time, resolved to modules."""
    path = source_of(root, name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(_parsed(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if source_of(root, candidate) else base)
    return found


def closure(root: Path, name: str) -> set[str]:
    """Every module ``name`` reaches, itself included; ours are walked, others are leaves."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if source_of(root, module) is None:
            continue
        parts = module.split(".")
        todo.extend(".".join(parts[:n]) for n in range(1, len(parts)))
        todo.extend(direct_imports(root, module))
    return seen


def clock_calls(path: Path) -> list[int]:
    """Lines calling ``datetime.now()``, ``datetime.utcnow()``, ``date.today()``..."""
    lines = []
    for node in _runtime_nodes(_parsed(path)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if node.func.attr in CLOCK_CALLS and owner_name in CLOCK_OWNERS:
            lines.append(node.lineno)
    return lines


def modules_in(root: Path, scope: str) -> list[str]:
    """The modules of a package (recursively) or the module itself."""
    path = source_of(root, scope)
    if path is None:
        return []
    if path.name != "__init__.py":
        return [scope]
    return sorted(
        ".".join(file.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for file in path.parent.rglob("*.py")
    )


def violations(root: Path, rule: Rule) -> list[str]:
    """What the modules of the rule reach that they must not, one line each."""
    found: list[str] = []
    for scope in rule.scope:
        for module in modules_in(root, scope):
            if module in rule.exempt:
                continue
            reached = closure(root, module)
            found += [
                f"{module} reaches {name}"
                for name in sorted(reached)
                if any(name == bad or name.startswith(f"{bad}.") for bad in rule.forbidden)
            ]
            if rule.pure:
                for name in sorted(reached):
                    path = source_of(root, name)
                    found += [
                        f"{module} reaches a clock call at {name}:{line}"
                        for line in (clock_calls(path) if path else [])
                    ]
    return found


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
def test_dependency_rule_holds_on_the_transitive_closure(rule: Rule) -> None:
    """No module in the rule's scope reaches a forbidden module or, when pure, a clock call."""
    assert violations(ROOT, rule) == []


def test_every_rule_scope_exists_or_is_planned() -> None:
    """A scope that matches no module is a typo unless the package is still to come."""
    for rule in RULES.values():
        for scope in rule.scope:
            assert modules_in(ROOT, scope) or scope in NOT_YET, scope
            assert not (modules_in(ROOT, scope) and scope in NOT_YET), f"{scope} exists now"


# --- the walker itself, on a synthetic package ------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_closure_follows_imports_through_modules_and_packages(tmp_path: Path) -> None:
    """Absolute, relative and ``from package import module`` imports are followed, parent
    packages run, TYPE_CHECKING imports are ignored: the I/O two hops away is found."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg import registry\n",
            "pkg/registry.py": "",
            "pkg/pure.py": "from pkg import helper\nimport json\n",
            "pkg/helper.py": (
                "from typing import TYPE_CHECKING\nfrom .sub import deep\n"
                "if TYPE_CHECKING:\n    import redis\n"
            ),
            "pkg/sub/__init__.py": "",
            "pkg/sub/deep.py": "def f():\n    import aiohttp\n",
        },
    )
    reached = closure(tmp_path, "pkg.pure")
    assert {"pkg", "pkg.registry", "pkg.helper", "pkg.sub", "pkg.sub.deep"} <= reached
    assert {"aiohttp", "json"} <= reached
    assert "redis" not in reached
    rule = Rule(("pkg",), ("aiohttp",), exempt=("pkg.sub.deep",))
    assert "pkg.pure reaches aiohttp" in violations(tmp_path, rule)
    assert "pkg.registry reaches aiohttp" not in violations(tmp_path, rule)


def test_clock_calls_are_found_in_the_closure(tmp_path: Path) -> None:
    """``datetime.now`` in an imported module makes a pure module impure; a ``now`` passed in
    does not."""
    _write(
        tmp_path,
        {
            "clk/__init__.py": "",
            "clk/pure.py": "from clk import stamp\n\ndef g(now):\n    return now.now\n",
            "clk/stamp.py": "import datetime as dt\n\ndef f():\n    return dt.datetime.now()\n",
        },
    )
    rule = Rule(("clk.pure",), (), pure=True)
    assert violations(tmp_path, rule) == ["clk.pure reaches a clock call at clk.stamp:4"]
    assert violations(tmp_path, Rule(("clk.pure",), ())) == []
