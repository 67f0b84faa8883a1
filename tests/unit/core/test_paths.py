"""Field paths: one walker, keys normalized, and one answer to "which fields were removed"."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from destinations.dlp import scan_payload
from destinations.fields import Allowlist, Transform, compile_allowlist
from router.core.paths import field_paths, safe_path, safe_segment, sent_paths

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


# -- the memo of what a destination receives --------------------------------------------------

ALLOWLISTS = [
    # the bench's webhook: transforms at the top and one level down, an array rule
    compile_allowlist(
        ["messageId", "event", "properties.order_id", "properties.products[].sku", "context.ip"],
        {"userId": Transform.TOKENIZE, "context.ip": Transform.TRUNCATE_IP},
        b"k",
    ),
    # a whole subtree with a deeper transform and a dropped field inside it
    compile_allowlist(
        ["properties", "context"],
        {"properties.email": Transform.HASH_SHA256, "context.secret": Transform.DROP},
    ),
    # an array listed whole and by element, an object listed whole and by child
    compile_allowlist(["properties.products", "properties.products[].sku", "traits.address.city"]),
    # a transform under an array: never memoized
    compile_allowlist(
        ["properties.products[].sku"], {"properties.products[].id": Transform.TOKENIZE}
    ),
]

_value = st.none() | st.booleans() | st.integers() | st.sampled_from(["1.2.3.4", "x", ""])
_shape = st.recursive(
    _value,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["sku", "id", "email", "ip", "city", "secret", "products", "x y"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)
_event = st.fixed_dictionaries(
    {},
    optional={
        "messageId": _value,
        "event": _value,
        "userId": _shape,
        "properties": _shape,
        "context": _shape,
        "traits": st.fixed_dictionaries({}, optional={"address": _shape}),
    },
)


def _sent(allowlist: Allowlist, event: dict[str, Any]) -> dict[str, Any]:
    """What the destination receives: the allowlist, then the PII net (as the planner does)."""
    payload, _ = scan_payload(allowlist.apply(event), {}, allowlist.unscanned_paths)
    return payload


@settings(max_examples=400, deadline=None)
@given(_event)
def test_sent_paths_memo_always_gives_the_walked_answer(event: dict[str, Any]) -> None:
    """Whatever events came before (the memo is shared across examples), ``sent_paths`` is
    exactly ``field_paths`` of the payload, for every allowlist."""
    data_paths = field_paths(event)
    for allowlist in ALLOWLISTS:
        payload = _sent(allowlist, event)
        assert sent_paths(allowlist, data_paths, payload) == field_paths(payload)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # same keys, different shapes: a list of objects, then an object
        ({"properties": {"products": [{"sku": "a"}]}}, {"properties": {"products": {"sku": "a"}}}),
        # same paths, a transform that keeps one value and drops the other
        ({"context": {"ip": "1.2.3.4"}}, {"context": {"ip": "not an ip"}}),
        ({"userId": "u-1"}, {"userId": True}),
        ({"userId": "u-1"}, {"userId": None}),
        # same paths, array elements that keep or lose the listed field
        (
            {"properties": {"products": [{"sku": "a", "id": 1}]}},
            {"properties": {"products": [{"sku": "a"}, {"id": 1}]}},
        ),
        # a transform under an array: kept in one event, dropped (with its element) in the other
        ({"properties": {"products": [{"id": "a"}]}}, {"properties": {"products": [{"id": True}]}}),
        # an empty object where another event has a value
        ({"traits": {"address": {}}}, {"traits": {"address": "x"}}),
    ],
)
def test_sent_paths_memo_tells_shapes_with_the_same_keys_apart(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    """Events with the same keys but another shape or transform outcome: each gets its own
    payload's paths, in either order, never the other's remembered answer."""
    for a, b in ((first, second), (second, first)):
        for allowlist in ALLOWLISTS:
            for event in (a, b, a):
                payload = _sent(allowlist, event)
                assert sent_paths(allowlist, field_paths(event), payload) == field_paths(payload)


def test_sent_paths_is_remembered_per_shape() -> None:
    """Events of one shape with other values share one answer (the memo's point)."""
    allowlist = ALLOWLISTS[0]
    events = [
        {"userId": f"u-{n}", "properties": {"order_id": f"o-{n}", "products": [{"sku": n}]}}
        for n in range(3)
    ]
    answers = [sent_paths(allowlist, field_paths(e), _sent(allowlist, e)) for e in events]
    assert answers[0] == {"userId", "properties.order_id", "properties.products[].sku"}
    assert answers[0] is answers[1] is answers[2]


def test_sent_paths_is_not_remembered_for_value_like_listed_keys() -> None:
    """A listed key that normalizes to ``*`` (``ab12345``) would make events with other such
    keys look alike: that allowlist is always walked."""
    allowlist = compile_allowlist(["properties.ab12345"])
    kept, other = {"properties": {"ab12345": 1}}, {"properties": {"zz99999": 1}}
    assert field_paths(kept) == field_paths(other) == {"properties.*"}
    for event in (kept, other, kept):
        payload = _sent(allowlist, event)
        assert sent_paths(allowlist, field_paths(event), payload) == field_paths(payload)


def test_equal_path_sets_come_back_as_one_object() -> None:
    """Events of one shape share their path set (the memos keyed by it then compare keys by
    identity), whatever their values; another shape gets its own."""
    first = field_paths({"a": 1, "b": {"c": "x"}})
    second = field_paths({"b": {"c": "y"}, "a": 2})
    assert first == {"a", "b.c"}
    assert second is first
    assert field_paths({"a": 1}) == {"a"}
    assert field_paths({"a": 1}) is not first
