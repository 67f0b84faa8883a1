"""The pure parts of the subject index and report: which tokens a record is indexed under,
and what a person's report says about a set of records. No Redis."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from router.compliance.audit_chain import GENESIS, seal
from router.compliance.subject_report import report_from
from router.compliance.subject_tokens import index_members, index_positions, index_tokens
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


@given(st.lists(st.tuples(KINDS, FIELDS), max_size=5))
def test_index_positions_name_each_set_once_per_append(
    records: list[tuple[str, dict[str, Any]]],
) -> None:
    """Every record's index sets are listed by their KEYS position; a set already in ``keys``
    (an earlier record of the append) keeps its position; opt-out sets follow the subject
    sets."""
    keys = ["rt:{audit}", "heads", "last"]
    positions: tuple[dict[str, int], dict[str, int]] = ({}, {})
    for kind, data in records:
        subjects, honoured = index_tokens(kind, data)
        listed = index_positions("rt:{audit}", kind, data, keys, positions)
        named = [keys[p - 1] for p in listed]
        assert named == [subject_index_key("rt:{audit}", t) for t in subjects] + [
            optout_index_key("rt:{audit}", t) for t in honoured
        ]
    assert len(keys) == len(set(keys))
    assert len(keys) == 3 + len(positions[0]) + len(positions[1])


@given(st.lists(st.tuples(KINDS, FIELDS), max_size=5))
def test_index_members_list_each_sets_records(records: list[tuple[str, dict[str, Any]]]) -> None:
    """``members`` lists, by KEYS position, the ordinals of the records whose index sets are
    at that position, in order; every position from 4 on has its list (the script reads one
    argument per set)."""
    keys = ["rt:{audit}", "heads", "last"]
    positions: tuple[dict[str, int], dict[str, int]] = ({}, {})
    members: list[list[str]] = []
    expected: dict[int, list[str]] = {}
    for ordinal, (kind, data) in enumerate(records, 1):
        listed = index_positions(
            "rt:{audit}", kind, data, list(keys), (dict(positions[0]), dict(positions[1]))
        )
        index_members(
            "rt:{audit}", kind, data, keys, positions, members=members, ordinal=str(ordinal)
        )
        for position in listed:
            expected.setdefault(position, []).append(str(ordinal))
    assert len(members[4:]) == len(keys) - 3
    assert {p: m for p, m in enumerate(members) if m} == expected


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
