"""The destination protocol and the one retry table.

A connector is configured, built and run in three separate steps:

1. ``settings_model`` (pydantic) validates the routing file's ``settings`` block; no network.
2. ``encode(batch, now)`` turns minimized deliveries into HTTP requests. It is pure: no I/O, no
   clock (``now`` is passed in). Events the platform would refuse (too old, missing an id...)
   come back as ``Drop`` values with a bounded reason, so one bad event never fails a batch.
3. The delivery worker sends each request through a ``destinations.transport.Transport`` and
   asks ``interpret`` what the answer means. Connectors never retry or sleep: only the worker
   does, using ``Outcome``.

Most connectors only encode one event at a time (``encode_event``) and declare how events are
joined into a request body (``packing``, ``request``): the shared ``Connector.encode`` loop
encodes each event once and packs them greedily into as few requests as the limits allow.
A platform with a deletion API builds its request with ``deletion_request`` and reads the answer
with ``interpret_deletion``; ``router.compliance.erasure`` sends it.
"""

from __future__ import annotations

import abc
import email.utils
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Generic, Literal, TypeAlias, TypeVar

import msgspec
from pydantic import BaseModel

from destinations.payload import header


class ConsentFacts(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """What a connector may know about the person's consent (no raw consent strings).

    The router fills it from its consent record; connectors use it for platform privacy flags
    (GA4 ``consent.ad_user_data``, Meta ``data_processing_options``, TikTok ``limited_data_use``).
    """

    granted: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    gpc: bool = False
    us_opt_out: bool = False
    ad_user_data: bool | None = None
    ad_personalization: bool | None = None


PayloadT = TypeVar("PayloadT")


class DeliveryOf(msgspec.Struct, Generic[PayloadT], frozen=True, gc=False):
    """One event, already minimized for one destination, as it waits in that destination's queue.

    ``payload`` is the Segment-shaped event holding only the allowlisted (and transformed)
    fields. ``message_id``, ``type``, ``event`` and ``timestamp`` are always present because
    every platform needs a dedup id, an event name and an event time.

    Generic in the payload only so that one struct serves both readings of a queue entry:
    ``Delivery`` (decoded payload, what connectors encode) and ``DeliveryOf[msgspec.Raw]`` (the
    payload left as raw JSON until a worker needs it, ``router.queue.items``).
    """

    message_id: str
    type: str
    timestamp: datetime
    payload: PayloadT
    event: str | None = None
    consent: ConsentFacts = ConsentFacts()


Delivery: TypeAlias = DeliveryOf[dict[str, Any]]
"""A delivery with its payload decoded (construct hot-path ones with ``DeliveryOf(...)``: calling
the alias costs a typing indirection)."""


class HttpRequest(msgspec.Struct, frozen=True):
    """An encoded request. ``indices`` are the positions in the batch it carries.

    ``secrets`` lists substrings (API keys in a URL or header) that are masked whenever the
    request is shown (outbox, explain).
    """

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    indices: tuple[int, ...]
    secrets: tuple[str, ...] = ()

    def redacted(self) -> dict[str, Any]:
        """The request as a JSON-able dict with secrets masked, for people to read."""

        def mask(text: str) -> str:
            for secret in self.secrets:
                if secret:
                    text = text.replace(secret, "***")
            return text

        try:
            body: Any = msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            body = self.body.decode("utf-8", "replace")
        masked_body = msgspec.json.decode(mask(msgspec.json.encode(body).decode()))
        return {
            "method": self.method,
            "url": mask(self.url),
            "headers": {k: mask(v) for k, v in self.headers.items()},
            "body": masked_body,
        }


class Drop(msgspec.Struct, frozen=True):
    """An event the encoder refused, with a bounded reason code and a human detail."""

    index: int
    reason: str
    detail: str = ""


class Omission(msgspec.Struct, frozen=True):
    """A field left out of an event that is still sent, because the platform would refuse it
    or it could never match: ``field`` and ``reason`` are bounded codes (``value`` /
    ``invalid_currency``, ``phone`` / ``no_country_code``...), safe for metric labels."""

    index: int
    field: str
    reason: str


class Encoded(msgspec.Struct, frozen=True):
    """What ``encode`` returns: the requests to send and the events dropped on the way.

    ``omitted`` lists the fields removed from events that are sent; ``matched`` gives, for
    connectors that match people (GA4, Meta, TikTok), the kinds of match keys each sent event
    carries (``email``, ``phone``, ``external_id``, ``click_id``...), by batch index.
    """

    requests: list[HttpRequest]
    dropped: list[Drop] = msgspec.field(default_factory=list)
    omitted: list[Omission] = msgspec.field(default_factory=list)
    matched: dict[int, tuple[str, ...]] = msgspec.field(default_factory=dict)


class HttpResponse(msgspec.Struct, frozen=True):
    """A platform's answer, as the worker hands it to ``interpret``.

    ``received_at`` is stamped by the transport: the ``now`` of an HTTP-date ``Retry-After``.
    """

    status: int
    headers: dict[str, str]
    body: bytes
    received_at: datetime | None = None


OutcomeKind = Literal["ok", "retry", "permanent"]


class Outcome(msgspec.Struct, frozen=True):
    """What a response means.

    ``kind`` applies to the whole request except the positions in ``failed`` (indices into
    ``HttpRequest.indices``), which failed permanently with their own reason: that is how a
    partial failure is reported. ``reason`` is a bounded code safe for metric labels.
    """

    kind: OutcomeKind
    reason: str = ""
    retry_after_s: float | None = None
    failed: dict[int, str] = msgspec.field(default_factory=dict)
    event_specific: bool = True
    """A permanent failure may come from some of the request's events, so bisecting can
    isolate them; False for request-wide causes (bad credentials, unknown pixel)."""


def classify_status(status: int) -> OutcomeKind:
    """The one retry table: 2xx ok; 408, 429 and 5xx retry; every other status is permanent."""
    if 200 <= status < 300:
        return "ok"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "permanent"


def parse_retry_after(value: str | None, now: datetime | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds, or an HTTP date counted
    from ``now``; a date without a ``now`` to count from is ignored)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if now is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def retry_after_of(response: HttpResponse) -> float | None:
    """The response's ``Retry-After`` in seconds, if it has a usable one."""
    return parse_retry_after(header(response.headers, "retry-after"), response.received_at)


def outcome_from_status(response: HttpResponse) -> Outcome:
    """The default interpretation of a response, from its status alone."""
    kind = classify_status(response.status)
    retry_after = None
    if kind == "retry":
        retry_after = retry_after_of(response)
    reason = "" if kind == "ok" else f"http_{response.status}"
    return Outcome(kind=kind, reason=reason, retry_after_s=retry_after)


SettingsT = TypeVar("SettingsT", bound=BaseModel)

FieldRequirement = tuple[str, ...]
"""Allowlist paths of which at least one must be listed (``("anonymousId", "userId")``)."""

Notes = list[tuple[str, str]]
"""``(field, reason)`` of the fields ``encode_event`` left out of an event it still sends."""

_ENCODER: Final = msgspec.json.Encoder()


class DropReason(msgspec.Struct, frozen=True):
    """Why ``encode_event`` refuses an event: a bounded ``reason`` and a human detail."""

    reason: str
    detail: str = ""


class EventPayload(msgspec.Struct, frozen=True, gc=False):
    """One event as ``encode_event`` made it, before it is joined into a request body."""

    body: dict[str, Any]
    """The event as one element of the request's events array."""
    shared: dict[str, Any] = msgspec.field(default_factory=dict)
    """Request-level fields the event needs (GA4's ``client_id``, ``user_data``...): events
    with different ones never share a request; ``packing`` puts them in the body's head."""
    matched: tuple[str, ...] | None = None
    """The kinds of match keys the event carries (``Encoded.matched``), for connectors that
    match people."""


class Packing(msgspec.Struct, frozen=True):
    """How encoded events are joined into a body: ``head + e1,e2,... + tail``, with at most
    ``max_events`` events and ``max_bytes`` bytes (``None``: no byte limit) per body."""

    head: bytes
    tail: bytes
    max_events: int
    max_bytes: int | None = None
    too_large_detail: str | None = None
    """The detail of a ``too_large`` drop (default: the byte limit)."""


class DeletionSkipped(msgspec.Struct, frozen=True):
    """A deletion the connector will not request, with a bounded reason (``no_ids``...)."""

    reason: str


class Connector(abc.ABC, Generic[SettingsT]):
    """Base class of every destination connector.

    Subclasses set the class variables and either implement ``encode_event``, ``packing`` and
    ``request`` (the shared ``encode`` loop does the rest) or override ``encode`` when a batch
    is not a list of independent events (webhooks sign the whole body). They override
    ``interpret`` when the platform's answers need more than the status code (GA4 answers 2xx to
    bad payloads; Amplitude and Mixpanel report which events of a batch failed).
    """

    type_name: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]
    required_fields: ClassVar[tuple[FieldRequirement, ...]] = ()
    max_batch_size: ClassVar[int] = 1
    split_on_rejection: ClassVar[bool] = False
    """A permanent failure of a multi-event request means one event is bad: bisect to find it."""
    forward_traceparent: ClassVar[bool] = False
    """Send the W3C ``traceparent`` header (webhooks yes, third-party ad platforms no)."""
    identifier_fields: ClassVar[Mapping[str, str]] = {}
    """Payload paths this connector reads as identifiers of a kind (``email``, ``phone``,
    ``ip``) and normalizes or hashes itself: the PII safety net lets that kind through there."""
    hashed_fields: ClassVar[frozenset[str]] = frozenset()
    """Payload paths this connector only ever sends SHA-256 hashed (the record of processing)."""
    recipient_name: ClassVar[str] = ""
    """Who receives what this connector sends (the record of processing's recipient)."""

    def __init__(self, destination_id: str, settings: SettingsT) -> None:
        self.destination_id = destination_id
        self.settings = settings

    def recipient(self) -> str:
        """The recipient of this destination's data, as a privacy notice names it."""
        return self.recipient_name or self.type_name

    def encode(self, batch: Sequence[Delivery], now: datetime) -> Encoded:
        """Turn deliveries into requests; pure.

        Each event is encoded once; events sharing request-level fields are packed greedily,
        in batch order, into bodies within the ``packing`` limits. An event too large even
        alone is dropped (``too_large``).
        """
        dropped: list[Drop] = []
        omitted: list[Omission] = []
        matched: dict[int, tuple[str, ...]] = {}
        groups: dict[bytes, list[tuple[int, bytes]]] = {}
        for index, delivery in enumerate(batch):
            notes: Notes = []
            event = self.encode_event(delivery, now, notes)
            if isinstance(event, DropReason):
                dropped.append(Drop(index, event.reason, event.detail))
                continue
            omitted.extend(Omission(index, field, reason) for field, reason in notes)
            if event.matched is not None:
                matched[index] = event.matched
            shared = _ENCODER.encode(event.shared) if event.shared else b""
            groups.setdefault(shared, []).append((index, _ENCODER.encode(event.body)))
        requests: list[HttpRequest] = []
        for shared, events in groups.items():
            packing = self.packing(shared)
            bodies, too_large = pack(events, packing)
            detail = packing.too_large_detail or f"event over {packing.max_bytes} bytes"
            dropped.extend(Drop(index, "too_large", detail) for index in too_large)
            requests.extend(self.request(body, indices) for body, indices in bodies)
        requests.sort(key=lambda request: request.indices[0])
        dropped.sort(key=lambda drop: drop.index)
        gone = {drop.index for drop in dropped}
        return Encoded(
            requests=requests,
            dropped=dropped,
            omitted=[o for o in omitted if o.index not in gone],
            matched={i: keys for i, keys in matched.items() if i not in gone},
        )

    def encode_event(
        self, delivery: Delivery, now: datetime, notes: Notes
    ) -> EventPayload | DropReason:
        """One event for the shared ``encode`` loop, or why it is not sent; pure. Fields left
        out of an event that is still sent go to ``notes``."""
        raise NotImplementedError(f"{type(self).__name__} overrides encode instead")

    def packing(self, shared: bytes) -> Packing:
        """How events with these request-level fields (their JSON, ``b""`` when none) are
        joined into bodies."""
        raise NotImplementedError(f"{type(self).__name__} overrides encode instead")

    def request(self, body: bytes, indices: tuple[int, ...]) -> HttpRequest:
        """The request carrying ``body``, made of the events at ``indices``."""
        raise NotImplementedError(f"{type(self).__name__} overrides encode instead")

    def interpret(self, response: HttpResponse, request: HttpRequest) -> Outcome:
        """What the platform's answer means for the request's events."""
        del request
        return outcome_from_status(response)

    def deletion_request(self, ids: Sequence[str]) -> HttpRequest | DeletionSkipped | None:
        """The platform's request to delete the people with these ids (as the platform
        received them); ``None`` when the platform has no deletion API. Pure."""
        del ids
        return None

    def interpret_deletion(self, response: HttpResponse) -> dict[str, Any]:
        """The answer to ``deletion_request`` as receipt fields: ``status`` (``scheduled``,
        ``retry``, ``failed``), a bounded ``reason`` and platform details, never the ids."""
        kind = classify_status(response.status)
        if kind == "ok":
            return {"status": "scheduled", "reason": ""}
        status = "retry" if kind == "retry" else "failed"
        return {"status": status, "reason": f"http_{response.status}"}


def pack(
    events: Sequence[tuple[int, bytes]], packing: Packing
) -> tuple[list[tuple[bytes, tuple[int, ...]]], list[int]]:
    """Encoded events (``(index, json)``) joined greedily, in order, into bodies within the
    limits: ``(body, indices)`` per body, and the indices of events too large even alone.
    Linear: each event's bytes are copied once."""
    overhead = len(packing.head) + len(packing.tail)
    limit = packing.max_bytes
    bodies: list[tuple[bytes, tuple[int, ...]]] = []
    too_large: list[int] = []
    current: list[tuple[int, bytes]] = []
    size = overhead

    def flush() -> None:
        body = packing.head + b",".join(event for _, event in current) + packing.tail
        bodies.append((body, tuple(index for index, _ in current)))

    for index, event in events:
        if limit is not None and overhead + len(event) > limit:
            too_large.append(index)
            continue
        extra = len(event) + (1 if current else 0)
        full = len(current) >= packing.max_events
        if current and (full or (limit is not None and size + extra > limit)):
            flush()
            current, size, extra = [], overhead, len(event)
        current.append((index, event))
        size += extra
    if current:
        flush()
    return bodies, too_large
