"""The destination protocol and the one retry table.

A connector is configured, built and run in three separate steps:

1. ``settings_model`` (pydantic) validates the routing file's ``settings`` block; no network.
2. ``encode(batch, now)`` turns minimized deliveries into HTTP requests. It is pure: no I/O, no
   clock (``now`` is passed in). Events the platform would refuse (too old, missing an id...)
   come back as ``Drop`` values with a bounded reason, so one bad event never fails a batch.
3. The delivery worker sends each request with ``send_request`` and asks ``interpret`` what the
   answer means. Connectors never retry or sleep: only the worker does, using ``Outcome``.
"""

from __future__ import annotations

import abc
import email.utils
import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

import aiohttp
import msgspec
from pydantic import BaseModel

from destinations.errors import TransportError
from destinations.payload import header, pack


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


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """One event, already minimized for one destination, as it waits in that destination's queue.

    ``payload`` is the Segment-shaped event holding only the allowlisted (and transformed)
    fields. ``message_id``, ``type``, ``event`` and ``timestamp`` are always present because
    every platform needs a dedup id, an event name and an event time.
    """

    message_id: str
    type: str
    timestamp: datetime
    payload: dict[str, Any]
    event: str | None = None
    consent: ConsentFacts = ConsentFacts()


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
    """A platform's answer, as the worker hands it to ``interpret``."""

    status: int
    headers: dict[str, str]
    body: bytes


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


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date)."""
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
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def outcome_from_status(response: HttpResponse) -> Outcome:
    """The default interpretation of a response, from its status alone."""
    kind = classify_status(response.status)
    retry_after = None
    if kind == "retry":
        retry_after = parse_retry_after(header(response.headers, "retry-after"))
    reason = "" if kind == "ok" else f"http_{response.status}"
    return Outcome(kind=kind, reason=reason, retry_after_s=retry_after)


SettingsT = TypeVar("SettingsT", bound=BaseModel)

FieldRequirement = tuple[str, ...]
"""Allowlist paths of which at least one must be listed (``("anonymousId", "userId")``)."""


class Connector(abc.ABC, Generic[SettingsT]):
    """Base class of every destination connector.

    Subclasses set the class variables, implement ``encode``, and override ``interpret`` when the
    platform's answers need more than the status code (GA4 answers 2xx to bad payloads; Amplitude
    and Mixpanel report which events of a batch failed).
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

    def __init__(self, destination_id: str, settings: SettingsT) -> None:
        self.destination_id = destination_id
        self.settings = settings

    @abc.abstractmethod
    def encode(self, batch: Sequence[Delivery], now: datetime) -> Encoded:
        """Turn deliveries into requests; pure."""

    def interpret(self, response: HttpResponse, request: HttpRequest) -> Outcome:
        """What the platform's answer means for the request's events."""
        del request
        return outcome_from_status(response)

    async def healthcheck(self, session: aiohttp.ClientSession) -> bool:
        """Whether the platform looks reachable and the credentials valid; default: assume so."""
        del session
        return True


def packed_requests(
    encoded: Sequence[tuple[int, bytes]],
    dropped: Sequence[Drop],
    *,
    head: bytes,
    tail: bytes,
    max_events: int,
    max_bytes: int,
    url: str,
    headers: dict[str, str],
    secrets: tuple[str, ...],
    omitted: Sequence[Omission] = (),
    matched: Mapping[int, tuple[str, ...]] | None = None,
) -> Encoded:
    """Encoded events (``(index, json)``) joined into as few POSTs as the limits allow, each
    body ``head + e1,e2,... + tail``; an event too large even alone is dropped (``too_large``)."""
    groups, too_large = pack(
        encoded, overhead=len(head) + len(tail), max_events=max_events, max_bytes=max_bytes
    )
    drops = [*dropped, *(Drop(i, "too_large", f"event over {max_bytes} bytes") for i in too_large)]
    requests = [
        HttpRequest(
            method="POST",
            url=url,
            headers=headers,
            body=head + b",".join(body for _, body in group) + tail,
            indices=tuple(i for i, _ in group),
            secrets=secrets,
        )
        for group in groups
    ]
    drops.sort(key=lambda drop: drop.index)
    gone = {drop.index for drop in drops}
    return Encoded(
        requests=requests,
        dropped=drops,
        omitted=[o for o in omitted if o.index not in gone],
        matched={i: keys for i, keys in (matched or {}).items() if i not in gone},
    )


_STREAM_ABOVE = 1024 * 1024


async def send_request(
    session: aiohttp.ClientSession, request: HttpRequest, timeout_s: float
) -> HttpResponse:
    """Send one request; ``TransportError`` when no HTTP answer came back. Never retries."""
    # aiohttp wants large bodies as streams (it warns about bytes over 1 MiB).
    data: bytes | io.BytesIO = request.body
    if len(request.body) > _STREAM_ABOVE:
        data = io.BytesIO(request.body)
    try:
        async with session.request(
            request.method,
            request.url,
            data=data,
            headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            body = await response.read()
            return HttpResponse(status=response.status, headers=dict(response.headers), body=body)
    except TimeoutError as exc:
        raise TransportError("timeout", f"no answer within {timeout_s:g}s") from exc
    except aiohttp.ClientError as exc:
        raise TransportError("connection_error", type(exc).__name__) from exc
