"""The allowlist copy against the implementation it replaced, kept here as the reference.

``reference_apply`` is a verbatim copy of ``destinations.fields._apply`` before it read each
node's precomputed ``rules`` with one dictionary lookup per child (issue 14), only renamed.
The package must give identical payloads (types and key order included, and the same sharing
of the event's objects) for arbitrary nested JSON through arbitrary allowlists with transforms,
and for the compiled build's corpus.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from destinations import fields
from destinations.fields import Allowlist, Transform, compile_allowlist
from tests.compiled_corpus import _event
from tests.unit.destinations.test_dlp import PII_SAMPLES, PROPERTY_SETTINGS, pii_text


def reference_apply(node: fields._Node, value: Any, key: bytes) -> Any:
    if node.transform is not None:
        return fields.apply_transform(node.transform, value, key)
    if node.leaf:
        return value
    kind = type(value)
    if kind is list:
        if node.each is None:
            return value if node.whole else fields.DROPPED
        each = node.each
        items = []
        for item in value:
            result = reference_apply(each, item, key)
            if result is not fields.DROPPED:
                items.append(result)
        return items if items or node.whole else fields.DROPPED
    if kind is dict:
        out: dict[str, Any] = dict(value) if node.whole else {}
        for name, child in node.children.items():
            if name in value:
                if child.leaf:  # the common case, without a call
                    out[name] = value[name]
                    continue
                result = reference_apply(child, value[name], key)
                if result is fields.DROPPED:
                    out.pop(name, None)
                else:
                    out[name] = result
        return out if out or node.whole else fields.DROPPED
    return value if node.whole else fields.DROPPED


NAMES = ["a", "b", "ip", "userId", "page", "url", "products"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(PII_SAMPLES)
    | pii_text
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES), children, max_size=4)
    ),
    max_leaves=30,
)
events = st.dictionaries(st.sampled_from(NAMES), json_values, max_size=6)
segments = st.tuples(st.sampled_from(NAMES), st.booleans()).map(
    lambda part: part[0] + ("[]" if part[1] else "")
)
paths = st.lists(segments, min_size=1, max_size=3).map(".".join)
allowlists = st.builds(
    lambda listed, transforms: compile_allowlist(listed, transforms, b"key"),
    st.lists(paths, max_size=6),
    st.dictionaries(paths, st.sampled_from(list(Transform)), max_size=2),
)


def reference(allowlist: Allowlist, event: dict[str, Any]) -> dict[str, Any]:
    result = reference_apply(allowlist.root, event, allowlist.tokenize_key)
    return result if isinstance(result, dict) else {}


def shared(value: Any) -> list[int]:
    """The ids of the containers of a result, in order: which of the event's objects it shares."""
    if isinstance(value, dict):
        return [id(value), *(i for item in value.values() for i in shared(item))]
    if isinstance(value, list):
        return [id(value), *(i for item in value for i in shared(item))]
    return []


def assert_same(allowlist: Allowlist, event: dict[str, Any]) -> None:
    new, old = allowlist.apply(event), reference(allowlist, event)
    assert repr(new) == repr(old)
    event_ids = set(shared(event))
    assert [i in event_ids for i in shared(new)] == [i in event_ids for i in shared(old)]


@PROPERTY_SETTINGS
@given(allowlists, events)
def test_apply_matches_the_reference(allowlist: Allowlist, event: dict[str, Any]) -> None:
    """Same payload, types, key order, transforms and sharing as the replaced copy."""
    assert_same(allowlist, event)


def test_corpus_through_allowlists_matches_the_reference() -> None:
    """The compiled build's corpus through allowlists like the bench's."""
    lists = [
        compile_allowlist(
            ["messageId", "event", "properties.products[].sku", "context.page.url", "traits"],
            {"userId": Transform.TOKENIZE, "context.ip": Transform.TRUNCATE_IP},
            b"key",
        ),
        compile_allowlist(["userId", "properties", "context"], {"properties.total": "drop"}),
    ]
    rng = random.Random(14)
    for n in range(600):
        event = _event(rng, n)
        for allowlist in lists:
            assert_same(allowlist, event)
