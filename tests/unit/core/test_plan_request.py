"""The request planner without Redis: consent memo, consent events inside a batch, suppression,
skips with reasons, PII detections and audit entries, all as values of one ``RequestPlan``."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from consent.ids import subject_key
from consent.records import ConsentRecord, merge_records
from consent.resolve import RequestSignals, resolve_consent
from router.core.audit_records import AuditKind
from router.core.outcomes import Deliver, SkipReason
from router.core.plan import PiiDetection, RequestPlan, RequestPlanner, plan, plan_request
from router.core.sanitize import Event, sanitize
from router.core.schema import WireEvent
from router.routing import Routing
from tests.conftest import routing_from

NOW = datetime(2026, 11, 22, 10, tzinfo=UTC)
ROUTING = routing_from()
CONSENT_EVENT = "Segment Consent Preference Updated"


def _event(index: int, name: str = "Page Viewed", user: str = "anon-1", **extra: Any) -> Event:
    body = {
        "type": "track",
        "event": name,
        "anonymousId": user,
        "messageId": f"m{index}",
        "timestamp": (NOW - timedelta(seconds=10 - index)).isoformat(),
        **extra,
    }
    event = sanitize(
        msgspec.convert(body, WireEvent), route_type=None, received_at=NOW, new_id=lambda: "x"
    )
    assert isinstance(event, Event)
    return event


def _grant(index: int, analytics: bool, user: str = "anon-1") -> Event:
    return _event(
        index,
        CONSENT_EVENT,
        user,
        context={"consent": {"categoryPreferences": {"C0002": analytics}}},
    )


def _plan(events: list[Event], routing: Routing = ROUTING, **kwargs: Any) -> RequestPlan:
    subjects = [tuple(subject_key(i) for i in e.subject_ids) for e in events]
    return plan_request(events, subjects, routing=routing, signals=RequestSignals(), **kwargs)


def _delivered(plan: RequestPlan, destination: str) -> list[str]:
    return [r.delivery.message_id for r in plan.deliveries.get(destination, [])]


def test_consent_is_resolved_once_per_identical_consent_context() -> None:
    """Events of one subject and region without consent fields share one resolution."""
    events = [_event(i) for i in range(5)] + [_event(5, user="anon-2")]
    planner = RequestPlanner(ROUTING, RequestSignals())
    planner.add(events, [tuple(subject_key(i) for i in e.subject_ids) for e in events])
    # One resolution per (subjects, region): each is remembered once. (Counted this way, not
    # by patching resolve_consent, which the compiled build calls directly.)
    assert len(planner._resolved) == 2


def test_a_consent_event_changes_the_consent_of_later_events_of_the_batch() -> None:
    """Before the grant: no consent; the grant itself and the events after it are delivered."""
    plan = _plan([_event(0), _grant(1, analytics=True), _event(2)])
    assert _delivered(plan, "analytics-hook") == ["m1", "m2"]
    assert plan.skipped[("analytics-hook", SkipReason.NO_CONSENT)] == 1
    assert [record.granted for _, record in plan.updates] == [frozenset({"analytics"})]
    assert plan.update_ids == [("anon-1",)]


def test_a_source_that_may_not_grant_stores_only_withdrawals() -> None:
    """``consent_writes: withdraw``: the grant routes its own event, later ones stay denied."""
    plan = _plan([_grant(0, analytics=True), _event(1)], may_grant=False)
    assert _delivered(plan, "analytics-hook") == ["m0"]
    assert plan.skipped[("analytics-hook", SkipReason.NO_CONSENT)] == 1


def test_a_withdrawal_in_the_batch_stops_later_deliveries() -> None:
    """Grant, then withdraw: only the events between them are delivered."""
    events = [_grant(0, analytics=True), _event(1), _grant(2, analytics=False), _event(3)]
    plan = _plan(events)
    assert _delivered(plan, "analytics-hook") == ["m0", "m1"]
    assert plan.skipped[("analytics-hook", SkipReason.CATEGORY_DENIED)] == 2


def test_erased_subjects_are_skipped_and_their_consent_events_not_stored() -> None:
    """A suppressed subject gets nothing anywhere, and its consent event stores nothing."""
    events = [_grant(0, analytics=True), _event(1, "Order Completed"), _event(2, user="anon-2")]
    plan = _plan(events, suppressed={subject_key("anon-1")})
    assert plan.skipped[("analytics-hook", SkipReason.SUPPRESSED)] == 2
    assert plan.skipped[("ops-hook", SkipReason.SUPPRESSED)] == 2
    assert plan.updates == []
    assert _delivered(plan, "ops-hook") == []


def test_every_skip_is_counted_with_its_reason_per_destination() -> None:
    """Skips are bounded (destination, reason) counts; deliveries keep event order."""
    events = [_event(0), _event(1, "Order Completed", properties={"order_id": "o-1"})]
    plan = _plan(events)
    assert dict(plan.skipped) == {
        ("analytics-hook", SkipReason.NO_CONSENT): 2,
        ("ops-hook", SkipReason.EVENT_NOT_LISTED): 1,
    }
    (routed,) = plan.deliveries["ops-hook"]
    assert routed.delivery.payload == {
        "messageId": "m1",
        "event": "Order Completed",
        "properties": {"order_id": "o-1"},
    }
    assert routed.subjects == (subject_key("anon-1"),)
    assert routed.requires == ()
    assert routed.accepted_at == NOW


def test_pii_detections_are_returned_to_count_not_counted() -> None:
    """The safety net's findings come back as label tuples and kinds per destination."""
    event = _event(0, "Order Completed", properties={"order_id": "jane.doe@example.com"})
    plan = _plan([event, event])
    assert dict(plan.detections) == {
        PiiDetection("ops-hook", "email", "properties.order_id", "redacted"): 2
    }
    assert plan.pii == {"ops-hook": {"email"}}
    assert plan.deliveries["ops-hook"][0].pii == ()  # redacted: nothing let through


def test_audit_entries_only_with_an_audit_key_and_without_ids() -> None:
    """One decision record per event and destination, subjects as tokens; none without key."""
    events = [_event(0), _event(1, "Order Completed")]
    assert _plan(events).decision_audit == []
    entries = _plan(events, audit_key=b"k").decision_records()
    assert [(kind, d["destination"], d["decision"]) for kind, d in entries] == [
        (AuditKind.DECISION, "analytics-hook", "skip"),
        (AuditKind.DECISION, "ops-hook", "skip"),
        (AuditKind.DECISION, "analytics-hook", "skip"),
        (AuditKind.DECISION, "ops-hook", "deliver"),
    ]
    assert "anon-1" not in msgspec.json.encode(entries).decode()


def test_field_paths_are_collected_only_when_asked() -> None:
    """The anomaly monitor's paths: normalized keys, gathered on request."""
    event = _event(0, properties={"plan": "pro", "jane@example.com": 1})
    assert _plan([event]).paths == set()
    paths = _plan([event], collect_paths=True).paths
    assert {"properties.plan", "properties.*"} <= paths


_CONSENTS = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["C0001", "C0002", "C0004", "analytics"]), st.booleans()),
)
_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["Page Viewed", "Order Completed"]),
        st.sampled_from(["anon-1", "anon-2", "anon-3"]),
        _CONSENTS,
        st.sampled_from([None, {"ops-hook": False}, {"All": False, "webhook": True}]),
        st.booleans(),  # gpc
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(_EVENTS, st.booleans(), st.booleans())
def test_the_planner_decides_what_plan_decides_event_by_event(
    specs: list[tuple[str, str, dict[str, bool] | None, Any, bool]], stored: bool, gpc: bool
) -> None:
    """The planner's shared consent evaluations (per consent state, per request) give, event
    for event, the deliveries and skips of resolving and planning each event on its own."""
    events = []
    for index, (name, user, consent, integrations, event_gpc) in enumerate(specs):
        context: dict[str, Any] = {"page": {"url": f"https://example.com/{index}"}}
        if consent is not None or event_gpc:
            context["consent"] = {
                **({"categoryPreferences": consent} if consent is not None else {}),
                **({"gpc": True} if event_gpc else {}),
            }
        extra: dict[str, Any] = {"context": context}
        if integrations is not None:
            extra["integrations"] = integrations
        events.append(_event(index, name, user, **extra))
    records: dict[str, ConsentRecord | None] = {}
    if stored:
        records[subject_key("anon-1")] = ConsentRecord.build(
            {"analytics": True}, source="api", updated_at=NOW, received_at=NOW, max_age_days=395
        )
    signals = RequestSignals(gpc=gpc)
    subjects = [tuple(subject_key(i) for i in e.subject_ids) for e in events]
    got = plan_request(events, subjects, routing=ROUTING, signals=signals, records=records)

    deliveries: dict[str, list[Any]] = {}
    skipped: Counter[tuple[str, Any]] = Counter()
    for event, hashes in zip(events, subjects, strict=True):
        consent_state = resolve_consent(
            event.data.get("context") or {},
            signals,
            ROUTING.policy,
            stored=merge_records(records.get(h) for h in hashes),
            event_time=event.timestamp,
            now=event.received_at,
        )
        for decision in plan(event, consent_state, ROUTING.destinations, ROUTING.policy):
            if isinstance(decision, Deliver):
                deliveries.setdefault(decision.destination.id, []).append(decision.delivery)
            else:
                skipped[(decision.destination.id, decision.reason)] += 1
    assert {d: [i.delivery for i in items] for d, items in got.deliveries.items()} == deliveries
    assert got.skipped == skipped


def test_merged_stored_consent_is_remembered_for_the_same_record_objects() -> None:
    """The planner merges a person's records once per set of record objects (the consent
    store's cache hands out the same ones): the same answer as ``merge_records``, the same
    object again for the same records, a fresh merge for an equal but new record."""
    from router.core.plan import _merged  # noqa: PLC0415 - the private memo under test

    times = {"updated_at": NOW, "received_at": NOW, "expires_at": NOW + timedelta(days=1)}

    granted = ConsentRecord(
        granted=frozenset({"analytics"}), denied=frozenset(), source="api", **times
    )
    denied = ConsentRecord(
        granted=frozenset(), denied=frozenset({"analytics"}), source="cmp", **times
    )
    records = (granted, None, denied)
    first = _merged(records)
    assert first == merge_records(records)
    assert _merged((granted, None, denied)) is first
    again = ConsentRecord(
        granted=frozenset({"analytics"}), denied=frozenset(), source="api", **times
    )
    other = _merged((again, None, None))
    assert other == merge_records([again])
    assert other is not first
    assert other is not None
    assert other.granted == frozenset({"analytics"})
    assert _merged((None, None)) is None
