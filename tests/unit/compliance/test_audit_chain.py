"""The audit chain's pure core: hashing, verification, decision records without PII."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime

import pytest

from consent.model import ConsentState, Signal
from router.compliance.audit_chain import (
    GENESIS,
    GENESIS_ANCHOR,
    Anchor,
    AuditRecord,
    canonical,
    chain,
    chain_hash,
    parse_record,
    seal,
    sealed_hash,
    verify_records,
)
from router.compliance.audit_groups import MAX_EVENTS_PER_RECORD, merged_groups
from router.compliance.audit_log import AuditLog, AuditWriter
from router.compliance.subject_tokens import index_tokens
from router.core import audit_records
from router.core.audit_records import (
    AuditKind,
    DecisionNote,
    decision_entries,
    decision_notes,
    subject_token,
)
from router.core.outcomes import Decision
from router.core.plan import plan
from router.core.sanitize import Event
from router.core.schema import EventType
from router.observability.metrics import Stats
from tests.conftest import routing_from

AT = "2026-11-22T10:00:00.000+00:00"


def _records(count: int) -> list[AuditRecord]:
    return chain(GENESIS_ANCHOR, [(AT, "release", {"destination": f"d{i}"}) for i in range(count)])


def test_chain_hash_covers_every_field() -> None:
    """Changing seq, at, kind, data or prev_hash changes the hash; the hash itself is excluded."""
    record = seal(1, AT, "hold", {"destination": "ga4"}, GENESIS)
    assert record.hash == chain_hash(record)
    for change in (
        {"seq": 2},
        {"at": "2026-11-22T10:00:01.000+00:00"},
        {"kind": "release"},
        {"data": {"destination": "meta"}},
        {"prev_hash": "1" * 64},
    ):
        assert chain_hash(dataclasses.replace(record, **change)) != record.hash
    assert chain_hash(dataclasses.replace(record, hash="x")) == record.hash


def test_canonical_json_ignores_key_order() -> None:
    """The canonical form sorts keys, so the same data always hashes the same."""
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'


def test_intact_chain_verifies() -> None:
    """Records chained from genesis verify, and every record is counted."""
    records = _records(5)
    result = verify_records(records, head=Anchor(5, records[-1].hash))
    assert result.ok
    assert result.checked == 5


def test_edited_record_is_named() -> None:
    """Editing one record's data without resealing makes that record fail."""
    records = _records(5)
    records[2] = dataclasses.replace(records[2], data={"destination": "evil"})
    result = verify_records(records)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert "record 3" in result.reason


def test_resealed_record_is_named_by_the_next_link() -> None:
    """A record edited and resealed is caught by the next record's prev_hash, and named."""
    records = _records(5)
    records[2] = seal(3, AT, "release", {"destination": "evil"}, records[1].hash)
    result = verify_records(records)
    assert not result.ok
    assert result.first_bad_seq == 3


def test_resealed_last_record_is_caught_by_the_head() -> None:
    """Resealing the last record is caught by the stored head."""
    records = _records(3)
    head = Anchor(3, records[-1].hash)
    records[-1] = seal(3, AT, "release", {"destination": "evil"}, records[1].hash)
    result = verify_records(records, head=head)
    assert not result.ok
    assert result.first_bad_seq == 3


def test_removed_record_is_reported_missing() -> None:
    """Deleting a record in the middle names the missing seq."""
    records = _records(5)
    del records[1]
    result = verify_records(records)
    assert not result.ok
    assert result.first_bad_seq == 2
    assert "missing" in result.reason


def test_removed_tail_is_caught_by_the_head() -> None:
    """Deleting the newest records is noticed through the head."""
    records = _records(5)
    head = Anchor(5, records[-1].hash)
    result = verify_records(records[:3], head=head)
    assert not result.ok
    assert result.first_bad_seq == 4


def test_verification_starts_from_an_anchor() -> None:
    """After trimming, the rest verifies from the last trimmed record's seq and hash."""
    records = _records(6)
    anchor = Anchor(records[2].seq, records[2].hash)
    assert verify_records(records[3:], anchor).ok
    assert not verify_records(records[3:]).ok
    assert verify_records(records[3:], None).ok


def test_exported_lines_parse_back_and_verify() -> None:
    """An exported JSON line parses into the same record."""
    records = _records(3)
    lines = [canonical(r.to_json()).decode() for r in records]
    parsed = [parse_record(line) for line in lines]
    assert parsed == records
    assert verify_records(parsed).ok


def test_decision_entries_tokenize_subjects_and_hold_no_values() -> None:
    """Decision records name destination, decision, reason and paths, never ids or values."""
    routing = routing_from()
    now = datetime(2026, 11, 22, 10, tzinfo=UTC)
    data = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "msg-1",
        "userId": "jane.doe@example.com",
        "anonymousId": "anon-555-0100",
        "properties": {"order_id": "o-1", "jane.doe@example.com": 1, "note": "call +1 650 555"},
    }
    event = Event(
        type=EventType.TRACK,
        message_id="msg-1",
        timestamp=now,
        received_at=now,
        data=data,
        user_id="jane.doe@example.com",
        anonymous_id="anon-555-0100",
        name="Order Completed",
    )
    consent = ConsentState(
        granted=frozenset({"necessary"}), signals=(Signal.SEGMENT,), collected_at=now
    )
    decisions = plan(event, consent, routing.destinations, routing.policy)
    entries = decision_entries(event, consent, decisions, key=b"k")
    assert [kind for kind, _ in entries] == [AuditKind.DECISION, AuditKind.DECISION]
    by_destination = {d["destination"]: d for _, d in entries}
    assert by_destination["analytics-hook"]["decision"] == "skip"
    ops = by_destination["ops-hook"]
    assert ops["decision"] == "deliver"
    assert "properties.note" in ops["removed"]
    assert "properties.*" in ops["removed"]
    assert ops["consent"] == {"sources": ["segment"], "at": now.isoformat()}
    assert subject_token("jane.doe@example.com", b"k") in ops["subjects"]
    text = json.dumps(entries)
    for secret in ("jane.doe", "example.com", "anon-555", "650 555", "msg-1"):
        assert secret not in text


def test_appended_records_hash_like_chain_hash() -> None:
    """The append path's single-encoding hash equals ``chain_hash`` (unicode, escapes, nesting)."""
    for data in (
        {"a": [1, "é", None, True, 2.5], "z": {"y": 'x\n"q'}},
        {},
        {"destination": "ga4", "removed": ["a.b[]", "properties.*"]},
    ):
        record = seal(7, AT, "decision", data, GENESIS)
        assert sealed_hash(7, AT, "decision", canonical(data), GENESIS) == record.hash


def _planned(
    message_id: str, revenue: object, granted: frozenset[str]
) -> tuple[Event, ConsentState, list[Decision]]:
    routing = routing_from()
    now = datetime(2026, 11, 22, 10, tzinfo=UTC)
    data = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "anonymousId": f"anon-{message_id}",
        "properties": {"order_id": "o-1", "revenue": revenue},
    }
    event = Event(
        type=EventType.TRACK,
        message_id=message_id,
        timestamp=now,
        received_at=now,
        data=data,
        anonymous_id=f"anon-{message_id}",
        name="Order Completed",
    )
    consent = ConsentState(granted=granted, signals=(Signal.SEGMENT,), collected_at=now)
    return event, consent, plan(event, consent, routing.destinations, routing.policy)


def _decisions(message_id: str, revenue: object, granted: frozenset[str]) -> list[DecisionNote]:
    event, consent, decisions = _planned(message_id, revenue, granted)
    return decision_notes(event, consent, decisions, key=b"k")


def test_decisions_of_same_shaped_events_share_one_record() -> None:
    """Decisions differing only in their event are grouped: shared part once, events listed;
    another outcome or another field set gets its own record; large groups are split."""
    writer = AuditWriter(AuditLog(client=None, key=b"k"))
    analytics = frozenset({"analytics", "necessary"})
    for index in range(3):
        writer.record_decisions(_decisions(f"m{index}", 5, analytics))
    writer.record_decisions(_decisions("m3", 5, frozenset({"necessary"})))  # analytics: skip
    writer.record_decisions(_decisions("m4", {"nested": 1}, analytics))  # other paths sent
    records = [r for g in writer._groups.values() for r in g.records()]
    shapes = sorted((d["destination"], d["decision"], d["count"]) for _, d, _, _ in records)
    assert shapes == [
        ("analytics-hook", "deliver", 1),
        ("analytics-hook", "deliver", 3),
        ("analytics-hook", "skip", 1),
        ("ops-hook", "deliver", 1),
        ("ops-hook", "deliver", 4),
    ]
    assert {kind for kind, _, _, _ in records} == {AuditKind.DECISIONS.value}
    group = next(
        d for _, d, _, _ in records if d["destination"] == "analytics-hook" and d["count"] == 3
    )
    assert group["reason"] == "consent_granted"
    assert group["removed"] == ["properties.order_id"]
    assert "properties.revenue" in group["sent"]
    nested = next(
        d
        for _, d, _, _ in records
        if d["destination"] == "analytics-hook" and d["count"] == 1 and d["decision"] == "deliver"
    )
    assert "properties.revenue.nested" in nested["sent"]
    tokens = [subject_token(f"m{i}", b"k") for i in (0, 1, 2)]
    assert [e["event"] for e in group["events"]] == tokens
    assert group["events"][0]["subjects"] == [subject_token("anon-m0", b"k")]
    assert group["consent"] == {"sources": ["segment"]}
    assert "event" not in group
    assert "subjects" not in group
    big = AuditWriter(AuditLog(client=None, key=b"k"))
    for index in range(MAX_EVENTS_PER_RECORD + 1):
        big.record_decisions(_decisions(f"n{index}", 5, analytics)[:1])
    (only,) = big._groups.values()
    assert [d["count"] for _, d, _, _ in only.records()] == [MAX_EVENTS_PER_RECORD, 1]


def test_decisions_records_come_with_their_json_and_subjects() -> None:
    """A ``decisions`` record's JSON, put together from its events' parts encoded as they
    arrived, is its ``canonical`` JSON (what its hash covers), and the subject tokens
    collected as they arrived are its ``index_tokens``, record by record past
    ``MAX_EVENTS_PER_RECORD`` events."""
    writer = AuditWriter(AuditLog(client=None, key=b"k"))
    analytics = frozenset({"analytics", "necessary"})
    for index in range(MAX_EVENTS_PER_RECORD + 3):
        granted = analytics if index % 5 else frozenset({"necessary"})
        writer.record_decisions(_decisions(f"m{index % 450}-{index}", index % 3, granted))
    records = [r for g in writer._groups.values() for r in g.records()]
    assert len(records) > len(writer._groups)  # some group spans two records
    for kind, data, _, ready in records:
        assert ready is not None
        data_json, subjects = ready
        assert data_json == canonical(data)
        assert subjects == index_tokens(kind, data)[0]


def test_equal_shared_parts_made_twice_still_share_one_record() -> None:
    """``decision_notes``' memo may start again between two events of one shape: their equal
    shared parts are then two objects, grouped apart as they arrive and merged at the flush
    (one record per destination holding both events)."""
    writer = AuditWriter(AuditLog(client=None, key=b"k"))
    analytics = frozenset({"analytics", "necessary"})
    first = _decisions("a1", 5, analytics)
    audit_records._SHARED.clear()
    second = _decisions("a2", 5, analytics)
    assert first[0][0] is not second[0][0]
    assert first[0][0].key == second[0][0].key
    writer.record_decisions(first)
    writer.record_decisions(second)
    assert len(writer._groups) == 2 * len(first)
    merged = merged_groups(writer._groups)
    assert len(merged) == len(first)
    tokens = [subject_token("a1", b"k"), subject_token("a2", b"k")]
    for group in merged:
        ((_, data, _, ready),) = group.records()
        assert ready is not None
        assert ready == (canonical(data), None)  # merged: tokens found in the record
        assert data["count"] == 2
        assert [e["event"] for e in data["events"]] == tokens


def test_a_decisions_record_holds_exactly_its_decision_records() -> None:
    """Each event of a ``decisions`` record, joined with the shared part, is the ``decision``
    record ``decision_entries`` writes for it: grouping loses and adds nothing."""
    writer = AuditWriter(AuditLog(client=None, key=b"k"))
    analytics = frozenset({"analytics", "necessary"})
    expected = []
    for index, (revenue, granted) in enumerate(
        [(5, analytics), (5, analytics), ({"nested": 1}, analytics), (5, frozenset())]
    ):
        event, consent, decisions = _planned(f"e{index}", revenue, granted)
        notes = decision_notes(event, consent, decisions, key=b"k")
        entries = decision_entries(event, consent, decisions, key=b"k")
        assert [(AuditKind.DECISION, s.record(p)) for s, p in notes] == entries
        expected += [data for _, data in entries]
        writer.record_decisions(notes)
    joined = []
    for group in writer._groups.values():
        for _, data, _, _ in group.records():
            shared = {k: v for k, v in data.items() if k not in {"from", "to", "count", "events"}}
            for event in data["events"]:
                joined.append(
                    shared
                    | {"event": event["event"], "subjects": event["subjects"]}
                    | {"consent": {**shared["consent"], "at": event["consent_at"]}}
                )
    key = json.dumps
    assert sorted(map(key, joined)) == sorted(map(key, expected))
    assert len(joined) == 8


def test_lane_records_hash_their_lane_and_witness_the_fast_way_too() -> None:
    """A lane record's hash covers its lane and witness; the one-encoding path agrees."""
    witness = {"lane": 2, "seq": 7, "hash": "a" * 64}
    record = seal(3, AT, "hold", {"destination": "ga4"}, GENESIS, lane=4, witness=witness)
    fast = sealed_hash(
        3, AT, "hold", canonical({"destination": "ga4"}), GENESIS, lane=4,
        witness_json=canonical(witness).decode(),
    )  # fmt: skip
    assert fast == record.hash == chain_hash(record)
    assert chain_hash(dataclasses.replace(record, lane=5)) != record.hash
    assert chain_hash(dataclasses.replace(record, witness={**witness, "seq": 8})) != record.hash
    legacy = seal(3, AT, "hold", {"destination": "ga4"}, GENESIS)
    assert legacy.hash == sealed_hash(3, AT, "hold", canonical({"destination": "ga4"}), GENESIS)
    assert parse_record(canonical(record.to_json())) == record


def test_interleaved_lanes_verify_and_a_witness_must_match() -> None:
    """Records of several lanes, interleaved, verify lane by lane; a witness pointing at a
    record with another hash, or past its lane's end, fails."""
    one = chain(GENESIS_ANCHOR, [(AT, "release", {"n": i}) for i in range(3)], lane=1)
    seen = {"lane": 1, "seq": 2, "hash": one[1].hash}
    two = chain(GENESIS_ANCHOR, [(AT, "hold", {"n": i}) for i in range(2)], lane=2, witness=seen)
    stream = [one[0], one[1], two[0], one[2], two[1]]
    result = verify_records(stream)
    assert (result.ok, result.checked, result.lanes) == (True, 5, 2)
    assert verify_records(stream, head={1: Anchor(3, one[2].hash), 2: Anchor(2, two[1].hash)}).ok
    lying = chain(GENESIS_ANCHOR, [(AT, "hold", {})], lane=2, witness={**seen, "hash": "b" * 64})
    failed = verify_records([one[0], one[1], lying[0]])
    assert (failed.ok, failed.lane, failed.first_bad_seq) == (False, 2, 1)
    ahead = chain(GENESIS_ANCHOR, [(AT, "hold", {})], lane=2, witness={**seen, "seq": 9})
    failed = verify_records([*one, ahead[0]])
    assert "witnessed lane 1 record 9, which is missing" in failed.reason


async def test_what_the_bounded_buffer_drops_is_counted_and_logged_once_per_flush(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past ``max_buffer`` decisions and records are dropped: counted on the writer and as
    ``router_audit_dropped_total``, and logged once at the next flush (not once per request)."""
    stats = Stats()
    writer = AuditWriter(AuditLog(client=None, key=b"k"), max_buffer=3, stats=stats)
    analytics = frozenset({"analytics", "necessary"})
    for index in range(3):
        writer.record_decisions(_decisions(f"d{index}", 5, analytics))  # 2 decisions each
    assert writer.dropped == 3
    writer.record_many([(AuditKind.RELEASE, {"destination": f"r{i}"}) for i in range(5)])
    assert writer.dropped == 5
    assert stats.get("router_audit_dropped_total") == 5
    writer._groups.clear()  # nothing to append: this flush only reports
    writer._buffer.clear()
    with caplog.at_level(logging.WARNING):
        assert await writer.flush() == 0
        assert await writer.flush() == 0
    warnings = [r for r in caplog.records if "audit records dropped" in r.getMessage()]
    assert len(warnings) == 1
    assert getattr(warnings[0], "count", None) == 5
