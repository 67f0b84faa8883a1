"""Amplitude: events through the HTTP V2 API, erasure through the User Privacy API.

Mapping (Segment-shaped payload -> one Amplitude event):

==========================================  ===============================================
Segment                                     Amplitude
==========================================  ===============================================
``messageId``                               ``insert_id`` (dedup per device, 7 days)
``userId`` / ``anonymousId``                ``user_id`` / ``device_id``
track ``event``                             ``event_type``
page / screen                               ``Loaded a Page`` / ``Loaded a Screen``
                                            (``page_event_type`` / ``screen_event_type``),
                                            the page ``name`` goes to ``event_properties``
identify                                    ``$identify`` with ``user_properties.$set``
                                            = ``traits``
``properties``                              ``event_properties``
``context.traits`` (track, page, screen)    ``user_properties``
``properties.revenue`` / ``currency``       ``revenue`` / ``currency`` (track only; the
                                            currency ISO 4217 or both left out, counted)
``timestamp``                               ``time`` (ms since epoch)
``context.*``                               ``ip``, ``user_agent``, ``language``, ``os_name``,
                                            ``os_version``, ``platform``, ``device_*``,
                                            ``carrier``, ``app_version``, location fields
==========================================  ===============================================

Only what the payload holds is read, so only allowlisted fields reach the wire. group and
alias are dropped (``unsupported_type``). Amplitude removes ids shorter than 5 characters (or
``min_id_length``) and rejects an event left without any id, so such events are dropped here
before sending, with ``id_too_short``, ``invalid_id`` or ``missing_id``.

Answers (``interpret``):

- 200: ok.
- 400 naming events (``events_with_invalid_fields``, ``events_with_missing_fields``,
  ``silenced_events``): those positions fail permanently; Amplitude ingested *nothing* of the
  request, so the rest comes back as ``retry`` (reason ``partial_rejection``) and the worker
  resends the request without the failed positions. Amplitude names only the first bad event
  per field, so a second bad event surfaces on the next attempt.
- 400 naming no event: permanent. For a bad API key every position is listed as failed, so
  the worker does not bisect; any other such 400 may be one bad event, so it may.
- 413: permanent ``payload_too_large``; ``split_on_rejection`` makes the worker bisect a
  multi-event request (the encoder already keeps bodies under the documented 1 MB).
- 429: retry after ``Retry-After`` or the documented 30 s pause; events of users or devices
  over their daily quota fail permanently (``daily_quota_exceeded``), as Amplitude's SDKs do.
- 5xx: retry (``insert_id`` makes the retry idempotent).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from destinations.base import (
    Connector,
    DeletionSkipped,
    Delivery,
    DropReason,
    EventPayload,
    HttpRequest,
    HttpResponse,
    Notes,
    Outcome,
    OutcomeKind,
    Packing,
    outcome_from_status,
    retry_after_of,
)
from destinations.commerce import currency_code
from destinations.payload import (
    id_text,
    is_number,
    json_object,
    mapping,
    millis,
)

ENDPOINTS = {
    "us": "https://api2.amplitude.com/2/httpapi",
    "eu": "https://api.eu.amplitude.com/2/httpapi",
}
DELETION_ENDPOINTS = {
    "us": "https://amplitude.com/api/2/deletions/users",
    "eu": "https://analytics.eu.amplitude.com/api/2/deletions/users",
}
MAX_EVENTS_PER_REQUEST = 1999
"""Growth/Enterprise plans: fewer than 2,000 events per request."""
MAX_BODY_BYTES = 1_000_000
"""Requests over 1 MB are answered 413."""
MAX_STRING_CHARS = 1024
MAX_DELETION_IDS = 100
THROTTLE_PAUSE_S = 30.0
"""Amplitude: pause a throttled user or device for 30 seconds before retrying."""
DEFAULT_MIN_ID_LENGTH = 5
INVALID_IDS = frozenset(
    {
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        '""',
        "00000000-0000-0000-0000-000000000000",
        "{}",
        "lmy47d",
        "0",
        "-1",
    }
)
"""Ids Amplitude answers 400 to (compared lower-cased)."""
RESERVED_EVENT_TYPES = frozenset({"$identify", "$groupidentify"})

_CONTEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("ip", "context.ip"),
    ("user_agent", "context.userAgent"),
    ("language", "context.locale"),
    ("os_name", "context.os.name"),
    ("os_version", "context.os.version"),
    ("platform", "context.device.type"),
    ("device_brand", "context.device.brand"),
    ("device_manufacturer", "context.device.manufacturer"),
    ("device_model", "context.device.model"),
    ("carrier", "context.network.carrier"),
    ("app_version", "context.app.version"),
    ("country", "context.location.country"),
    ("region", "context.location.region"),
    ("city", "context.location.city"),
)
"""Amplitude top-level event field <- payload path, copied when the path holds a string."""


def _groups(
    fields: tuple[tuple[str, str], ...],
) -> tuple[tuple[str | None, tuple[tuple[str, str], ...]], ...]:
    """``_CONTEXT_FIELDS`` by object under ``context`` (``None``: ``context`` itself), in order:
    each object is looked up once per event."""
    groups: list[tuple[str | None, list[tuple[str, str]]]] = []
    for field, path in fields:
        parts = path.split(".")
        assert parts[0] == "context", path
        assert len(parts) in {2, 3}, path
        group = parts[1] if len(parts) == 3 else None
        if not groups or groups[-1][0] != group:
            groups.append((group, []))
        groups[-1][1].append((field, parts[-1]))
    return tuple((group, tuple(members)) for group, members in groups)


_CONTEXT_GROUPS: Final = _groups(_CONTEXT_FIELDS)


class AmplitudeSettings(BaseModel):
    """The ``settings`` block of an ``amplitude`` destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(min_length=1)
    secret_key: str | None = Field(default=None, min_length=1)
    """Needed only for erasure (User Privacy API, Basic ``api_key:secret_key``)."""
    region: Literal["us", "eu"] = "us"
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Overrides the HTTP V2 URL of the region (tests, proxies)."""
    deletion_url: str | None = Field(default=None, pattern=r"^https?://")
    """Overrides the User Privacy API URL of the region."""
    min_id_length: int | None = Field(default=None, ge=1, le=MAX_STRING_CHARS)
    """Sent as ``options.min_id_length``; default: Amplitude's 5."""
    max_events_per_request: int = Field(default=1000, ge=1, le=MAX_EVENTS_PER_REQUEST)
    """Starter plans should use 10 (Amplitude's recommendation)."""
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=4096, le=MAX_BODY_BYTES)
    page_event_type: str = Field(default="Loaded a Page", min_length=1)
    screen_event_type: str = Field(default="Loaded a Screen", min_length=1)
    deletion_requester: str | None = None
    """``requester`` recorded by Amplitude on deletion jobs (an email address)."""


class AmplitudeConnector(Connector[AmplitudeSettings]):
    """Amplitude HTTP V2 API."""

    type_name: ClassVar[str] = "amplitude"
    identifier_fields: ClassVar[Mapping[str, str]] = {"context.ip": "ip"}
    recipient_name: ClassVar[str] = "Amplitude (analytics)"
    settings_model: ClassVar[type[BaseModel]] = AmplitudeSettings
    required_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("userId", "anonymousId"),)
    max_batch_size: ClassVar[int] = 1000
    split_on_rejection: ClassVar[bool] = True

    @property
    def url(self) -> str:
        """Where events are posted."""
        return self.settings.endpoint_url or ENDPOINTS[self.settings.region]

    @property
    def min_id_length(self) -> int:
        """The shortest id Amplitude keeps."""
        return self.settings.min_id_length or DEFAULT_MIN_ID_LENGTH

    def packing(self, shared: bytes) -> Packing:
        """``{"api_key":…,"events":[…]}`` plus ``options`` when ``min_id_length`` is set."""
        del shared
        head = b'{"api_key":' + msgspec.json.encode(self.settings.api_key) + b',"events":['
        tail = b"]"
        if self.settings.min_id_length is not None:
            options = {"min_id_length": self.settings.min_id_length}
            tail += b',"options":' + msgspec.json.encode(options)
        return Packing(
            head=head,
            tail=tail + b"}",
            max_events=self.settings.max_events_per_request,
            max_bytes=self.settings.max_body_bytes,
        )

    def request(self, body: bytes, indices: tuple[int, ...]) -> HttpRequest:
        """A POST to the HTTP V2 API."""
        return HttpRequest(
            method="POST",
            url=self.url,
            headers={"Content-Type": "application/json", "Accept": "*/*"},
            body=body,
            indices=indices,
            secrets=(self.settings.api_key,),
        )

    def encode_event(
        self, delivery: Delivery, now: datetime, notes: Notes
    ) -> EventPayload | DropReason:
        """The Amplitude event for one delivery, or why it cannot be sent (Amplitude states
        no time window: ``now`` is unused)."""
        del now
        payload = delivery.payload
        event: dict[str, Any] = {}
        ids = self._ids(payload)
        if isinstance(ids, DropReason):
            return ids
        event.update(ids)

        if delivery.type == "track":
            if not delivery.event:
                return DropReason("missing_event", "track without an event name")
            if delivery.event in RESERVED_EVENT_TYPES or delivery.event.startswith("[Amplitude]"):
                return DropReason("reserved_event_name", "event name reserved by Amplitude")
            event["event_type"] = delivery.event[:MAX_STRING_CHARS]
        elif delivery.type in ("page", "screen"):
            event["event_type"] = (
                self.settings.page_event_type
                if delivery.type == "page"
                else self.settings.screen_event_type
            )
        elif delivery.type == "identify":
            traits = mapping(payload.get("traits"))
            if not traits:
                return DropReason("no_traits", "identify without traits sets nothing")
            event["event_type"] = "$identify"
            event["user_properties"] = {"$set": traits}
        else:
            return DropReason("unsupported_type", f"{delivery.type} is not sent to Amplitude")

        event["time"] = millis(delivery.timestamp)
        event["insert_id"] = delivery.message_id[:MAX_STRING_CHARS]

        # path_value(payload, "context.x.y"), reading each object once.
        context = mapping(payload.get("context"))
        if delivery.type != "identify":
            given = mapping(payload.get("properties"))
            properties = dict(given)
            name = id_text(payload.get("name"))
            if name and delivery.type in ("page", "screen"):
                properties.setdefault("name", name)
            if properties:
                event["event_properties"] = properties
            user_properties = mapping(context.get("traits"))
            if user_properties:
                event["user_properties"] = dict(user_properties)
            if delivery.type == "track":
                revenue = given.get("revenue")
                if is_number(revenue):
                    # HTTP V2: currency is an ISO 4217 code; Amplitude answers 400 for the
                    # event otherwise, so an invalid one goes with the revenue it prices.
                    raw = given.get("currency")
                    currency = currency_code(raw)
                    if raw is not None and currency is None:
                        notes.append(("value", "invalid_currency"))
                    else:
                        event["revenue"] = revenue
                        if currency is not None:
                            event["currency"] = currency

        if context:
            for group, fields in _CONTEXT_GROUPS:
                node = context if group is None else mapping(context.get(group))
                if not node:
                    continue
                for field, key in fields:
                    found = node.get(key)
                    if found is None:
                        continue
                    value = id_text(found)
                    if value:
                        event[field] = value[:MAX_STRING_CHARS]
            location = mapping(context.get("location"))
            for field, key in (("location_lat", "latitude"), ("location_lng", "longitude")):
                value = location.get(key)
                if is_number(value):
                    event[field] = value
        return EventPayload(event)

    def _ids(self, payload: Mapping[str, Any]) -> dict[str, str] | DropReason:
        ids: dict[str, str] = {}
        problems: list[str] = []
        for field, key in (("user_id", "userId"), ("device_id", "anonymousId")):
            value = id_text(payload.get(key))
            if value is None:
                continue
            if value.lower() in INVALID_IDS or len(value) > MAX_STRING_CHARS:
                problems.append("invalid_id")
            elif len(value) < self.min_id_length:
                problems.append("id_too_short")
            else:
                ids[field] = value
        if ids:
            return ids
        if "id_too_short" in problems:
            return DropReason("id_too_short", f"ids shorter than {self.min_id_length} characters")
        if problems:
            return DropReason("invalid_id", "id on Amplitude's list of invalid ids")
        return DropReason("missing_id", "neither userId nor anonymousId")

    def interpret(self, response: HttpResponse, request: HttpRequest) -> Outcome:
        """Amplitude's answer, with per-event failures for 400 and 429."""
        count = len(request.indices)
        if response.status == 400:
            body = json_object(response.body)
            failed: dict[int, str] = {}
            for key, reason in (
                ("events_with_invalid_fields", "invalid_field"),
                ("events_with_missing_fields", "missing_field"),
            ):
                for positions in mapping(body.get(key)).values():
                    _mark(failed, positions, reason, count)
            _mark(failed, body.get("silenced_events"), "device_silenced", count)
            if failed:
                kind: OutcomeKind = "permanent" if len(failed) == count else "retry"
                return Outcome(kind=kind, reason="partial_rejection", failed=failed)
            if body.get("throttled_events"):
                return Outcome(kind="retry", reason="throttled", retry_after_s=THROTTLE_PAUSE_S)
            if "api key" in str(body.get("error", "")).lower():
                # Every event failed for the same reason: listing them all keeps the worker
                # from bisecting a request that no split can fix.
                everyone = dict.fromkeys(range(count), "invalid_api_key")
                return Outcome(kind="permanent", reason="invalid_api_key", failed=everyone)
            return Outcome(kind="permanent", reason="invalid_request")
        if response.status == 413:
            return Outcome(kind="permanent", reason="payload_too_large")
        if response.status == 429:
            body = json_object(response.body)
            retry_after = retry_after_of(response)
            failed = self._over_quota(body, request)
            over: OutcomeKind = "permanent" if failed and len(failed) == count else "retry"
            return Outcome(
                kind=over,
                reason="throttled",
                retry_after_s=THROTTLE_PAUSE_S if retry_after is None else retry_after,
                failed=failed,
            )
        return outcome_from_status(response)

    @staticmethod
    def _over_quota(body: Mapping[str, Any], request: HttpRequest) -> dict[int, str]:
        users = mapping(body.get("exceeded_daily_quota_users"))
        devices = mapping(body.get("exceeded_daily_quota_devices"))
        if not users and not devices:
            return {}
        events = json_object(request.body).get("events")
        if not isinstance(events, list):
            return {}
        failed: dict[int, str] = {}
        for position, event in enumerate(events[: len(request.indices)]):
            if not isinstance(event, dict):
                continue
            if event.get("user_id") in users or event.get("device_id") in devices:
                failed[position] = "daily_quota_exceeded"
        return failed

    def deletion_request(self, ids: Sequence[str]) -> HttpRequest | DeletionSkipped:
        """The User Privacy API request deleting these user ids (pure).

        Skipped without a ``secret_key``, without ids and over 100 ids. Amplitude allows one
        request per second; the caller paces the requests. Deletion does not stop future
        ingestion: the router's suppression list does.
        """
        if not self.settings.secret_key:
            return DeletionSkipped("no_secret_key")
        if not ids:
            return DeletionSkipped("no_ids")
        if len(ids) > MAX_DELETION_IDS:
            return DeletionSkipped("too_many_ids")
        secret = self.settings.secret_key
        credentials = f"{self.settings.api_key}:{secret}".encode()
        token = base64.b64encode(credentials).decode()
        body: dict[str, Any] = {"user_ids": list(ids), "ignore_invalid_id": True}
        if self.settings.deletion_requester:
            body["requester"] = self.settings.deletion_requester
        return HttpRequest(
            method="POST",
            url=self.settings.deletion_url or DELETION_ENDPOINTS[self.settings.region],
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
            body=msgspec.json.encode(body),
            indices=(),
            secrets=(self.settings.api_key, secret, token),
        )

    def interpret_deletion(self, response: HttpResponse) -> dict[str, Any]:
        """A scheduled deletion job names its day and counts the ids Amplitude did not know."""
        receipt = super().interpret_deletion(response)
        if receipt["status"] != "scheduled":
            return receipt
        body = json_object(response.body)
        invalid = body.get("invalid_ids")
        return receipt | {
            "job_day": body.get("day"),
            "invalid_ids": len(invalid) if isinstance(invalid, list) else 0,
        }


def _mark(failed: dict[int, str], positions: Any, reason: str, count: int) -> None:
    if not isinstance(positions, list):
        return
    for position in positions:
        if isinstance(position, int) and not isinstance(position, bool) and 0 <= position < count:
            failed.setdefault(position, reason)
