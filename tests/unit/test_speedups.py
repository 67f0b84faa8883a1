"""The native walkers (Cython, built by pip from setup.py) give the pure walkers' answers.

``router.core._speedups.field_paths`` against ``paths.pure_field_paths``,
``destinations._speedups.may_hold_findings`` against ``dlp._may_hold`` (and ``scan_payload``
with and without it), ``destinations._speedups.Copier`` against ``fields._apply``: the same
values, types, key order and sharing of the input's objects, on generated JSON with PII-like
strings, value-like keys, odd numbers and tuples, and on the compiled build's corpus.

When the extensions are not built (no C compiler at install) these tests are skipped, unless
``ROUTER_REQUIRE_NATIVE=1`` (CI sets it: there the build must have them).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from destinations import dlp, fields
from destinations.fields import Allowlist, Transform, compile_allowlist
from router.core import paths, sanitize
from tests.compiled_corpus import _event
from tests.unit.destinations.test_dlp import PII_SAMPLES, PROPERTY_SETTINGS, pii_text
from tests.unit.destinations.test_dlp_equivalence import NUMBERS, SKIPS

native_paths = paths._native
native_destinations = dlp._native

if os.environ.get("ROUTER_REQUIRE_NATIVE") == "1":
    assert native_paths is not None, "router.core._speedups is not built (pip install -e .)"
    assert native_destinations is not None, "destinations._speedups is not built"
pytestmark = pytest.mark.skipif(
    native_paths is None or native_destinations is None,
    reason="native walkers not built (no C compiler when installed)",
)

KEYS = [
    "a",
    "b_1",
    "$ref",
    "-x",
    "x-y",
    "9lives",
    "id12345",
    "id1234",
    "x y",
    "j@x.io",
    "+16505551212",
    "",
    "é",
    "a" * 64,
    "a" * 65,
    "userId",
    "email",
    "ip",
    "context",
    "traits",
    "messageId",
    "*",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(NUMBERS)
    | st.sampled_from(PII_SAMPLES)
    | pii_text
)
keys = st.sampled_from(KEYS) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=40,
)
with_tuples = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=30,
)
events = st.dictionaries(keys, json_values, max_size=8)


@contextmanager
def pure(module: ModuleType) -> Iterator[None]:
    """Run ``module`` on its pure-Python walker for the duration."""
    saved = module._native
    module._native = None
    try:
        yield
    finally:
        module._native = saved


@PROPERTY_SETTINGS
@given(json_values | events, st.integers(1, 300), st.integers(1, 17))
def test_field_paths_match_the_pure_walker(value: Any, max_paths: int, max_depth: int) -> None:
    native = paths.field_paths(value, max_paths=max_paths, max_depth=max_depth)
    assert native == paths.pure_field_paths(value, max_paths=max_paths, max_depth=max_depth)
    assert type(native) is frozenset


@PROPERTY_SETTINGS
@given(st.one_of(st.sampled_from(KEYS), st.text(max_size=70), st.integers(), st.none()))
def test_segments_match_the_pure_rule(name: Any) -> None:
    """The native check is written out in C; the pure one is two regular expressions."""
    assert native_paths is not None
    assert native_paths.safe_segment(name) == paths.safe_segment(name)


def test_field_paths_stay_right_past_the_bound_of_remembered_paths() -> None:
    """More distinct field-like keys than the native trie keeps: it starts again, same answers."""
    for start in range(0, 70_000, 10_000):
        value = {f"k{n}": {"v": 1, "w": [{"x": n}]} for n in range(start, start + 10_000)}
        assert paths.field_paths(value, max_paths=40_000) == paths.pure_field_paths(
            value, max_paths=40_000
        )
    assert paths.field_paths({"a": {"b": 1}}) == {"a.b"}


source_bytes = st.lists(
    st.sampled_from([b'"', b"{", b"[", b"\\", b"u", b"b", b"f", b"n", b"a", b"\x7f", b"\xc3\xa9"]),
    max_size=60,
).map(b"".join)


@PROPERTY_SETTINGS
@given(source_bytes, st.integers(0, 70), st.integers(0, 8), st.integers(0, 12))
def test_source_flags_match_the_pure_checks(
    raw: bytes, max_string_chars: int, max_depth: int, max_key_chars: int
) -> None:
    limits = sanitize.Limits(
        max_string_chars=max_string_chars, max_depth=max_depth, max_key_chars=max_key_chars
    )
    native = sanitize._source_flags(raw, limits)
    with pure(sanitize):
        assert sanitize._source_flags(raw, limits) == native
    trusted = sanitize.clean_source(raw, limits)
    assert native == (trusted, trusted and sanitize.shallow_source(raw, limits))


def test_source_flags_examples() -> None:
    limits = sanitize.Limits(max_string_chars=100, max_depth=2, max_key_chars=5)
    for raw, expected in [
        (b'{"ab":[1]}', (True, True)),
        (b'{"a":{"b":[]}}', (True, False)),  # 3 brackets
        (b'{"abcdef":1}', (True, False)),  # a 6-byte run after a quote
        (b'{"a":"x"} 1234', (True, False)),  # the run after the last quote counts
        (b'{"a":"\\n"}', (True, True)),
        (b'{"a":"\\u00e9"}', (False, False)),
        (b'{"a":"\xc3\xa9"}', (False, False)),
        (b"x" * 101, (False, False)),
    ]:
        assert sanitize._source_flags(raw, limits) == expected, raw
        with pure(sanitize):
            assert sanitize._source_flags(raw, limits) == expected, raw


def _quick_both(payload: dict[str, Any], skip: frozenset[str]) -> tuple[bool, bool]:
    native = dlp._may_hold_findings(payload, skip)
    with pure(dlp):
        return native, dlp._may_hold_findings(payload, skip)


@PROPERTY_SETTINGS
@given(st.dictionaries(keys, with_tuples, max_size=6), st.frozensets(st.sampled_from(SKIPS)))
def test_quick_walk_matches_the_pure_walker(payload: dict[str, Any], skip: frozenset[str]) -> None:
    native, pure_answer = _quick_both(payload, skip)
    assert native == pure_answer


def _nothing_to_look_at(text: str) -> bool:
    """``dlp._candidates``'s own early exits, spelled out: no ``@``/``%40``, no IPv6 to try
    (``::`` or 7 colons), no run with an IPv4 to try (3 dots) or a zone (8 digits)."""
    ipv6 = "::" in text or text.count(":") >= 7
    return (
        "@" not in text
        and "%40" not in text
        and not ipv6
        and all(
            run.group().count(".") < 3 and dlp._digits(run.group()) < dlp._MIN_ZONE_DIGITS
            for run in dlp._RUN.finditer(text)
        )
    )


run_heavy = st.text(alphabet="0123456789 ./()-:@%4aZ\u00e9\u0660\n", max_size=40)
SHAPES = [
    *PII_SAMPLES,
    "650-555-1212",
    "1-650-555-1212",
    "1 650 555 1212",
    "650.555.1212",
    "030 12345678",
    "030/12345678",
    "01 23 45 67 89",
    "0044 20 7946 0958",
    "%2B44 20 7946 0958",
    "(11) 91234-5678",
    "+49 (0)30 1234 5678",
    "078-05-1120",
    "10.1.2.3",
    "Chrome/131.0.0.0",
    "GB82 WEST 1234 5698 7654 32",
    "NO9386011117947",
    "5555555555554444",
    "2026-12-07T12:00:00.000Z",
    "ORD-2026-000123",
]
"""Real findings and near misses: the shapes ``quiet`` looks for."""
near_misses = st.builds(
    lambda shape, edits, before, after: before + _edited(shape, edits) + after,
    st.sampled_from(SHAPES),
    st.lists(
        st.tuples(
            st.integers(0, 40), st.sampled_from(list("0123456789 ./()-+%2aZx_")), st.booleans()
        ),
        max_size=3,
    ),
    st.sampled_from(["", "x", "a ", "1", "1-", "/", "+", "(", "%2", "A", "ab ", "no "]),
    st.sampled_from(["", "x", " ", "1", "-1", ".5", " 2026", "Z"]),
)


def _edited(text: str, edits: list[tuple[int, str, bool]]) -> str:
    """``text`` with each edit applied: at a position, the character replaced (True) or
    inserted (False)."""
    for position, char, replace in edits:
        at = position % (len(text) + 1)
        text = text[:at] + char + text[at + (1 if replace else 0) :]
    return text


@PROPERTY_SETTINGS
@given(run_heavy | pii_text | near_misses | st.sampled_from(SHAPES) | st.text(max_size=30))
def test_quiet_strings_hold_no_candidates(text: str) -> None:
    """A string the native quick walk passes over unscanned has nothing ``_candidates`` could
    report, and it passes over at least every string ``_candidates``' early exits clear."""
    assert native_destinations is not None
    quiet = native_destinations.quiet(text)
    if quiet:
        assert dlp._candidates(text) == []
    if _nothing_to_look_at(text):
        assert quiet


def test_quiet_examples() -> None:
    """Cleared: words, ids, dates and versions with digits (what ``_candidates`` would scan
    for nothing: it ran on every such string of a real event); not cleared: anything with a
    finding, and the shapes the detectors then decide on."""
    assert native_destinations is not None
    quiet = native_destinations.quiet
    for text in (
        "Running shoes",
        "https://shop.example/p/42?ref=a1",
        "ORD-12",
        "12:30",
        "a:b:c",
        "1234567",
        "user-1234-57",
        "a 1.2.3",
        "1.2.3.",
        "1.2.3. 4",
        "12345678",
        "ORD-2026-000123",
        "2026-12-07T12:00:00.000Z",
        "r8x-1-1234567-12",
        "https://shop.example.com/checkout?order=ORD-r8x-1-1234567-12",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/131.0.0.0 Safari/537.36",
        "version 1.2.3.4.5.6.7.8.9",
        "ajs-next-5f1c2a9e6b0d4c1e9a532f8e1b7c4d90",
    ):
        assert quiet(text), text
        assert dlp._candidates(text) == [], text
    for text in (
        "x@y.io",
        "x%40y.io",
        "fe80::1",
        "1:2:3:4:5:6:7:8",
        "call 650 555 1212",
        "(0)30 1234 56",
        "4111111111111111",
        "ip 10.1.2.3",
        "1.2.3.4",
        "123-45-6789",
        "020 7946 0958",
        "+44 20 7946 0958",
        "DE89 3704 0044 0532 0130 00",
        "1234567890123",  # 13 digits: the card check decides (Luhn)
        "0123 4567 89",  # a trunk 0: the national phone check decides
        "ab12 1234567890",  # a zone and an IBAN start: the IBAN check decides
    ):
        assert not quiet(text), text


def test_quick_walk_ignores_skipped_values_by_identity_in_both_walkers() -> None:
    email = "jane.doe@example.com"
    card = 4111111111111111
    payload = {"traits": {"email": email, "card": card}, "context": {"ip": "10.1.2.3 x"}}
    assert _quick_both(payload, frozenset({"traits.email", "traits.card"})) == (True, True)
    assert _quick_both(payload, frozenset({"traits", "context.ip"})) == (False, False)
    assert _quick_both({"n": -card}, frozenset()) == (True, True)


@PROPERTY_SETTINGS
@given(st.dictionaries(keys, with_tuples, max_size=6), st.frozensets(st.sampled_from(SKIPS)))
def test_scan_payload_matches_with_the_pure_walker(
    payload: dict[str, Any], skip: frozenset[str]
) -> None:
    declared = {"traits.email": "email", "context.ip": "ip", "a": "phone"}
    native, found = dlp.scan_payload(payload, declared, skip)
    with pure(dlp):
        plain, plain_found = dlp.scan_payload(payload, declared, skip)
    assert (repr(native), found) == (repr(plain), plain_found)


segments = st.tuples(st.sampled_from(KEYS[:8] + KEYS[15:]), st.booleans()).map(
    lambda part: part[0] + ("[]" if part[1] else "")
)
listed = st.lists(segments, min_size=1, max_size=3).map(".".join)
allowlists = st.builds(
    lambda fields_, transforms: compile_allowlist(fields_, transforms, b"key"),
    st.lists(listed, max_size=6),
    st.dictionaries(listed, st.sampled_from(list(Transform)), max_size=2),
)


def _containers(value: Any) -> list[int]:
    if isinstance(value, dict):
        return [id(value), *(i for item in value.values() for i in _containers(item))]
    if isinstance(value, list):
        return [id(value), *(i for item in value for i in _containers(item))]
    return []


def assert_same_copy(allowlist: Allowlist, event: dict[str, Any]) -> None:
    assert allowlist.root.native is not None
    native = allowlist.apply(event)
    plain = fields._apply(allowlist.root, event, allowlist.tokenize_key)
    plain = plain if isinstance(plain, dict) else {}
    assert repr(native) == repr(plain)
    ids = set(_containers(event))
    assert [i in ids for i in _containers(native)] == [i in ids for i in _containers(plain)]


@PROPERTY_SETTINGS
@given(allowlists, events)
def test_allowlist_copy_matches_the_pure_walker(
    allowlist: Allowlist, event: dict[str, Any]
) -> None:
    assert_same_copy(allowlist, event)


def test_allowlist_copy_edge_cases_match_the_pure_walker() -> None:
    """Whole parents with narrower rules inside, emptied arrays and objects, transforms of
    containers (dropped), keys absent or holding None."""
    cases = [
        (["a", "a[].b"], {}, {"a": [{"c": 1}], "z": 2}),
        (["a", "a.b"], {"a.b": Transform.DROP}, {"a": {"b": 1, "c": 2}}),
        (["a[].b"], {}, {"a": [{"c": 1}, 3, [4]]}),
        (["a.b"], {"a.b": Transform.HASH_SHA256}, {"a": {"b": {"x": 1}}}),
        (["a.b"], {"a.b": Transform.TOKENIZE}, {"a": {"b": None}}),
        (["a.b[]"], {}, {"a": {"b": []}}),
        (["a"], {"a": Transform.TRUNCATE_IP}, {"a": "2001:db8::1"}),
    ]
    for listed_, transforms, event in cases:
        assert_same_copy(compile_allowlist(listed_, transforms, b"key"), event)
    whole = compile_allowlist(["a", "a[].b"])
    assert whole.apply({"a": [{"c": 1}]}) == {"a": []}


DECLARED = {"traits.email": "email", "context.ip": "ip", "email": "email"}
listed_keys = st.sampled_from(KEYS[:8] + KEYS[15:])
matching_events = st.dictionaries(  # keys the allowlists name: copies are rarely empty
    listed_keys,
    st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(listed_keys, children, max_size=4)
        ),
        max_leaves=30,
    ),
    max_size=8,
)
shallow_allowlists = st.builds(  # top-level fields: whole objects copied as they are
    lambda fields_, transforms: compile_allowlist(fields_, transforms, b"key"),
    st.lists(segments, min_size=1, max_size=6),
    st.dictionaries(listed, st.sampled_from(list(Transform)), max_size=2),
)


@PROPERTY_SETTINGS
@given(shallow_allowlists | allowlists, matching_events | events)
def test_the_checked_copy_is_the_copy_then_the_net(
    allowlist: Allowlist, event: dict[str, Any]
) -> None:
    """``dlp.allowlisted`` (the native copy with its quick check, the net skipped when the
    check clears the copy) gives what the copy and the full net give, and a cleared copy is
    one the full net, native or pure, finds nothing in and returns unchanged. (Not the quick
    walk: it leaves transformed values inside arrays to the full walk, so it may say True of
    a copy the check rightly cleared, such as ``a[]`` tokenized.)"""
    payload, found = dlp.allowlisted(allowlist, event, DECLARED)
    expected, expected_found = dlp.scan_payload(
        allowlist.apply(event), DECLARED, allowlist.unscanned_paths
    )
    assert (repr(payload), found) == (repr(expected), expected_found)
    copy, loud = allowlist.apply_checked(event, dlp._MIN_TEXT)
    assert repr(copy) == repr(allowlist.apply(event))
    if not loud:
        for walker in (nullcontext(), pure(dlp)):
            with walker:
                scanned, detections = dlp.scan_payload(copy, DECLARED, allowlist.unscanned_paths)
            assert (repr(scanned), detections) == (repr(copy), [])


def test_the_checked_copy_flags_what_the_net_could_report() -> None:
    """Loud: a PII-like string or a 12+ digit number anywhere in what is copied, also inside a
    whole object copied as it is; quiet: ids, URLs, short strings, the router's own top-level
    fields (an ISO time has 8 digits in a row) and transformed values (the net leaves them)."""
    allowlist = compile_allowlist(
        ["messageId", "timestamp", "properties", "context.page.url", "traits.name"],
        {"context.ip": Transform.TRUNCATE_IP, "userId": Transform.TOKENIZE},
        b"key",
    )
    base = {
        "messageId": "m-1",
        "timestamp": "2026-12-06T10:00:00.000Z",
        "userId": "jane@example.com",
        "properties": {"order_id": "ord-77", "revenue": 12.5, "items": [{"sku": "a-1"}]},
        "context": {"ip": "203.0.113.7", "page": {"url": "https://shop.example/cart?x=1"}},
    }
    assert allowlist.apply_checked(base, dlp._MIN_TEXT)[1] is False
    loud_events = [
        {**base, "properties": {"note": "mail jane@example.com"}},
        {**base, "properties": {"items": [{"card": 4111111111111111}]}},
        {**base, "properties": {"phone": "+1 650 555 1212"}},
        {**base, "traits": {"name": "call 650-555-1212 now"}},
        {**base, "properties": {"deep": {"deeper": ["x", "2001:db8::1"]}}},
    ]
    for event in loud_events:
        assert allowlist.apply_checked(event, dlp._MIN_TEXT)[1] is True, event
        assert (
            dlp.allowlisted(allowlist, event, DECLARED)[1]
            == dlp.scan_payload(allowlist.apply(event), DECLARED, allowlist.unscanned_paths)[1]
        )
    # what is not copied is not looked at
    assert allowlist.apply_checked({**base, "traits": {"email": "j@x.io"}}, 6)[1] is False
    # a value tokenized inside an array: cleared (the net leaves transformed values alone)
    tokenized = compile_allowlist([], {"a[]": Transform.TOKENIZE}, b"key")
    copy, loud = tokenized.apply_checked({"a": [0.25, "jane@example.com"]}, dlp._MIN_TEXT)
    assert loud is False
    assert dlp.scan_payload(copy, DECLARED, tokenized.unscanned_paths) == (copy, [])
    # a whole object with narrower rules inside: the values no rule names are checked too
    nested = compile_allowlist(["properties", "properties.items[].sku"], {}, b"key")
    quiet_event = {"properties": {"order": "ord-1", "items": [{"sku": "a-1", "x": 1}]}}
    assert nested.apply_checked(quiet_event, dlp._MIN_TEXT)[1] is False
    loud_event = {"properties": {"note": "jane@example.com", "items": [{"sku": "a-1"}]}}
    assert nested.apply_checked(loud_event, dlp._MIN_TEXT)[1] is True
    loud_item = {"properties": {"items": [{"sku": "jane@example.com"}]}}
    assert nested.apply_checked(loud_item, dlp._MIN_TEXT)[1] is True


def test_corpus_matches_the_pure_walkers() -> None:
    """The compiled build's corpus: paths, quick walk, copies, and the net on the copies."""
    lists = [
        compile_allowlist(
            ["messageId", "event", "properties.products[].sku", "context.page.url", "traits"],
            {"userId": Transform.TOKENIZE, "context.ip": Transform.TRUNCATE_IP},
            b"key",
        ),
        compile_allowlist(["userId", "properties", "context"], {"properties.total": "drop"}),
    ]
    rng = random.Random(14)
    reported = 0
    for n in range(600):
        event = _event(rng, n)
        assert paths.field_paths(event) == paths.pure_field_paths(event)
        for allowlist in lists:
            assert_same_copy(allowlist, event)
            copy = allowlist.apply(event)
            native = dlp.scan_payload(copy, {}, allowlist.unscanned_paths)
            with pure(dlp):
                plain = dlp.scan_payload(copy, {}, allowlist.unscanned_paths)
            assert (repr(native[0]), native[1]) == (repr(plain[0]), plain[1])
            reported += bool(native[1])
    assert reported > 0  # the corpus holds personal data the net reports


OFFSETS = [timedelta(0), timedelta(hours=2), timedelta(hours=-5, minutes=-30)]


@PROPERTY_SETTINGS
@given(
    st.datetimes(
        timezones=st.one_of(
            st.just(UTC), st.none(), st.timezones(), st.builds(timezone, st.sampled_from(OFFSETS))
        )
    )
)
def test_the_native_timestamp_is_isoformats(moment: datetime) -> None:
    """``iso_millis`` writes what ``isoformat(timespec="milliseconds")`` writes (``Z`` for
    ``+00:00``) for a moment in UTC, and leaves every other zone to the pure path; ``iso``
    gives ``pure_iso``'s text either way."""
    assert native_paths is not None
    native = native_paths.iso_millis(moment)
    if moment.tzinfo is UTC:
        assert native == moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    else:
        assert native is None
    if moment.tzinfo is not None:
        try:
            expected = sanitize.pure_iso(moment)
        except (OverflowError, ValueError):  # out of range once converted to UTC
            return
        assert sanitize.iso(moment) == expected


def test_an_allowlist_builds_its_copier_once() -> None:
    """The native copier and the unscanned paths are built with the allowlist, not per event
    (the compiled build does not cache ``functools.cached_property``: it built a Copier for
    every event)."""
    allowlist = compile_allowlist(["properties.total", "context.ip"], {"context.ip": "tokenize"})
    assert allowlist._copier is not None
    assert allowlist._copier is allowlist._copier
    assert allowlist.unscanned_paths is allowlist.unscanned_paths
    assert allowlist.unscanned_paths == {"context.ip", *fields.ROUTER_FIELDS}
