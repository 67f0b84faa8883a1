"""The cheaper raw scans and id checks of ``sanitize`` answer exactly as before.

``reference_shallow_source`` and ``reference_id`` are the implementations before the aligned
block pre-check and the string fast path (commit 2bfc166), kept verbatim as the oracle.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.ids import normalize_id
from router.core import sanitize as sanitize_module
from router.core.outcomes import RejectCode, Rejection
from router.core.sanitize import Limits, Rejected, shallow_source


def reference_shallow_source(raw: bytes, limits: Limits) -> bool:
    """``shallow_source`` before the aligned block pre-check."""
    long_string = re.compile(b'"[^"]{%d}' % (limits.max_key_chars + 1))
    return raw.count(b"{") + raw.count(b"[") <= limits.max_depth and not long_string.search(raw)


def reference_id(value: Any, path: str, limits: Limits) -> str | None:
    """``sanitize._id`` before the string fast path."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Rejected(Rejection(RejectCode.INVALID_ID, path, "an id must be a string or a number"))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Rejected(Rejection(RejectCode.INVALID_ID, path, "an id must be finite"))
        value = int(value) if value.is_integer() else value
    text = normalize_id(str(value))
    if len(text) > limits.max_id_chars:
        raise Rejected(
            Rejection(
                RejectCode.INVALID_ID, path, f"ids are limited to {limits.max_id_chars} characters"
            )
        )
    return text or None


KEY_CAPS = [0, 5, 126, 127, 200, 253, 254, 255, 256, 257, 300, 1000]
segments = st.one_of(
    st.sampled_from([b'"', b'"', b"{", b"[", b"]}", b":", b","]),
    st.integers(0, 700).map(lambda n: b"a" * n),
    st.binary(max_size=40),
)
raw_events = st.lists(segments, max_size=40).map(b"".join)


@settings(max_examples=3000, deadline=None)
@given(raw_events, st.sampled_from(KEY_CAPS), st.sampled_from([1, 4, 16, 64]))
def test_shallow_source_answers_as_the_reference(raw: bytes, key_cap: int, depth: int) -> None:
    """Quote-free runs of every length around the block size and the key cap, anywhere."""
    limits = Limits(max_key_chars=key_cap, max_depth=depth)
    assert shallow_source(raw, limits) == reference_shallow_source(raw, limits)


@pytest.mark.parametrize("offset", [0, 1, 64, 127, 128, 129, 255])
@pytest.mark.parametrize("run", [254, 255, 256, 257, 258, 400])
def test_shallow_source_finds_a_long_run_wherever_it_starts(offset: int, run: int) -> None:
    """A run just over the key cap is found whatever its alignment to the blocks."""
    raw = b'{"k":"' + b"x" * offset + b'","' + b"y" * run + b'":1}'
    limits = Limits(max_key_chars=256)
    assert shallow_source(raw, limits) == reference_shallow_source(raw, limits)
    assert shallow_source(raw, limits) is (run <= 256)


@pytest.mark.parametrize("key_cap", [200, 236, 240, 253, 254, 255, 256, 300])
def test_shallow_source_finds_runs_at_every_alignment(key_cap: int) -> None:
    """Runs of the cap and just over it, starting at every offset of two blocks, ending the
    event or not: the block pre-check never hides one the expression would find."""
    limits = Limits(max_key_chars=key_cap)
    for run in (key_cap, key_cap + 1, key_cap + 2):
        for offset in range(260):
            for tail in (b"", b'"', b'"}'):
                raw = b"x" * offset + b'"' + b"y" * run + tail
                assert shallow_source(raw, limits) == reference_shallow_source(raw, limits), (
                    run,
                    offset,
                    tail,
                )


ids = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.text(alphabet=" \t\x00\x7fe\u0301abc", max_size=20),
)


@settings(max_examples=2000, deadline=None)
@given(ids, st.sampled_from([1, 8, 256]))
def test_ids_are_checked_as_by_the_reference(value: Any, cap: int) -> None:
    """Every id (string, number, bool, non-finite, too long) gives the same id or rejection."""
    limits = Limits(max_id_chars=cap)
    try:
        expected: str | Rejection | None = reference_id(value, "userId", limits)
    except Rejected as rejected:
        expected = rejected.rejection
    try:
        got: str | Rejection | None = sanitize_module._id(value, "userId", limits)
    except Rejected as rejected:
        got = rejected.rejection
    assert got == expected
