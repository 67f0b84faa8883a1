"""Field paths: one walker, keys normalized, and one answer to "which fields were removed"."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.paths import field_paths, safe_path, safe_segment

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b_1", "x y", "j@x.io", "12345", ""]), children)
    ),
    max_leaves=25,
)


def _reference(value: Any, prefix: str, depth: int, max_depth: int) -> set[str]:
    """The definition, written plainly: every leaf's path, keys through ``safe_segment``."""
    if depth < max_depth and isinstance(value, dict) and value:
        return {
            p
            for name, child in value.items()
            for p in _reference(
                child,
                f"{prefix}.{safe_segment(name)}" if prefix else safe_segment(name),
                depth + 1,
                max_depth,
            )
        }
    if depth < max_depth and isinstance(value, list) and value:
        return {
            p for child in value for p in _reference(child, f"{prefix}[]", depth + 1, max_depth)
        }
    return {prefix} if prefix else set()


def test_field_paths_in_allowlist_syntax() -> None:
    """Nested objects and arrays give dotted paths with ``[]``."""
    payload = {"event": "x", "properties": {"products": [{"sku": "a"}, {"price": 1}]}, "e": {}}
    assert field_paths(payload) == {
        "event",
        "properties.products[].sku",
        "properties.products[].price",
        "e",
    }


def test_value_like_keys_become_wildcards() -> None:
    """Emails, phone numbers, spaces and long digit runs used as keys are never kept."""
    payload = {
        "properties": {
            "jane@example.com": 1,
            "+16505551212": 2,
            "Jane Doe": 3,
            "order_12345678": 4,
            "plan": 5,
        }
    }
    assert field_paths(payload) == {"properties.*", "properties.plan"}


def test_field_paths_are_bounded() -> None:
    """At most ``max_paths`` paths; nesting past ``max_depth`` counts as a leaf."""
    wide = {f"k{i}": i for i in range(1000)}
    assert len(field_paths(wide, max_paths=10)) == 10
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        child: dict[str, object] = {}
        node["a"] = child
        node = child
    node["leaf"] = 1
    (path,) = field_paths(deep, max_depth=4)
    assert path == "a.a.a.a"


@settings(max_examples=300, deadline=None)
@given(_json, st.integers(min_value=1, max_value=6))
def test_field_paths_match_the_plain_definition(value: Any, max_depth: int) -> None:
    """The fast walkers give exactly the paths of the plain recursive definition."""
    assert field_paths(value, max_depth=max_depth) == _reference(value, "", 0, max_depth)


def test_safe_path_rechecks_segments() -> None:
    """A path from elsewhere is re-checked segment by segment."""
    assert safe_path("properties.products[].sku") == "properties.products[].sku"
    assert safe_path("traits.+4915112345678.x") == "traits.*.x"
