"""The plan step: ``(event, consent, destinations) -> decisions``. Pure.

For each destination, in order: enabled, not suppressed, listed in ``events``, not switched off
in the event's ``integrations`` object, consent granted for every required category; then the
event is minimized to the destination's allowlist and passed through the PII safety net
(``destinations.dlp``): card numbers are always redacted, other personal data unless the field
is declared as that kind of identifier. This is what ``router explain`` runs.

``plan_request`` plans a whole request's events (the ingest handler's middle step): consent
resolved once per identical consent context, consent events of the batch changing the consent
of the events after them, suppressed subjects skipped; it returns the deliveries per
destination, the skips, the PII detections, the consent records to store and the audit
entries as one ``RequestPlan``, and the handler does the I/O and the counting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from consent.model import ConsentState, StoredConsent
from consent.policy import ConsentPolicy, evaluate
from consent.records import ConsentRecord, merge_records, narrow
from consent.resolve import RequestSignals, carries_signals, region_of, resolve_consent
from destinations.base import ConsentFacts, DeliveryOf
from destinations.dlp import allowlisted
from router.core.audit_records import AuditKind, DecisionNote, decision_notes, written_out
from router.core.consent_input import RESERVED_EVENTS, consent_update
from router.core.outcomes import Decision, Deliver, QueueItem, QueueItemOf, Skip, SkipReason
from router.core.paths import field_paths
from router.core.sanitize import Event
from router.core.schema import EventType
from router.routing import CompiledDestination, Routing


def consent_facts(state: ConsentState, policy: ConsentPolicy) -> ConsentFacts:
    """What connectors may know of the consent: categories and opt-out flags, no strings."""

    def google(kind: str, default: str) -> bool | None:
        category = policy.google.get(kind, default)
        if category in state.denied_by:
            return False
        return True if category in state.granted else None

    return ConsentFacts(
        granted=tuple(sorted(state.granted)),
        denied=tuple(sorted(state.denied_by)),
        gpc=state.gpc,
        us_opt_out=state.us_opt_out,
        ad_user_data=google("ad_user_data", "advertising"),
        ad_personalization=google("ad_personalization", "personalization"),
    )


def listed(events: frozenset[str], event_type: EventType, name: str | None) -> bool:
    """Whether a destination's ``events`` filter lets an event of this type and name (track
    events are listed by name, the others by type) through."""
    return event_type in events or (  # a StrEnum: hashed and compared as its value
        event_type is EventType.TRACK and name is not None and name in events
    )


def integrations_allow(integrations: Mapping[str, Any], destination: CompiledDestination) -> bool:
    """Segment's ``integrations`` object can only remove a destination, never add one."""
    for key in (destination.id, destination.type):
        if key in integrations:
            return integrations[key] is not False
    return integrations.get("All", True) is not False


def plan(
    event: Event,
    consent: ConsentState,
    destinations: Sequence[CompiledDestination],
    policy: ConsentPolicy,
    *,
    suppressed: bool = False,
) -> list[Decision]:
    """One decision per destination, in configuration order."""
    return _plan(event, ConsentOutcome.of(consent, destinations, policy), destinations, suppressed)


@dataclass(frozen=True, slots=True)
class ConsentOutcome:
    """What one consent state decides for each destination, whatever the event: the facts
    connectors get, and per destination the skip when its consent is not granted (``None``:
    granted). Events of the same consent state share it."""

    facts: ConsentFacts
    denials: tuple[Skip | None, ...]

    @classmethod
    def of(
        cls,
        consent: ConsentState,
        destinations: Sequence[CompiledDestination],
        policy: ConsentPolicy,
    ) -> ConsentOutcome:
        """Evaluate ``consent`` for every destination, in configuration order."""
        denials: list[Skip | None] = []
        for destination in destinations:
            verdict = evaluate(
                consent, destination.requires, destination.config.tcf_vendor_id, policy.tcf
            )
            if verdict.allowed:
                denials.append(None)
                continue
            assert verdict.reason is not None
            detail = f"category {verdict.category}" if verdict.category else ""
            denials.append(Skip(destination, SkipReason.denied(verdict.reason), detail))
        return cls(consent_facts(consent, policy), tuple(denials))


def _plan(
    event: Event,
    outcome: ConsentOutcome,
    destinations: Sequence[CompiledDestination],
    suppressed: bool,
) -> list[Decision]:
    integrations = event.data.get("integrations")
    # None or a dict first: ``isinstance`` with an ABC runs Python code (ABCMeta's check)
    if (
        integrations is not None
        and type(integrations) is not dict
        and not isinstance(integrations, Mapping)
    ):
        integrations = None
    return [
        _decide(
            event,
            destination,
            denial,
            facts=outcome.facts,
            integrations=integrations,
            suppressed=suppressed,
        )
        for destination, denial in zip(destinations, outcome.denials, strict=True)
    ]


def _decide(
    event: Event,
    destination: CompiledDestination,
    denial: Skip | None,
    *,
    facts: ConsentFacts,
    integrations: Mapping[str, Any] | None,
    suppressed: bool,
) -> Decision:
    if not destination.config.enabled:
        return Skip(destination, SkipReason.DESTINATION_DISABLED)
    if suppressed:
        return Skip(destination, SkipReason.SUPPRESSED, "the subject asked for erasure")
    events = destination.events
    if events is not None and not listed(events, event.type, event.name):
        return Skip(destination, SkipReason.EVENT_NOT_LISTED)
    if integrations is not None and not integrations_allow(integrations, destination):
        return Skip(destination, SkipReason.INTEGRATIONS_DISABLED, "integrations object")
    if denial is not None:
        return denial
    payload, found = allowlisted(destination.allowlist, event.data, destination.identifiers)
    delivery = DeliveryOf(
        message_id=event.message_id,
        type=str(event.type),  # its value (a StrEnum; ``.value`` is a slower property)
        timestamp=event.timestamp,
        payload=payload,
        event=event.name,
        consent=facts,
    )
    return Deliver(destination, delivery, tuple(found))


class PiiDetection(NamedTuple):
    """The labels of one ``router_pii_detections_total`` count."""

    destination: str
    kind: str
    field: str
    """The allowlist rule that let the value through (bounded), or ``other``."""
    status: str
    """``redacted`` or ``declared``."""


@dataclass(slots=True, init=False)
class RequestPlan:
    """What planning one request decided; the handler stores, sends and counts it.

    Its ``__init__`` is written out, as is ``RequestPlanner``'s: the one ``dataclass`` makes
    runs as interpreted Python even in the compiled build (3 us per request for the two), and
    the counts are plain dicts (a ``Counter`` costs 1.8 us to make)."""

    deliveries: dict[str, list[QueueItem]]
    """Per destination id, in event order (the ingest handler encodes and removes them after
    each slice of events it plans)."""
    skipped: dict[tuple[str, SkipReason], int]
    """(destination id, reason) -> events skipped."""
    detections: dict[PiiDetection, int]
    pii: dict[str, set[str]]
    """Per destination id, every kind the safety net found (for the anomaly monitor)."""
    updates: list[tuple[tuple[str, ...], ConsentRecord]]
    """Consent events' choices to store: the hashed subjects and the record."""
    update_ids: list[tuple[str, ...]]
    """The subject ids of each update (for the audit's keyed tokens; never stored)."""
    decision_audit: list[DecisionNote]
    """The audit's note of every decision (``decision_notes``), for ``AuditWriter.
    record_decisions``."""
    paths: set[str]
    """The events' field paths (keys normalized), when asked for."""

    def __init__(self) -> None:
        self.deliveries = {}
        self.skipped = {}
        self.detections = {}
        self.pii = {}
        self.updates = []
        self.update_ids = []
        self.decision_audit = []
        self.paths = set()

    def decision_records(self) -> list[tuple[AuditKind, dict[str, Any]]]:
        """``decision_audit`` written out: one ``decision`` record per event and destination
        (``decision_entries``' records)."""
        return written_out(self.decision_audit)


_OUTCOMES: Final[dict[int, tuple[ConsentState, Routing, ConsentOutcome]]] = {}
"""By ``id`` of the consent state (kept alive here, with the routing it was evaluated under):
the states the consent memos share between events and requests (``resolve_consent``) are
evaluated once, not once per request. Bounded: the oldest entry goes first."""
_MAX_OUTCOMES: Final = 4096


_MERGED: Final[dict[tuple[int, ...], tuple[tuple[ConsentRecord | None, ...], StoredConsent]]] = {}
"""``merge_records`` by the ``id`` of the records (kept alive here): the consent store's cache
hands the same record objects to request after request of a person. Bounded: it starts
again when full."""
_MAX_MERGED: Final = 4096


def _merged(records: tuple[ConsentRecord | None, ...]) -> StoredConsent | None:
    """``merge_records(records)``, remembered for the same record objects."""
    key = tuple([id(r) for r in records])
    known = _MERGED.get(key)
    if known is not None and all(a is b for a, b in zip(known[0], records, strict=True)):
        return known[1]
    merged = merge_records(records)
    if merged is not None:
        if len(_MERGED) >= _MAX_MERGED:
            _MERGED.clear()
        _MERGED[key] = (records, merged)
    return merged


@dataclass(slots=True, init=False)
class RequestPlanner:
    """Plans one request's events, slice by slice (the handler may yield between slices).

    ``records``: the stored consent of the request's subjects (by hashed id), updated here as
    the request's consent events change it; ``suppressed``: the hashed ids of erased subjects.
    A consent event from a source that may not grant (``consent_writes: withdraw``) is still
    routed on its own signals, but what it stores only withdraws (``narrow``).
    ``audit_key``: build the audit's decision entries with it (``None``: no audit);
    ``collect_paths``: gather the events' field paths (for the anomaly monitor).
    """

    routing: Routing
    signals: RequestSignals
    suppressed: Set[str]
    records: dict[str, ConsentRecord | None]
    may_grant: bool
    audit_key: bytes | None
    collect_paths: bool
    trace: str | None
    """The ingest span's ``traceparent``, kept on every queue item (the delivery span links
    to it)."""
    plan: RequestPlan
    _resolved: dict[tuple[tuple[str, ...], str | None], ConsentState]
    """Events without consent fields of their own, of the same subjects and region, have the
    same consent: resolved once (forgotten when the request stores a choice)."""

    def __init__(
        self,
        routing: Routing,
        signals: RequestSignals,
        *,
        suppressed: Set[str] = frozenset(),
        records: dict[str, ConsentRecord | None] | None = None,
        may_grant: bool = True,
        audit_key: bytes | None = None,
        collect_paths: bool = False,
        trace: str | None = None,
    ) -> None:
        self.routing = routing
        self.signals = signals
        self.suppressed = suppressed
        self.records = {} if records is None else records
        self.may_grant = may_grant
        self.audit_key = audit_key
        self.collect_paths = collect_paths
        self.trace = trace
        self.plan = RequestPlan()
        self._resolved = {}

    def add(self, events: Sequence[Event], subjects: Sequence[tuple[str, ...]]) -> None:
        """Plan these events (``subjects``: each event's hashed subject ids)."""
        routing = self.routing
        out = self.plan
        suppressed = self.suppressed
        for event, hashes in zip(events, subjects, strict=True):
            is_suppressed = bool(suppressed) and not suppressed.isdisjoint(hashes)
            consent = self._consent(event, hashes)
            update = None
            if event.name in RESERVED_EVENTS and not is_suppressed:  # no other carries one
                update = consent_update(event, routing.policy)
            if update is not None:
                self._store(hashes, update)
                out.update_ids.append(event.subject_ids)
            decisions = _plan(event, self._outcome(consent), routing.destinations, is_suppressed)
            for decision in decisions:
                destination = decision.destination
                if isinstance(decision, Deliver):
                    kept = _count_detections(decision, out) if decision.detections else ()
                    out.deliveries.setdefault(destination.id, []).append(
                        QueueItemOf(
                            decision.delivery,
                            subjects=hashes,
                            requires=destination.requires,
                            accepted_at=event.received_at,
                            trace=self.trace,
                            pii=kept,
                        )
                    )
                else:
                    skip = (destination.id, decision.reason)
                    out.skipped[skip] = out.skipped.get(skip, 0) + 1
            if self.collect_paths or self.audit_key is not None:
                event_paths = field_paths(event.data)
                if self.collect_paths:
                    out.paths |= event_paths
                if self.audit_key is not None:
                    out.decision_audit += decision_notes(
                        event, consent, decisions, key=self.audit_key, event_paths=event_paths
                    )

    def _consent(self, event: Event, hashes: tuple[str, ...]) -> ConsentState:
        context = event.data.get("context") or {}
        memo_key = None
        if not carries_signals(context):
            memo_key = (hashes, region_of(context, self.signals))
            known = self._resolved.get(memo_key)
            if known is not None:
                return known
        consent = resolve_consent(
            context,
            self.signals,
            self.routing.policy,
            stored=_merged(tuple(self.records.get(h) for h in hashes)),
            event_time=event.timestamp,
            now=event.received_at,
        )
        if memo_key is not None:
            self._resolved[memo_key] = consent
        return consent

    def _outcome(self, consent: ConsentState) -> ConsentOutcome:
        routing = self.routing
        known = _OUTCOMES.get(id(consent))
        if known is not None and known[0] is consent and known[1] is routing:
            return known[2]
        outcome = ConsentOutcome.of(consent, routing.destinations, routing.policy)
        if len(_OUTCOMES) >= _MAX_OUTCOMES:
            del _OUTCOMES[next(iter(_OUTCOMES))]
        _OUTCOMES[id(consent)] = (consent, routing, outcome)
        return outcome

    def _store(self, hashes: tuple[str, ...], update: ConsentRecord) -> None:
        """Record a consent event's choice; later events of the request see it."""
        self._resolved.clear()
        self.plan.updates.append((hashes, update))
        for h in hashes:
            known = self.records.get(h)
            stored = update if self.may_grant else narrow(known, update)[0]
            if stored is not None and (known is None or known.updated_at <= stored.updated_at):
                self.records[h] = stored


def plan_request(
    events: Sequence[Event],
    subjects: Sequence[tuple[str, ...]],
    *,
    routing: Routing,
    signals: RequestSignals,
    suppressed: Set[str] = frozenset(),
    records: Mapping[str, ConsentRecord | None] | None = None,
    may_grant: bool = True,
    audit_key: bytes | None = None,
    collect_paths: bool = False,
) -> RequestPlan:
    """Plan all of a request's events at once (see ``RequestPlanner``)."""
    planner = RequestPlanner(
        routing,
        signals,
        suppressed=suppressed,
        records=dict(records or {}),
        may_grant=may_grant,
        audit_key=audit_key,
        collect_paths=collect_paths,
    )
    planner.add(events, subjects)
    return planner.plan


def _count_detections(decision: Deliver, plan: RequestPlan) -> tuple[str, ...]:
    """Count the safety net's findings; the kinds let through (declared fields), sorted."""
    destination = decision.destination
    for detection in decision.detections:
        counted = PiiDetection(
            destination.id,
            detection.kind,
            destination.allowlist.rule_for(detection.path),
            "redacted" if detection.redacted else "declared",
        )
        plan.detections[counted] = plan.detections.get(counted, 0) + 1
    plan.pii.setdefault(destination.id, set()).update(d.kind for d in decision.detections)
    return tuple(sorted({d.kind for d in decision.detections if not d.redacted}))
