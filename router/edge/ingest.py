"""The ingest handler: ``POST /v1/{type}`` and ``/v1/batch`` (Segment-compatible).

authenticate -> split the body into raw events -> look up the people they name (stored
consent, erasure marks) -> per slice of events: decode, validate and sanitize, resolve
consent, plan, encode -> enqueue every delivery (and every rejection to quarantine) in one
group-committed pipeline -> answer. The 200 is sent only after Redis has the writes.
"""

from __future__ import annotations

import asyncio
import functools
import random
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import Span
from redis.exceptions import RedisError

from consent.ids import normalize_id
from consent.records import ConsentRecord
from consent.resolve import RequestSignals
from router.compliance.quarantine import quarantine_write
from router.core import jsonscan
from router.core.audit_records import AuditKind, consent_written
from router.core.outcomes import RejectCode, Rejection
from router.core.plan import RequestPlan, RequestPlanner
from router.core.sanitize import Event, Limits, sanitize
from router.core.schema import (
    BATCH_DECODER,
    ID_PROBE_DECODER,
    KEY_DECODER,
    ROUTE_TYPES,
    WIRE_EVENT_DECODER,
    BatchEnvelope,
    EventType,
    WireEvent,
    error_path,
    error_text,
)
from router.core.signals import signals_from_headers
from router.edge.http import HttpError, basic_auth_key, json_response, read_body
from router.edge.state import STATE, AppState
from router.errors import QueueUnavailableError
from router.observability.tracing import ingest_trace, set_span_attributes, stage_span
from router.queue.enqueuer import Deliveries, Write
from router.queue.items import ITEM_ENCODER
from router.queue.keys import queue_key, subject_hash
from router.queue.streams import suppressed_among
from router.routing import Routing, SourceConfig

_NO_TRACER: Final = trace.NoOpTracer()
PLAN_SLICE: Final = 100
"""Events planned between two yields to the event loop: a 2,500-event batch takes a few
hundred milliseconds of CPU, which no other request should wait for in one piece."""


def _new_id() -> str:
    return str(uuid.uuid4())


@functools.lru_cache(maxsize=16)
def _event_limits(max_string_chars: int, max_depth: int) -> Limits:
    """The per-event limits of the routing file's, made once (frozen: shared by requests)."""
    return Limits(max_string_chars=max_string_chars, max_depth=max_depth)


class _Parsed:
    """A request body as raw events (with their decoding, or None when it is left to the
    caller) and the batch's shared fields."""

    __slots__ = ("context", "integrations", "items", "sent_at")

    def __init__(
        self,
        items: list[tuple[bytes, WireEvent | Rejection | None]],
        context: dict[str, Any] | None = None,
        integrations: dict[str, Any] | None = None,
        sent_at: Any = None,
    ) -> None:
        self.items = items
        self.context = context
        self.integrations = integrations
        self.sent_at = sent_at


_DEFECTS: Final = {
    "non_finite": (RejectCode.INVALID_NUMBER, "numbers must be finite (no NaN or Infinity)"),
    "lone_surrogate": (
        RejectCode.INVALID_STRING,
        "a string holds an unpaired UTF-16 surrogate escape",
    ),
    "control_char": (
        RejectCode.INVALID_STRING,
        "a string holds a raw control character; escape it",
    ),
    "invalid_utf8": (RejectCode.INVALID_STRING, "a string is not valid UTF-8"),
}
"""What ``jsonscan.defect`` finds in an event msgspec refused -> (rejection code, message)."""


def _decode_event(raw: bytes) -> WireEvent | Rejection:
    try:
        return WIRE_EVENT_DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "out of range" in text:
            return _malformed(raw)
        return Rejection(RejectCode.INVALID_FIELD, error_path(text), error_text(text))
    except msgspec.DecodeError:
        return _malformed(raw)
    except RecursionError:
        return Rejection(RejectCode.TOO_DEEP, "", "the event is nested too deeply")


def _malformed(raw: bytes) -> Rejection:
    """The rejection of an event that is not valid JSON: which value, where, when the
    structure is sound (one NaN, a lone surrogate escape, a raw control character)."""
    found = jsonscan.defect(raw)
    if found is None:
        return Rejection(RejectCode.INVALID_JSON, "", "the event is not valid JSON")
    code, message = _DEFECTS[found[0]]
    return Rejection(code, found[1], message)


def _probe_key(body: bytes) -> str | None:
    """The body's ``writeKey``, also when some other value of the body is malformed."""
    try:
        return KEY_DECODER.decode(body).write_key
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        raw = jsonscan.object_members(body).get(b'"writeKey"')
        return msgspec.json.decode(raw, type=str) if raw is not None else None
    except (jsonscan.ScanError, msgspec.DecodeError):
        return None


def parse_body(
    body: bytes,
    route_type: EventType | None,
    max_event_bytes: int,
    max_events: int,
    *,
    decode: bool = True,
) -> _Parsed:
    """Decode a request body into raw events; ``HttpError`` when nothing is usable.

    A batch is split into raw events before any of them is decoded, so one malformed value
    costs only its event; a batch of more than ``max_events`` is refused before any work.
    ``decode=False``: a batch's events are left undecoded (None; ``decoded`` decodes one),
    those over ``max_event_bytes`` rejected still; a single event is always decoded."""
    if route_type is not None:
        if len(body) > max_event_bytes:
            raise HttpError(
                413, "event_too_large", f"an event is limited to {max_event_bytes} bytes"
            )
        decoded = _decode_event(body)
        if isinstance(decoded, Rejection) and decoded.code is RejectCode.INVALID_JSON:
            raise HttpError(400, "invalid_json", "the body is not valid JSON")
        return _Parsed(items=[(body, decoded)])
    try:
        envelope = BATCH_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "Object missing required field `batch`" in text:
            raise HttpError(
                400, "invalid_batch", "a batch body needs a `batch` array", path="batch"
            ) from exc
        raise HttpError(400, "invalid_batch", error_text(text), path=error_path(text)) from exc
    except msgspec.DecodeError:
        envelope = _split_batch(body, HttpError(400, "invalid_json", "the body is not valid JSON"))
    except RecursionError:
        envelope = _split_batch(body, HttpError(400, "too_deep", "the body is nested too deeply"))
    if len(envelope.batch) > max_events:
        raise HttpError(
            413,
            "too_many_events",
            f"a batch is limited to {max_events} events; this one has {len(envelope.batch)}",
        )
    items: list[tuple[bytes, WireEvent | Rejection | None]] = []
    for raw in envelope.batch:
        data = bytes(raw)
        if len(data) > max_event_bytes:
            items.append(
                (
                    data,
                    Rejection(
                        RejectCode.EVENT_TOO_LARGE,
                        "",
                        f"an event is limited to {max_event_bytes} bytes",
                    ),
                )
            )
        else:
            items.append((data, _decode_event(data) if decode else None))
    return _Parsed(
        items=items,
        context=envelope.context,
        integrations=envelope.integrations,
        sent_at=envelope.sent_at,
    )


def decoded(raw: bytes, item: WireEvent | Rejection | None) -> WireEvent | Rejection:
    """A ``parse_body`` item's decoding: ``item``, or the raw event decoded when it is None."""
    return _decode_event(raw) if item is None else item


def _subject_hashes(
    items: Sequence[tuple[bytes, WireEvent | Rejection | None]], secret: bytes
) -> dict[str, str]:
    """The people a request's events name, read before the events are decoded: each string
    ``userId`` and ``anonymousId`` (``IdProbe``: just those two fields are decoded) in the
    form sanitizing gives it, with its subject hash. An id read otherwise (a number, an event
    that is not JSON) is left out: the handler looks up what is missing after sanitizing."""
    hashes: dict[str, str] = {}
    for raw, item in items:
        if isinstance(item, WireEvent):
            ids: tuple[object, object] = (item.user_id, item.anonymous_id)
        elif item is None:
            try:
                probe = ID_PROBE_DECODER.decode(raw)
            except (msgspec.DecodeError, RecursionError):  # its decoding rejects it later
                continue
            ids = (probe.user_id, probe.anonymous_id)
        else:
            continue
        for value in ids:
            if type(value) is str:
                text = normalize_id(value)
                if text and text not in hashes:
                    hashes[text] = subject_hash(text, secret)
    return hashes


def _split_batch(body: bytes, unusable: HttpError) -> BatchEnvelope:
    """Split a batch msgspec refused as a whole (one event too deep, or holding a value that
    is not JSON) into raw events, each decoded on its own later. The envelope's other members
    must be valid; ``unusable`` is raised when they or the structure are not."""
    try:
        members = jsonscan.object_members(body)
        raw_batch = members.pop(b'"batch"', None)
        if raw_batch is None:
            raise HttpError(
                400, "invalid_batch", "a batch body needs a `batch` array", path="batch"
            )
        shallow = b"{" + b",".join(k + b":" + v for k, v in members.items()) + b"}"
        envelope = BATCH_DECODER.decode(shallow[:-1] + (b"," if members else b"") + b'"batch":[]}')
        items = [msgspec.Raw(item) for item in jsonscan.array_items(raw_batch)]
    except (jsonscan.ScanError, msgspec.DecodeError, RecursionError) as exc:
        raise unusable from exc
    return msgspec.structs.replace(envelope, batch=items)


def authenticate(routing: Routing, request: web.Request, body_key: str | None) -> SourceConfig:
    """The source of the first write key given: the HTTP Basic user name, ``writeKey`` in the
    body, ``writeKey`` in the query string (parsed only when the others are absent)."""
    key = basic_auth_key(request.headers.get("Authorization")) or body_key
    if not key:
        key = request.query.get("writeKey")
    if key:
        source = routing.sources_by_key.get(key)
        if source is not None:
            return source
        raise HttpError(401, "invalid_write_key", "the write key is not known")
    raise HttpError(
        401,
        "missing_write_key",
        "send the write key as HTTP Basic user name or as `writeKey` in the body",
    )


async def ingest(request: web.Request) -> web.Response:
    """``POST /v1/{kind}``: accept events, answer once they are durably queued."""
    state = request.app[STATE]
    kind = request.match_info["kind"].lower()
    if kind not in ROUTE_TYPES:
        raise HttpError(404, "not_found", f"unknown endpoint /v1/{kind}")
    route_type = ROUTE_TYPES[kind]
    if state.inflight >= state.max_inflight:
        state.stats.add("router_requests_throttled_total", reason="inflight")
        raise HttpError(429, "rate_limited", "too many requests in flight", retry_after=1)
    if state.backlogged:
        state.stats.add("router_requests_throttled_total", reason="backlog")
        raise HttpError(
            429,
            "backlog",
            "the event queue is near Redis' memory limit; retry later",
            retry_after=state.settings.retry_after_s,
        )
    state.inflight += 1
    try:
        return await _ingest(request, state, route_type)
    finally:
        state.inflight -= 1


async def _ingest(
    request: web.Request, state: AppState, route_type: EventType | None
) -> web.Response:
    route = "batch" if route_type is None else route_type.value
    with ingest_trace(state.tracer, request.headers, route=route) as (span, trace_parent):
        try:
            response = await _accept(
                request, state, route_type, route, span=span, trace_parent=trace_parent
            )
        except HttpError as error:
            set_span_attributes(span, status=error.status, reason=error.code)
            raise
        set_span_attributes(span, status=response.status)
        return response


async def _accept(
    request: web.Request,
    state: AppState,
    route_type: EventType | None,
    route: str,
    *,
    span: Span,
    trace_parent: str | None,
) -> web.Response:
    routing = state.routing
    limits = routing.file.limits
    # No work before the write key is known: a key in the header or the query string is
    # checked before the body is read, one in the body before the body is decoded.
    source = None
    if basic_auth_key(request.headers.get("Authorization")) or request.query.get("writeKey"):
        source = authenticate(routing, request, None)
    body = await read_body(request, limits.max_request_bytes)
    if source is None:
        source = authenticate(routing, request, _probe_key(body))
    parsed = parse_body(
        body, route_type, limits.max_event_bytes, limits.max_batch_events, decode=False
    )
    set_span_attributes(span, source=source.id)
    state.stats.add(
        "router_events_received_total", amount=len(parsed.items), source=source.id, route=route
    )
    intake = _Intake(state, source.id, route, route_type, parsed)
    signals = signals_from_headers(request.headers.items(), routing.policy.geo_header)
    try:
        plan = await _plan(state, intake, signals, source.may_grant, trace_parent, span=span)
        _count_plan(state, plan)
        writes = intake.writes + _deliveries(intake.encoded, state.routing.partitions)
        consent_audit: list[tuple[AuditKind, dict[str, Any]]] = []
        with stage_span(state.tracer, "enqueue", parent=span):
            if plan.updates and state.consent is not None:
                consent_audit = await _write_consent(state, source, plan)
            await state.enqueuer.submit(writes)
    except (QueueUnavailableError, RedisError, OSError) as exc:
        state.stats.add("router_requests_unavailable_total", route=route)
        raise HttpError(
            503,
            "queue_unavailable",
            "the event queue is unavailable; retry later",
            retry_after=state.settings.retry_after_s,
        ) from exc
    accepted = intake.accepted
    rejected = intake.rejected
    queued = {d: len(items) for d, items in intake.encoded.items()}
    state.stats.add("router_events_accepted_total", amount=accepted, source=source.id, route=route)
    _observe(state, source.id, plan, consent_audit, events=accepted, queued=queued)

    if accepted or not rejected:
        body_out: dict[str, Any] = {"success": True}
        if rejected:
            body_out["rejected"] = rejected
        return json_response(body_out)
    if route_type is not None:
        first = rejected[0]
        raise HttpError(400, first["code"], first["message"], path=first["path"], details=rejected)
    raise HttpError(
        400, "no_valid_events", "no event of the batch could be accepted", details=rejected
    )


class _Intake:
    """A request's events on their way in: decoded and sanitized slice by slice (``take``),
    the rejections answered and quarantined, the deliveries encoded as they are planned
    (``keep``)."""

    state: AppState
    source_id: str
    route: str
    route_type: EventType | None
    parsed: _Parsed
    received_at: datetime
    limits: Limits
    accepted: int
    rejected: list[dict[str, Any]]
    """The answer's ``rejected`` entries, in index order."""
    writes: list[Write | Deliveries]
    """The rejections' quarantine writes."""
    encoded: dict[str, list[bytes]]
    """Per destination id, its encoded queue items, in event order."""

    def __init__(
        self,
        state: AppState,
        source_id: str,
        route: str,
        route_type: EventType | None,
        parsed: _Parsed,
    ) -> None:
        limits = state.routing.file.limits
        self.state = state
        self.source_id = source_id
        self.route = route
        self.route_type = route_type
        self.parsed = parsed
        self.received_at = datetime.now(UTC)
        self.limits = _event_limits(limits.max_string_chars, limits.max_depth)
        self.accepted = 0
        self.rejected = []
        self.writes = []
        self.encoded = {}

    def take(self, start: int, end: int) -> list[Event]:
        """The events of items ``start`` to ``end``, decoded and sanitized; the others are
        rejected (answered, quarantined, counted)."""
        parsed = self.parsed
        events: list[Event] = []
        for index in range(start, min(end, len(parsed.items))):
            raw, item = parsed.items[index]
            wire = decoded(raw, item)
            if isinstance(wire, Rejection):
                outcome: Event | Rejection = wire
            else:
                outcome = sanitize(
                    wire,
                    route_type=self.route_type,
                    received_at=self.received_at,
                    new_id=_new_id,
                    limits=self.limits,
                    batch_context=parsed.context,
                    batch_integrations=parsed.integrations,
                    batch_sent_at=parsed.sent_at,
                    raw=raw,
                )
            if isinstance(outcome, Rejection):
                self._reject(index, outcome, raw)
            else:
                events.append(outcome)
        self.accepted += len(events)
        return events

    def _reject(self, index: int, rejection: Rejection, raw: bytes) -> None:
        state = self.state
        self.rejected.append(
            {
                "index": index,
                "code": rejection.code,
                "path": rejection.path,
                "message": rejection.message,
            }
        )
        self.writes.append(
            quarantine_write(
                self.source_id,
                self.route,
                index,
                rejection,
                raw,
                now=self.received_at,
                retention_days=state.settings.quarantine_retention_days,
                sealer=state.sealer,
                subject_secret=state.subject_secret,
            )
        )
        state.stats.add("router_events_rejected_total", source=self.source_id, code=rejection.code)

    def keep(self, plan: RequestPlan) -> None:
        """Encode the deliveries planned so far and take them out of ``plan``."""
        for destination_id, items in plan.deliveries.items():
            self.encoded.setdefault(destination_id, []).extend(
                [ITEM_ENCODER.encode(item) for item in items]
            )
        plan.deliveries.clear()


async def _plan(
    state: AppState,
    intake: _Intake,
    signals: RequestSignals,
    may_grant: bool,
    trace_parent: str | None,
    *,
    span: Span,
) -> RequestPlan:
    """Look up the request's people (one round trip), then decode, sanitize, plan and encode
    its events slice by slice, yielding to the event loop between slices (``span``: the
    ingest's, the current span).

    The people are read from the raw events (``_subject_hashes``) so that the lookup's await
    comes before any event is decoded: each slice then goes from raw JSON to encoded queue
    items, and is freed, while the CPU's caches hold it. Events decoded before the await were
    cold after it, when other requests had run: planning a distinct-people event took 2-3 us
    more, freeing it 4-5 us more. An id the probe read otherwise than sanitizing did is
    looked up before its slice is planned."""
    secret = state.subject_secret
    with stage_span(state.tracer, "consent", parent=span):
        known = _subject_hashes(intake.parsed.items, secret)
        suppressed, records = await _lookups(state, sorted(known.values()))
    with stage_span(state.tracer, "plan", parent=span):
        planner = RequestPlanner(
            state.routing,  # one configuration for the whole request, even across a reload
            signals,
            suppressed=suppressed,
            records=records,
            may_grant=may_grant,
            audit_key=state.audit_key if state.audit is not None else None,
            collect_paths=state.monitor is not None,
            trace=trace_parent,
        )
        for start in range(0, len(intake.parsed.items), PLAN_SLICE):
            if start:
                await asyncio.sleep(0)  # let other requests run between slices of a big batch
            events = intake.take(start, start + PLAN_SLICE)
            subjects, missing = _subjects_of(events, known, secret)
            if missing:
                more_suppressed, more_records = await _lookups(state, sorted(missing))
                suppressed |= more_suppressed
                records.update(more_records)
            planner.add(events, subjects)
            intake.keep(planner.plan)
    return planner.plan


def _subjects_of(
    events: Sequence[Event], known: dict[str, str], secret: bytes
) -> tuple[list[tuple[str, ...]], set[str]]:
    """Each event's subject hashes, by id from ``known`` (the ids looked up already); those
    of the ids it did not hold are added to it and returned apart, to be looked up."""
    subjects: list[tuple[str, ...]] = []
    missing: set[str] = set()
    for event in events:
        hashes: list[str] = []
        for identifier in event.subject_ids:
            found = known.get(identifier)
            if found is None:
                found = known[identifier] = subject_hash(identifier, secret)
                missing.add(found)
            hashes.append(found)
        subjects.append(tuple(hashes))
    return subjects, missing


def _count_plan(state: AppState, plan: RequestPlan) -> None:
    """The plan's skips and PII detections, as counters (once per request, not per event)."""
    for (destination_id, reason), count in plan.skipped.items():
        state.stats.add(
            "router_events_skipped_total",
            amount=count,
            destination=destination_id,
            reason=reason.value,
            stage="ingest",
        )
    for detection, count in plan.detections.items():
        state.stats.add(
            "router_pii_detections_total",
            amount=count,
            destination=detection.destination,
            kind=detection.kind,
            field=detection.field,
            status=detection.status,
        )


def _deliveries(encoded: dict[str, list[bytes]], partitions: Mapping[str, int]) -> list[Deliveries]:
    """Each destination's encoded queue items (the enqueuer packs them into entries); a
    request's deliveries to a destination go to one of its partitions, picked at random."""
    return [
        Deliveries(
            queue_key(destination_id, _partition(partitions.get(destination_id, 1))),
            items,
            destination_id,
        )
        for destination_id, items in encoded.items()
    ]


async def _write_consent(
    state: AppState, source: SourceConfig, plan: RequestPlan
) -> list[tuple[AuditKind, dict[str, Any]]]:
    """Store the consent events' choices (one round trip); count them, refusals too, and
    return their audit records.

    A grant its source may not make is not stored (the event itself was routed as planned):
    counted as ``router_consent_writes_total{status="forbidden"}`` and audited with the
    refused categories."""
    assert state.consent is not None
    results = await state.consent.write_many(plan.updates, may_grant=source.may_grant)
    forbidden = sum(1 for result in results if result.refused)
    for status, amount in (("written", len(results) - forbidden), ("forbidden", forbidden)):
        if amount:
            state.stats.add(
                "router_consent_writes_total",
                amount=amount,
                route="event",
                source=source.id,
                status=status,
            )
    if state.audit is None:
        return []
    return [
        consent_written(
            record, ids, "event", state.audit_key, source_id=source.id, refused=result.refused
        )
        for (_, record), ids, result in zip(plan.updates, plan.update_ids, results, strict=True)
    ]


def _observe(
    state: AppState,
    source_id: str,
    plan: RequestPlan,
    consent_audit: list[tuple[AuditKind, dict[str, Any]]],
    *,
    events: int,
    queued: dict[str, int],
) -> None:
    """Tell the monitor and the audit trail about an accepted request (memory only):
    ``events`` accepted, ``queued`` per destination."""
    if state.monitor is not None:
        state.monitor.observe(source_id, queued, plan.paths, events=events)
        for destination_id, kinds in plan.pii.items():
            state.monitor.observe_pii(destination_id, kinds)
    if state.audit is not None:
        if consent_audit:
            state.audit.record_many(consent_audit)
        state.audit.record_decisions(plan.decision_audit)


async def _lookups(
    state: AppState, hashes: list[str]
) -> tuple[set[str], dict[str, ConsentRecord | None]]:
    """Suppressed subjects and stored consent: free for cached subjects, else one round trip."""
    if not hashes:
        return set(), {}
    if state.consent is not None:
        records, suppressed = await state.consent.lookup_all(hashes)
        return suppressed, records
    return await suppressed_among(state.redis, hashes), {}


def _partition(count: int) -> int:
    return random.randrange(count) if count > 1 else 0  # noqa: S311 - spreading, not secrecy
