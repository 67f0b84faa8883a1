"""Mixpanel: events through ``/import`` (strict mode), erasure through the GDPR API v3.

Mapping (Segment-shaped payload -> one Mixpanel event):

==========================================  ===============================================
Segment                                     Mixpanel
==========================================  ===============================================
track ``event``                             ``event``
page / screen                               ``Loaded a Page`` / ``Loaded a Screen``
                                            (``page_event_name`` / ``screen_event_name``),
                                            the page ``name`` as property ``name``
``messageId``                               ``properties.$insert_id`` (as is when it is 1-36
                                            characters of ``[A-Za-z0-9-]``, else the first
                                            32 hex digits of its SHA-256)
``userId`` else ``anonymousId``             ``properties.distinct_id``
``userId`` / ``anonymousId``                ``properties.$user_id`` / ``$device_id``
                                            (Simplified ID Merge; ``id_merge: false`` omits)
``timestamp``                               ``properties.time`` (ms since epoch)
``properties``                              ``properties`` (the keys above win)
``context.ip``                              ``properties.ip``; ``0`` when absent, so Mixpanel
                                            does not geolocate the router's own address
``context.page.url`` / ``referrer``         ``$current_url`` / ``$referrer``
``context.os.name`` / ``version``           ``$os`` / ``$os_version``
``context.device.manufacturer`` / model     ``$manufacturer`` / ``$model``
``context.app.version``                     ``$app_version_string``
``context.campaign.*``                      ``utm_source``, ``utm_medium``, ``utm_campaign``,
                                            ``utm_term``, ``utm_content``
==========================================  ===============================================

identify, group and alias are not sent (``unsupported_type``): profiles live in ``/engage``,
which this connector does not write. Events without a usable id (``missing_id``,
``invalid_id``) or more than an hour in the future (``time_in_future``) are dropped before
sending, as strict mode would refuse them.

Answers (``interpret``): 200 ok; 400 with ``failed_records`` is a partial success (Mixpanel
ingested the valid rows: the rest is ``ok``, the named positions fail permanently); any other
400, 401 and 403 are permanent for the whole request; 413 (the body is over Mixpanel's limit,
whatever ``max_body_bytes`` assumed) makes the worker split the request in halves and send
them again, as for Amplitude; 429 and 5xx retry (``$insert_id`` dedups retries).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, Self, TypeGuard
from urllib.parse import urlencode

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

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
)
from destinations.payload import id_text, json_object, mapping, millis, path_value

HOSTS = {
    "us": "https://api.mixpanel.com",
    "eu": "https://api-eu.mixpanel.com",
    "in": "https://api-in.mixpanel.com",
}
GDPR_HOSTS = {
    "us": "https://mixpanel.com/api/app",
    "eu": "https://eu.mixpanel.com/api/app",
    "in": "https://in.mixpanel.com/api/app",
}
MAX_EVENTS_PER_REQUEST = 2000
MAX_BODY_BYTES = 10 * 1024 * 1024
"""The documented uncompressed limit of ``/import``."""
DEFAULT_BODY_BYTES = 1024 * 1024
"""Default ceiling: under the 2 MiB the API reference's own 413 example names, and no larger
than what aiohttp sends from bytes without a ``ResourceWarning``."""
MAX_DELETION_IDS = 1999
MAX_FUTURE = timedelta(hours=1)
MIN_TIME = datetime(1971, 1, 1, tzinfo=UTC)
DISALLOWED_IDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "anon",
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "<nil>",
        "0",
        "-1",
        "true",
        "false",
        "[]",
        "{}",
    }
)
"""Values Mixpanel refuses as ``distinct_id`` or ``$insert_id`` (compared lower-cased)."""
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")

_CONTEXT_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("$current_url", "context.page.url"),
    ("$referrer", "context.page.referrer"),
    ("$os", "context.os.name"),
    ("$os_version", "context.os.version"),
    ("$manufacturer", "context.device.manufacturer"),
    ("$model", "context.device.model"),
    ("$app_version_string", "context.app.version"),
    ("utm_source", "context.campaign.source"),
    ("utm_medium", "context.campaign.medium"),
    ("utm_campaign", "context.campaign.name"),
    ("utm_term", "context.campaign.term"),
    ("utm_content", "context.campaign.content"),
)


class MixpanelSettings(BaseModel):
    """The ``settings`` block of a ``mixpanel`` destination.

    ``/import`` authenticates with one of: a service account (``service_account_username``,
    ``service_account_secret`` and ``project_id``), the legacy project ``api_secret``, or the
    ``project_token``. Erasure needs ``gdpr_token`` (the GDPR OAuth token) and
    ``project_token``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str | None = Field(default=None, pattern=r"^[0-9]+$")
    service_account_username: str | None = Field(default=None, min_length=1)
    service_account_secret: str | None = Field(default=None, min_length=1)
    api_secret: str | None = Field(default=None, min_length=1)
    project_token: str | None = Field(default=None, min_length=1)
    gdpr_token: str | None = Field(default=None, min_length=1)
    region: Literal["us", "eu", "in"] = "us"
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Overrides the ``/import`` URL (tests, proxies); query parameters are added to it."""
    gdpr_url: str | None = Field(default=None, pattern=r"^https?://")
    """Overrides the GDPR API base (``.../api/app``)."""
    max_events_per_request: int = Field(default=MAX_EVENTS_PER_REQUEST, ge=1, le=2000)
    max_body_bytes: int = Field(default=DEFAULT_BODY_BYTES, ge=4096, le=MAX_BODY_BYTES)
    page_event_name: str = Field(default="Loaded a Page", min_length=1)
    screen_event_name: str = Field(default="Loaded a Screen", min_length=1)
    id_merge: bool = True
    """Send ``$user_id`` / ``$device_id`` for Simplified ID Merge."""

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        service = (self.service_account_username, self.service_account_secret)
        if any(service) and not all(service):
            raise ValueError("service_account_username and service_account_secret go together")
        if all(service) and not self.project_id:
            raise ValueError("a service account needs project_id")
        if not (all(service) or self.api_secret or self.project_token):
            raise ValueError(
                "one credential is required: a service account, api_secret or project_token"
            )
        return self


class MixpanelConnector(Connector[MixpanelSettings]):
    """Mixpanel ``/import`` in strict mode."""

    type_name: ClassVar[str] = "mixpanel"
    identifier_fields: ClassVar[Mapping[str, str]] = {"context.ip": "ip"}
    recipient_name: ClassVar[str] = "Mixpanel (analytics)"
    settings_model: ClassVar[type[BaseModel]] = MixpanelSettings
    required_fields: ClassVar[tuple[tuple[str, ...], ...]] = (("userId", "anonymousId"),)
    max_batch_size: ClassVar[int] = MAX_EVENTS_PER_REQUEST
    split_on_rejection: ClassVar[bool] = True
    """Only for 413: every other permanent answer is marked request-wide."""
    """Strict mode names the bad events itself; bisecting a 401 would only multiply requests."""

    @property
    def url(self) -> str:
        """The ``/import`` URL with ``strict=1`` and, when set, ``project_id``."""
        base = self.settings.endpoint_url or f"{HOSTS[self.settings.region]}/import"
        query: dict[str, str] = {"strict": "1"}
        if self.settings.project_id:
            query["project_id"] = self.settings.project_id
        separator = "&" if "?" in base else "?"
        return f"{base}{separator}{urlencode(query)}"

    def _credentials(self) -> tuple[str, str]:
        settings = self.settings
        if settings.service_account_username and settings.service_account_secret:
            return settings.service_account_username, settings.service_account_secret
        return settings.api_secret or settings.project_token or "", ""

    def packing(self, shared: bytes) -> Packing:
        """A JSON array of events."""
        del shared
        return Packing(
            head=b"[",
            tail=b"]",
            max_events=self.settings.max_events_per_request,
            max_bytes=self.settings.max_body_bytes,
        )

    def request(self, body: bytes, indices: tuple[int, ...]) -> HttpRequest:
        """A POST to ``/import`` with Basic auth."""
        user, password = self._credentials()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return HttpRequest(
            method="POST",
            url=self.url,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Authorization": f"Basic {token}",
            },
            body=body,
            indices=indices,
            secrets=tuple(s for s in (user, password, token) if s),
        )

    def encode_event(
        self, delivery: Delivery, now: datetime, notes: Notes
    ) -> EventPayload | DropReason:
        """The Mixpanel event for one delivery, or why it cannot be sent (``/import`` leaves
        no field out: ``notes`` stays empty)."""
        del notes
        payload = delivery.payload
        if delivery.type == "track":
            if not delivery.event:
                return DropReason("missing_event", "track without an event name")
            name = delivery.event
        elif delivery.type == "page":
            name = self.settings.page_event_name
        elif delivery.type == "screen":
            name = self.settings.screen_event_name
        else:
            return DropReason("unsupported_type", f"{delivery.type} is not sent to /import")

        if delivery.timestamp > now + MAX_FUTURE:
            return DropReason("time_in_future", "more than 1 hour after now")
        if delivery.timestamp < MIN_TIME:
            return DropReason("time_too_old", "before 1971-01-01")

        user_id = _usable_id(payload.get("userId"))
        device_id = _usable_id(payload.get("anonymousId"))
        distinct_id = user_id or device_id
        if distinct_id is None:
            present = payload.get("userId") is not None or payload.get("anonymousId") is not None
            if present:
                return DropReason("invalid_id", "id on Mixpanel's list of disallowed ids")
            return DropReason("missing_id", "neither userId nor anonymousId")

        properties: dict[str, Any] = dict(mapping(payload.get("properties")))
        page_name = id_text(payload.get("name"))
        if page_name and delivery.type in ("page", "screen"):
            properties.setdefault("name", page_name)
        for key, path in _CONTEXT_PROPERTIES:
            value = id_text(path_value(payload, path))
            if value:
                properties[key] = value
        ip = id_text(path_value(payload, "context.ip"))
        properties["ip"] = ip or 0
        properties["time"] = millis(delivery.timestamp)
        properties["distinct_id"] = distinct_id
        properties["$insert_id"] = insert_id(delivery.message_id)
        properties.pop("token", None)
        if self.settings.id_merge:
            if user_id:
                properties["$user_id"] = user_id
            if device_id:
                properties["$device_id"] = device_id
        return EventPayload({"event": name, "properties": properties})

    def interpret(self, response: HttpResponse, request: HttpRequest) -> Outcome:
        """Mixpanel's answer; strict mode's ``failed_records`` become per-event failures."""
        count = len(request.indices)
        if response.status == 400:
            body = json_object(response.body)
            failed: dict[int, str] = {}
            records = body.get("failed_records")
            for record in records if isinstance(records, list) else []:
                if not isinstance(record, dict):
                    continue
                position = record.get("index")
                if _is_position(position, count):
                    failed.setdefault(position, _field_reason(record.get("field")))
            if failed:
                kind: OutcomeKind = "permanent" if len(failed) == count else "ok"
                return Outcome(kind=kind, reason="partial_rejection", failed=failed)
            return Outcome(kind="permanent", reason="invalid_request", event_specific=False)
        if response.status == 401:
            return Outcome(kind="permanent", reason="invalid_credentials", event_specific=False)
        if response.status == 413:
            return Outcome(kind="permanent", reason="payload_too_large")
        outcome = outcome_from_status(response)
        if outcome.kind == "permanent":
            return msgspec.structs.replace(outcome, event_specific=False)
        return outcome

    def deletion_request(
        self, ids: Sequence[str], compliance_type: Literal["GDPR", "CCPA"] = "GDPR"
    ) -> HttpRequest | DeletionSkipped:
        """The GDPR API v3 "create a deletion" request for these distinct ids (pure).

        Skipped without a ``gdpr_token`` or ``project_token``, without ids and over 1,999 ids.
        Mixpanel allows one request a second; the caller paces the requests.
        """
        gdpr_token = self.settings.gdpr_token
        project_token = self.settings.project_token
        if not (gdpr_token and project_token):
            return DeletionSkipped("no_gdpr_token")
        if not ids:
            return DeletionSkipped("no_ids")
        if len(ids) > MAX_DELETION_IDS:
            return DeletionSkipped("too_many_ids")
        base = self.settings.gdpr_url or GDPR_HOSTS[self.settings.region]
        body = {"distinct_ids": list(ids), "compliance_type": compliance_type}
        return HttpRequest(
            method="POST",
            url=f"{base}/data-deletions/v3.0/?{urlencode({'token': project_token})}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {gdpr_token}"},
            body=msgspec.json.encode(body),
            indices=(),
            secrets=(gdpr_token, project_token),
        )

    def interpret_deletion(self, response: HttpResponse) -> dict[str, Any]:
        """A created deletion task carries Mixpanel's ``task_id``."""
        receipt = super().interpret_deletion(response)
        if receipt["status"] != "scheduled":
            return receipt
        results = mapping(json_object(response.body).get("results"))
        return receipt | {"task_id": results.get("task_id")}


def insert_id(message_id: str) -> str:
    """``$insert_id`` for a message id: itself when Mixpanel accepts it, else a stable hash."""
    if INSERT_ID.fullmatch(message_id) and message_id.lower() not in DISALLOWED_IDS:
        return message_id
    return hashlib.sha256(message_id.encode()).hexdigest()[:32]


def _usable_id(value: Any) -> str | None:
    text = id_text(value)
    if text is None or text.lower() in DISALLOWED_IDS:
        return None
    return text


def _is_position(value: Any, count: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < count


def _field_reason(field: Any) -> str:
    name = str(field or "")
    if name.endswith("time"):
        return "invalid_time"
    if name.endswith("distinct_id"):
        return "invalid_distinct_id"
    if name.endswith("insert_id"):
        return "invalid_insert_id"
    return "invalid_event"
