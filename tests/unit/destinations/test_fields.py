"""Allowlist minimization and transforms (pure)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from destinations.errors import FieldPathError
from destinations.fields import (
    Transform,
    compile_allowlist,
    parse_path,
    truncate_ip,
)

EVENT: dict[str, Any] = {
    "type": "track",
    "userId": "user-1",
    "properties": {
        "revenue": 10,
        "email": "a@b.c",
        "products": [{"product_id": "p1", "name": "n"}, {"product_id": "p2"}, "junk"],
        "tags": ["a", "b"],
    },
    "context": {"ip": "203.0.113.77", "page": {"url": "u", "search": "?q=secret"}},
}


def test_keeps_only_listed_paths() -> None:
    """Unlisted fields are removed, nested and array paths kept."""
    allow = compile_allowlist(["type", "properties.revenue", "properties.products[].product_id"])
    assert allow.apply(EVENT) == {
        "type": "track",
        "properties": {"revenue": 10, "products": [{"product_id": "p1"}, {"product_id": "p2"}]},
    }


def test_listing_an_object_allows_it_whole_minus_dropped_children() -> None:
    """`context.page` allows the object; a drop transform removes one child."""
    allow = compile_allowlist(["context.page"], {"context.page.search": Transform.DROP})
    assert allow.apply(EVENT) == {"context": {"page": {"url": "u"}}}


def test_scalar_arrays_with_brackets() -> None:
    """`properties.tags[]` keeps the array of scalars."""
    assert compile_allowlist(["properties.tags[]"]).apply(EVENT) == {
        "properties": {"tags": ["a", "b"]}
    }


def test_transforms_tokenize_hash_and_truncate() -> None:
    """Transformed fields leave in transformed form only."""
    allow = compile_allowlist(
        [],
        {
            "userId": Transform.TOKENIZE,
            "properties.email": Transform.HASH_SHA256,
            "context.ip": Transform.TRUNCATE_IP,
        },
        tokenize_key=b"k",
    )
    out = allow.apply(EVENT)
    assert out["userId"] == hmac.new(b"k", b"user-1", hashlib.sha256).hexdigest()
    assert out["properties"]["email"] == hashlib.sha256(b"a@b.c").hexdigest()
    assert out["context"] == {"ip": "203.0.113.0"}
    assert allow.transformed_paths == {"userId", "properties.email", "context.ip"}


def test_tokens_differ_per_destination_key() -> None:
    """Two destinations' tokens for one id cannot be joined."""
    one = compile_allowlist([], {"userId": Transform.TOKENIZE}, b"one").apply(EVENT)
    two = compile_allowlist([], {"userId": Transform.TOKENIZE}, b"two").apply(EVENT)
    assert one["userId"] != two["userId"]


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.168.1.77", "192.168.1.0"),
        ("2001:db8:abcd:1234::1", "2001:db8:abcd::"),
        ("::ffff:10.1.2.3", "10.1.2.0"),
        ("not an ip", None),
    ],
)
def test_truncate_ip(address: str, expected: str | None) -> None:
    """IPv4 to /24, IPv6 to /48, anything else refused."""
    assert truncate_ip(address) == expected


def test_untransformable_values_are_removed() -> None:
    """Hashing an object or truncating a non-IP removes the field (fail closed)."""
    allow = compile_allowlist(
        [], {"context.page": Transform.HASH_SHA256, "userId": Transform.TRUNCATE_IP}
    )
    assert allow.apply(EVENT) == {}


def test_transforms_given_as_their_names_act_as_the_enum() -> None:
    """A transform named by its value (as YAML spells it) is the same transform: a dropped
    path is not reported as transformed, and an unknown name is refused."""
    by_name = compile_allowlist(
        ["properties"], {"properties.email": "drop", "userId": "hash_sha256"}
    )
    by_enum = compile_allowlist(
        ["properties"],
        {"properties.email": Transform.DROP, "userId": Transform.HASH_SHA256},
    )
    assert by_name.transformed_paths == by_enum.transformed_paths == frozenset({"userId"})
    assert by_name.apply(EVENT) == by_enum.apply(EVENT)
    assert "email" not in by_name.apply(EVENT)["properties"]
    with pytest.raises(ValueError, match="shout"):
        compile_allowlist([], {"userId": "shout"})


@pytest.mark.parametrize("path", ["", " a", "a..b", "a.[]", "a[]b", "a b", "a.b[].", "[]"])
def test_invalid_paths_are_refused(path: str) -> None:
    """Path syntax errors are reported."""
    with pytest.raises(FieldPathError):
        parse_path(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcd"), inner, max_size=3)
    ),
    max_leaves=20,
)
paths = st.lists(
    st.lists(st.tuples(st.sampled_from("abcd"), st.booleans()), min_size=1, max_size=3).map(
        lambda parts: ".".join(name + ("[]" if each else "") for name, each in parts)
    ),
    max_size=4,
)


def _leaves(value: Any, prefix: str = "") -> set[str]:
    """Every leaf path of a JSON-like value, keys as they are (an empty array: ``name[]``)."""
    if isinstance(value, dict):
        found: set[str] = set()
        for name, item in value.items():
            found |= _leaves(item, f"{prefix}.{name}" if prefix else str(name))
        return found or ({prefix} if prefix else set())
    if isinstance(value, list):
        return {p for item in value for p in _leaves(item, f"{prefix}[]")} or {f"{prefix}[]"}
    return {prefix}


@given(st.dictionaries(st.sampled_from("abcd"), json_values, max_size=4), paths)
def test_output_never_holds_a_path_outside_the_allowlist(
    event: dict[str, Any], fields: list[str]
) -> None:
    """Every leaf of the output sits at or under a listed path."""
    out = compile_allowlist(fields).apply(event)
    for leaf in _leaves(out):
        assert any(leaf == f or leaf.startswith((f + ".", f + "[]")) for f in fields), (
            leaf,
            fields,
        )
