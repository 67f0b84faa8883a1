"""The iterative JSON splitter and bounded inflate (pure, property-based)."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from router.core import jsonscan
from router.edge.http import HttpError, basic_auth_key, inflate

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=25,
)


@given(st.lists(values, max_size=6), st.dictionaries(st.text(max_size=6), values, max_size=3))
def test_splits_a_batch_like_the_json_parser(batch: list[Any], extra: dict[str, Any]) -> None:
    """The scanner finds exactly the members and elements json.loads finds."""
    body = json.dumps({**extra, "batch": batch}).encode()
    members = jsonscan.object_members(body)
    assert {json.loads(k): json.loads(v) for k, v in members.items()} == {**extra, "batch": batch}
    assert [json.loads(item) for item in jsonscan.array_items(members[b'"batch"'])] == batch


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_scan_error_or_a_result(data: bytes) -> None:
    """Garbage never raises anything but ScanError."""
    try:
        members = jsonscan.object_members(data)
    except jsonscan.ScanError:
        return
    assert all(key.startswith(b'"') for key in members)


def test_handles_nesting_far_beyond_recursion_limits() -> None:
    """100,000 levels are scanned with a loop."""
    deep = b"[" * 100_000 + b"]" * 100_000
    items = jsonscan.array_items(b"[1," + deep + b',"x"]')
    assert items[0] == b"1"
    assert items[2] == b'"x"'
    assert len(items[1]) == 200_000


def test_inflate_stops_at_the_limit() -> None:
    """A bomb is refused with 413 after reading at most the limit."""
    bomb = gzip.compress(b"0" * 10_000_000)
    with pytest.raises(HttpError) as caught:
        inflate(bomb, 100_000, gzip=True)
    assert caught.value.status == 413


@given(st.binary(max_size=5000))
def test_inflate_round_trips_gzip_and_deflate(data: bytes) -> None:
    """What was compressed comes back, for both encodings."""
    assert inflate(gzip.compress(data), 10_000, gzip=True) == data
    assert inflate(zlib.compress(data), 10_000, gzip=False) == data


@given(st.binary(max_size=300))
def test_inflate_of_garbage_is_a_400_or_data(data: bytes) -> None:
    """Corrupt input gives HttpError 400/413, never another exception."""
    try:
        out = inflate(data, 1000, gzip=True)
    except HttpError as error:
        status = error.status
    else:
        status = 200
        assert len(out) <= 1000
    assert status in (200, 400, 413)


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Basic a2V5Og==", "key"),
        ("basic a2V5", "key"),
        ("Bearer abc", None),
        ("Basic !!!", ""),
        (None, None),
    ],
)
def test_basic_auth_key(header: str | None, key: str | None) -> None:
    """The write key is the Basic user name; malformed headers give an empty key."""
    assert basic_auth_key(header) == key


def _nesting(value: Any, limit: int, path: str = "", depth: int = 0) -> str | None:
    """The recursive reference for ``depth_path``."""
    if isinstance(value, dict | list):
        if depth >= limit:
            return path
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            # a member after a non-empty path gets a dot (keys may be "", "." or "..")
            step = (
                (f"{path}.{key}" if path else key) if isinstance(value, dict) else f"{path}[{key}]"
            )
            found = _nesting(item, limit, step, depth + 1)
            if found is not None:
                return found
    return None


def test_depth_path_names_the_first_container_too_deep_at_any_depth() -> None:
    """The path leads to the first array or object ``limit`` levels down, even 100,000 deep."""
    deep = b'{"event":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    assert jsonscan.depth_path(deep, 3) == "event.a.a"
    assert jsonscan.depth_path(b"[" * 100_000, 2) == "[0][0]"
    assert jsonscan.depth_path(b'{"a":["[[[[[[",{"b\\"c":{}}]}', 2) == "a[1]"
    assert jsonscan.depth_path(b'{"x":"{{{{{{{{"}', 2) is None
    assert jsonscan.depth_path(b'{"a":[1,2,{"b":{}}]}', 3) == "a[2].b"
    assert jsonscan.depth_path(b'{"a":"unterminated', 1) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=30,
)


@given(json_values, st.integers(min_value=1, max_value=6))
@example({".": []}, 1)  # found by hypothesis: the reference stripped the key "." too
@example({"": {"": []}}, 2)  # and an empty key after an empty path gets no dot
def test_depth_path_agrees_with_a_recursive_walk(value: Any, limit: int) -> None:
    """On any JSON value, the loop finds what a recursive walk finds (with control characters
    and lone surrogates in keys shown as U+FFFD: the path goes back to the client)."""
    expected = _nesting(value, limit)
    if expected is not None:
        expected = re.sub("[\x00-\x1f\ud800-\udfff]", "\ufffd", expected)
    assert jsonscan.depth_path(json.dumps(value).encode(), limit) == expected
