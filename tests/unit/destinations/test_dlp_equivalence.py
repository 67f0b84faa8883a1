"""The PII net's quick walk against the implementation it replaced, kept here as the reference.

``reference_may_hold_findings`` and ``reference_scan_payload`` are verbatim copies of
``destinations/dlp.py`` before the quick walk was made cheaper (issue 14), only renamed and
pointed at the module's unchanged helpers, and with one fix also made in the package (marked
below: a negative Luhn-valid number was not looked at by the quick walk). The package must
give identical results: the same answer from the quick walk, the same payload (types
included: a tuple copied into a list, an integer kept as ``12345`` and not ``12345.0``) and
the same detections (kinds, paths, order), on arbitrary nested JSON built from PII-like
fragments and on the compiled build's corpus.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from destinations import dlp
from destinations.dlp import Detection, scan_payload
from destinations.fields import compile_allowlist
from tests.compiled_corpus import _event
from tests.unit.destinations.test_dlp import PII_SAMPLES, PROPERTY_SETTINGS, pii_text


def reference_may_hold_findings(payload: Mapping[str, Any], skip: frozenset[str]) -> bool:
    """Whether any value could be reported: a quick walk (no copies, no paths) over memoized
    string scans. False for the usual payload, which then needs no rewriting at all.

    Top-level skipped fields (transformed values, the router's own ids and times) are left out
    by name, nested ones by identity; a skipped path inside an array is not resolved here,
    which can only make the answer True (and the full walk then applies the skip exactly).
    """
    top, nested = dlp._split_skip(skip)
    ignored = {id(v) for path in nested if (v := dlp._at(payload, path)) is not None}
    stack: list[Any] = [[v for k, v in payload.items() if k not in top]]
    while stack:
        node = stack.pop()
        values = node.values() if isinstance(node, Mapping) else node
        for value in values:
            kind = type(value)
            if kind is str:
                if (
                    len(value) >= dlp._MIN_TEXT
                    and dlp._scan_cached(value)
                    and id(value) not in ignored
                ):
                    return True
            elif kind is int or kind is float:
                # The one intended change: abs(), so a negative card number alone is redacted
                # (the copied walk had "value >= 10**12" and let it through unscanned).
                card = abs(value) >= 10**12 and dlp._scan_number(value, "", []) is not value
                if card and id(value) not in ignored:
                    return True
            elif kind is dict or kind is list:
                if id(value) not in ignored:
                    stack.append(value)
            elif isinstance(value, Mapping | list | tuple):
                stack.append(value)
    return False


def reference_scan_payload(
    payload: Mapping[str, Any], declared: Mapping[str, str], transformed: Collection[str]
) -> tuple[dict[str, Any], list[Detection]]:
    """A redacted copy of ``payload`` and what was found where (see the module docstring).

    Strings are scanned; an integer (or an integral float) that is a Luhn-valid 13 to 19 digit
    number becomes the string ``[redacted:card]``. Dict keys, booleans and ``None`` are kept;
    tuples come back as lists. Detections come in document order (per string: the redacted
    ones, then the kept ones). The input is never changed; when something is reported the
    result is a fresh copy, otherwise a shallow copy that may share containers with it. The
    walk keeps its own stack, so no nesting depth can overflow
    the interpreter's.
    """
    skip = transformed if isinstance(transformed, frozenset) else frozenset(transformed)
    if not reference_may_hold_findings(payload, skip):
        return dict(payload), []
    detections: list[Detection] = []
    root: dict[str, Any] = {}
    # A frame: the source's remaining items, the copy being filled, the path of the items
    # (the container's path plus "[]" for a list), and whether to scan (not under a
    # transformed path).
    stack: list[dlp._Frame] = [(iter(payload.items()), root, "", "" not in skip)]
    while stack:
        items, target, base, scan = stack[-1]
        for key, value in items:
            path = (f"{base}.{key}" if base else str(key)) if isinstance(target, dict) else base
            live = scan and path not in skip
            child: dict[Any, Any] | list[Any] | None = None
            copied: Any
            if isinstance(value, str):
                copied = dlp._scan_string(value, path, declared, detections) if live else value
            elif isinstance(value, int | float):  # bool included: _scan_number keeps it
                copied = dlp._scan_number(value, path, detections) if live else value
            elif isinstance(value, Mapping):
                copied = child = {}
                child_items: Iterator[tuple[Any, Any]] = iter(value.items())
            elif isinstance(value, list | tuple):
                copied = child = []
                child_items = enumerate(value)
            else:
                copied = value  # None (or anything else that is not JSON-like)
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
            if child is not None:
                child_base = path if isinstance(child, dict) else f"{path}[]"
                stack.append((child_items, child, child_base, live))
                break  # descend; this frame's iterator resumes after the child is done
        else:
            stack.pop()
    return root, detections


# --- the comparison -----------------------------------------------------------------------------

KEYS = ["a", "email", "ip", "userId", "traits", "context", "messageId", "x"]
SKIPS = ["userId", "traits", "traits.email", "context.ip", "x[]", "x[].a", "messageId", "a.a"]
DECLARED = {"traits.email": "email", "context.ip": "ip", "a": "phone", "x[].a": "card"}
NUMBERS = [
    4111111111111111,
    -4111111111111111,
    378282246310005.0,
    10**12,
    10**12 - 1,
    2**53 + 1,
    10**20,
    12345,
    12345.0,
    1.5,
    float("inf"),
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
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
    ),
    max_leaves=30,
)
payloads = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
skips = st.frozensets(st.sampled_from(SKIPS))


def both(
    payload: Mapping[str, Any], declared: Mapping[str, str], skip: Collection[str]
) -> tuple[tuple[str, list[Detection]], tuple[str, list[Detection]]]:
    """The new and the reference result, with the payload as its repr (types and order)."""
    new, found = scan_payload(payload, declared, skip)
    old, old_found = reference_scan_payload(payload, declared, skip)
    return (repr(new), found), (repr(old), old_found)


@PROPERTY_SETTINGS
@given(payloads, skips)
def test_quick_walk_answers_as_the_reference(payload: dict[str, Any], skip: frozenset[str]) -> None:
    """The cheaper walk says "may hold findings" exactly when the one it replaced did."""
    assert dlp._may_hold_findings(payload, skip) == reference_may_hold_findings(payload, skip)


@PROPERTY_SETTINGS
@given(payloads, skips)
def test_scan_payload_matches_the_reference(payload: dict[str, Any], skip: frozenset[str]) -> None:
    """Same payload (types, key order, redactions) and same detections (kinds, paths, order)."""
    new, old = both(payload, DECLARED, skip)
    assert new == old


@PROPERTY_SETTINGS
@given(st.lists(st.sampled_from(PII_SAMPLES), min_size=1, max_size=4).map(" ".join), skips)
def test_a_finding_anywhere_is_reported_as_by_the_reference(
    text: str, skip: frozenset[str]
) -> None:
    """PII-dense strings at every depth and under skipped paths: the same reports."""
    payload = {
        "userId": text,
        "traits": {"email": text, "name": "Jane"},
        "context": {"ip": text, "page": {"url": text}},
        "x": [{"a": text}, (text, None, True)],
        "a": 4111111111111111,
    }
    new, old = both(payload, DECLARED, skip)
    assert new == old
    assert new[1]  # the sample always holds something the net reports


def corpus_events(count: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(14)
    for n in range(count):
        yield _event(rng, n)


def test_corpus_events_and_their_allowlisted_copies_match_the_reference() -> None:
    """The compiled build's corpus, whole and through allowlists like the bench's."""
    allowlists = [
        compile_allowlist(
            ["messageId", "event", "properties", "context.page.url", "traits"],
            {"userId": "tokenize", "context.ip": "truncate_ip"},
            b"key",
        ),
        compile_allowlist(["userId", "anonymousId", "properties.products[].sku", "context"]),
    ]
    reported = 0
    for event in corpus_events(600):
        new, old = both(event, DECLARED, ())
        assert new == old
        reported += bool(new[1])
        for allowlist in allowlists:
            data = allowlist.apply(event)
            new, old = both(data, DECLARED, allowlist.unscanned_paths)
            assert new == old
    assert reported  # the corpus does exercise the rewriting walk
