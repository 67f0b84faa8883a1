"""The pure parts of the subject index and report: which tokens a record is indexed under,
and what a person's report says about a set of records. No Redis."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router.compliance.audit_chain import GENESIS, seal
from router.compliance.subject_report import report_from
from router.compliance.subject_tokens import (
    IndexGroups,
    group_for_index,
    index_arguments,
    index_tokens,
)
from router.queue.keys import optout_index_key, subject_index_key

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KINDS = st.sampled_from(["decision", "decisions", "erasure", "consent_written", "admin_call"])
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "subjects": JSON,
        "events": st.lists(st.fixed_dictionaries({}, optional={"subjects": JSON}) | JSON),
        "decision": st.sampled_from(["skip", "deliver"]) | JSON,
        "reason": st.sampled_from(["gpc_opt_out", "us_opt_out", "category_denied"]) | JSON,
    },
)


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


@given(KINDS, FIELDS)
def test_index_tokens_take_only_strings_the_record_names(kind: str, data: dict[str, Any]) -> None:
    """Any stored data (a record written by anything): no exception, no duplicates, only
    non-empty strings from the record, and opt-out tokens only for opt-out skips."""
    subjects, honoured = index_tokens(kind, data)
    assert len(subjects) == len(set(subjects))
    assert all(isinstance(t, str) and t for t in subjects)
    assert set(subjects) <= _strings(data)
    if honoured:
        assert honoured == subjects
        assert data["decision"] == "skip"
        assert data["reason"] in ("gpc_opt_out", "us_opt_out")
        assert kind in ("decision", "decisions")


def _reference_index_tokens(kind: str, data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``index_tokens`` as first written: each list of subjects filtered, then deduplicated."""

    def tokens(value: Any) -> list[str]:
        return [t for t in value if isinstance(t, str) and t] if isinstance(value, list) else []

    found = tokens(data.get("subjects"))
    events = data.get("events")
    if isinstance(events, list):
        for event in events:
            if isinstance(event, dict):
                found += tokens(event.get("subjects"))
    subjects = list(dict.fromkeys(found))
    honoured = (
        kind in {"decision", "decisions"}
        and data.get("decision") == "skip"
        and data.get("reason") in ("gpc_opt_out", "us_opt_out")
    )
    return subjects, subjects if honoured else []


@given(KINDS, FIELDS)
def test_index_tokens_are_those_of_the_reference(kind: str, data: dict[str, Any]) -> None:
    """The same tokens, in the same order, as the straightforward reference."""
    assert index_tokens(kind, data) == _reference_index_tokens(kind, data)


@given(st.lists(st.tuples(KINDS, FIELDS), max_size=6))
def test_index_arguments_put_each_record_in_the_sets_of_its_tokens(
    records: list[tuple[str, dict[str, Any]]],
) -> None:
    """Read back as the append script reads them (per group: its ordinals, then how many of
    the keys in order are its sets), the arguments put each record in the subject sets of its
    ``index_tokens`` and in their opt-out sets, and in no other set; records naming the same
    subjects share a group."""
    groups: IndexGroups = {}
    for ordinal, (kind, data) in enumerate(records, 1):
        group_for_index(kind, data, groups, str(ordinal))
    keys, args = index_arguments("rt:{audit}", groups)
    assert len(args) == 2 * len(groups)
    placed: dict[str, set[int]] = {}
    position = 0
    for start in range(0, len(args), 2):
        ordinals = [int(o) for o in args[start].split()]
        for key in keys[position : position + int(args[start + 1])]:
            placed.setdefault(key, set()).update(ordinals)
        position += int(args[start + 1])
    assert position == len(keys)
    expected: dict[str, set[int]] = {}
    for ordinal, (kind, data) in enumerate(records, 1):
        subjects, honoured = index_tokens(kind, data)
        for key in [subject_index_key("rt:{audit}", t) for t in subjects] + [
            optout_index_key("rt:{audit}", t) for t in honoured
        ]:
            expected.setdefault(key, set()).add(ordinal)
    assert placed == expected
    signatures = [tuple(index_tokens(k, d)[0]) for k, d in records]
    assert len(groups) == len(
        {
            (s, bool(index_tokens(k, d)[1]))
            for s, (k, d) in zip(signatures, records, strict=True)
            if s
        }
    )


def decisions_record(
    destination: str,
    decision: str,
    reason: str,
    events: list[tuple[str, str]],
    *,
    consent_at: str | None = None,
) -> dict[str, Any]:
    """A ``decisions`` record's data as the audit writer groups it: (event token, subject
    token) pairs sharing one destination, decision and reason (shared with the integration
    tests)."""
    deliver = decision == "deliver"
    return {
        "stage": "ingest",
        "destination": destination,
        "decision": decision,
        "reason": reason,
        "sent": ["event", "messageId"] if deliver else [],
        "removed": ["properties.email"] if deliver else [],
        "transformed": [],
        "consent": {"sources": ["gpc", "segment"]},
        "count": len(events),
        "events": [{"event": e, "subjects": [s], "consent_at": consent_at} for e, s in events],
    }


def test_report_keeps_the_persons_decisions_and_flags_altered_records() -> None:
    """Only the person's events of shared records; per destination counts, fields and
    reasons; consent writes and erasures; a record that no longer matches its hash is named."""
    records = [
        seal(
            1,
            "2026-12-06T10:00:00",
            "decisions",
            decisions_record(
                "ga4",
                "deliver",
                "consent_granted",
                [("e1", "me"), ("e2", "other")],
                consent_at="t0",
            ),
            GENESIS,
            lane=1,
        ),
        seal(
            2,
            "2026-12-06T10:00:01",
            "decisions",
            decisions_record("ads", "skip", "gpc_opt_out", [("e1", "me")]),
            GENESIS,
            lane=1,
        ),
        seal(
            3,
            "2026-12-06T10:00:02",
            "consent_written",
            {
                "subjects": ["me"],
                "granted": ["analytics"],
                "denied": [],
                "refused": ["advertising"],
            },
            GENESIS,
            lane=1,
        ),
        seal(
            4,
            "2026-12-06T10:00:03",
            "erasure",
            {"subjects": ["me"], "actor": "cli", "receipt": "r-1"},
            GENESIS,
            lane=1,
        ),
    ]
    altered = seal(
        5,
        "2026-12-06T10:00:04",
        "decisions",
        decisions_record("ga4", "deliver", "consent_granted", [("e3", "me")]),
        GENESIS,
        lane=1,
    )
    tampered = dataclasses.replace(altered, at="2026-12-06T09:00:00")  # hash left as sealed
    entries = [(f"{i}-0", r) for i, r in enumerate([*records, tampered], start=1)]
    report = report_from(entries, ["me"])
    assert [(i["destination"], i["event"]) for i in report["received"]] == [
        ("ga4", "e1"),
        ("ga4", "e3"),
    ]
    assert report["received"][0]["sent"] == ["event", "messageId"]
    assert report["received"][0]["consent"] == {"sources": ["gpc", "segment"], "at": "t0"}
    assert [(i["destination"], i["reason"]) for i in report["withheld"]] == [("ads", "gpc_opt_out")]
    assert report["summary"]["ga4"]["received"] == 2
    assert report["summary"]["ga4"]["first"] == "2026-12-06T09:00:00"
    assert report["summary"]["ads"]["withheld"] == {"gpc_opt_out": 1}
    assert report["consent_writes"][0]["refused"] == ["advertising"]
    assert report["erasures"][0]["receipt"] == "r-1"
    assert report["altered"] == [{"id": "5-0", "lane": 1, "seq": 5}]
    assert report["records"] == 5


@given(st.lists(st.tuples(KINDS, FIELDS | st.dictionaries(st.text(max_size=8), JSON)), max_size=5))
def test_report_reads_any_stored_record_without_failing(items: list[tuple[str, Any]]) -> None:
    """Records as anything may have stored them (edited, from another version): the report
    is built, and what it lists has the types its readers expect."""
    records = [
        (f"{i}-0", seal(i, "2026-12-06T10:00:00", kind, data, GENESIS, lane=1))
        for i, (kind, data) in enumerate(items, start=1)
    ]
    tokens = sorted({t for _, data in items for t in _strings(data)})[:3]
    report = report_from(records, tokens)
    assert report["records"] == len(items)
    for item in report["received"] + report["withheld"]:
        assert isinstance(item["destination"], str)
        assert isinstance(item["reason"], str)
        assert all(isinstance(s, str) for s in item["consent"]["sources"])
    for per in report["summary"].values():
        assert all(isinstance(f, str) for f in per["fields"])
