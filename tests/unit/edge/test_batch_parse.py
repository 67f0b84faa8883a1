"""Splitting a ``/v1/batch`` body into events: one poisoned value costs only its event
(property-based, no Redis: ``parse_body`` and ``jsonscan.defect`` are pure)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.core import jsonscan
from router.core.outcomes import Rejection
from router.core.schema import WireEvent
from router.edge.http import HttpError
from router.edge.ingest import parse_body

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=12,
)
POISONS = {
    "NaN": "invalid_number",
    "-Infinity": "invalid_number",
    "Infinity": "invalid_number",
    "1e400": "invalid_number",
    '"\\ud83d"': "invalid_string",
    '"x\\udfff"': "invalid_string",
    '"tab\there"': "invalid_string",
    '"nul\x00"': "invalid_string",
}


def _event(properties: dict[str, Any], message_id: str) -> str:
    return json.dumps(
        {
            "type": "track",
            "event": "E",
            "anonymousId": "a",
            "messageId": message_id,
            "properties": properties,
        }
    )


@given(
    good=st.lists(st.dictionaries(names, values, max_size=4), min_size=1, max_size=5),
    at=st.integers(min_value=0),
    key=names,
    nested=st.booleans(),
    poison=st.sampled_from(sorted(POISONS)),
)
def test_one_poisoned_event_among_good_ones(
    good: list[dict[str, Any]], at: int, key: str, nested: bool, poison: str
) -> None:
    """Every good event decodes; the poisoned one is rejected at its index with the code for
    its defect and the path of the poisoned value."""
    at %= len(good) + 1
    items = [_event(props, f"m{i}") for i, props in enumerate(good)]
    holder = '{"k": [0, ' + poison + "]}" if nested else poison
    bad = '{"type": "track", "event": "E", "anonymousId": "a", "properties": {%s: %s}}'
    items.insert(at, bad % (json.dumps(key), holder))
    body = ('{"batch": [' + ", ".join(items) + "]}").encode("utf-8", "surrogatepass")
    parsed = parse_body(body, None, 32_000, 2_500)
    outcomes = [item for _, item in parsed.items]
    assert len(outcomes) == len(good) + 1
    rejection = outcomes.pop(at)
    assert isinstance(rejection, Rejection)
    assert rejection.code == POISONS[poison]
    assert rejection.path == f"properties.{key}" + (".k[1]" if nested else "")
    assert [o.message_id for o in outcomes if isinstance(o, WireEvent)] == [
        f"m{i}" for i in range(len(good))
    ]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_an_http_error_or_events(data: bytes) -> None:
    """Garbage never raises anything but an HttpError with a status and code."""
    body = b'{"batch": [' + data + b"]}"
    try:
        parsed = parse_body(body, None, 32_000, 2_500)
    except HttpError as error:
        failure: HttpError | None = error
    else:
        failure = None
        assert all(isinstance(item, WireEvent | Rejection) for _, item in parsed.items)
    if failure is not None:
        assert (failure.status, failure.code) in {(400, "invalid_json"), (400, "too_deep")}


@given(values)
def test_valid_json_has_no_defect(value: Any) -> None:
    """Whatever msgspec accepts, the defect finder finds nothing wrong with."""
    assert jsonscan.defect(msgspec.json.encode({"v": value})) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": {"b": [1, 2, NaN]}}', ("non_finite", "a.b[2]")),
        (b'{"a": [{}, [], {"c": "\\udc00"}]}', ("lone_surrogate", "a[2].c")),
        (b'{"a": "\\ud83d\\ude00", "b": "\x7f\x01"}', ("control_char", "b")),
        (b'{"a\x02": 1}', ("control_char", "a\ufffd")),
        (b'{"a": "\\\\ud800"}', None),  # an escaped backslash, then the letters ud800
        (b'{"a": [1 2]}', None),  # broken structure: not a defect of one value
        (b"[,]", None),  # a delimiter where a value belongs ends the scan (no endless loop)
        (b'{"a": :}', None),
        (b"1 :", None),
    ],
)
def test_defect_names_the_kind_and_path(body: bytes, expected: tuple[str, str] | None) -> None:
    """The first defective value is named with its field path."""
    assert jsonscan.defect(body) == expected
