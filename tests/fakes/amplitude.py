"""A local Amplitude that checks requests against the HTTP V2 API's documented rules.

``POST /2/httpapi`` answers like Amplitude does (https://amplitude.com/docs/apis/analytics/http-v2):

- 413 ``Payload too large`` for a body over 1 MB or 2,000 events or more;
- 400 ``Invalid JSON request body``, ``Request missing required field`` (``missing_field``:
  ``api_key`` or ``events``), ``Invalid API key``;
- 400 ``Invalid field values on some events`` with ``events_with_invalid_fields`` /
  ``events_with_missing_fields`` (field -> [index of the *first* bad event], as documented)
  for: an event whose ids are all shorter than 5 characters (or ``options.min_id_length``;
  a short id next to a valid one is removed, as Amplitude does), ids on Amplitude's invalid
  list, no ``user_id`` nor ``device_id``, no ``event_type``, a reserved event type,
  a ``time`` that is not integer milliseconds, strings over 1,024 characters, a
  ``currency`` that is not an ISO 4217 code. Nothing of such a request is ingested;
- 429 with ``throttled_events`` and ``exceeded_daily_quota_users`` for users configured as over
  quota;
- otherwise 200 with ``events_ingested``; events are recorded, deduplicated by ``insert_id``
  per device (or user).

``POST /api/2/deletions/users`` (User Privacy API) checks Basic ``api_key:secret_key`` and at
most 100 ids. ``fail_times`` makes the next requests fail with ``fail_status`` (500, 503 or
429 with ``Retry-After`` when ``retry_after_s`` is set) before any check.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from destinations.iso import CURRENCY_CODES

MAX_BODY_BYTES = 1_000_000
MAX_EVENTS = 1999
MAX_STRING = 1024
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
RESERVED = frozenset(
    {
        "[Amplitude] Start Session",
        "[Amplitude] End Session",
        "[Amplitude] Revenue",
        "[Amplitude] Revenue (Verified)",
        "[Amplitude] Revenue (Unverified)",
        "[Amplitude] Merged User",
    }
)


@dataclass
class AmplitudeFake:
    """The fake's configuration and what it received."""

    api_key: str = "amp-api-key-123"
    secret_key: str = "amp-secret-456"
    fail_times: int = 0
    fail_status: int = 500
    retry_after_s: int | None = None
    over_quota_users: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    """The headers of every ``/2/httpapi`` request (names lower-cased)."""
    responses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    deletions: list[dict[str, Any]] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)


FAKE = web.AppKey("amplitude_fake", AmplitudeFake)


def create_app(fake: AmplitudeFake | None = None) -> web.Application:
    """The fake Amplitude as an aiohttp application."""
    app = web.Application(client_max_size=4 * MAX_BODY_BYTES)
    app[FAKE] = fake or AmplitudeFake()
    app.router.add_post("/2/httpapi", _httpapi)
    app.router.add_post("/api/2/deletions/users", _deletions)
    return app


def _answer(fake: AmplitudeFake, status: int, body: dict[str, Any], **headers: str) -> web.Response:
    fake.responses.append((status, body))
    return web.json_response(body, status=status, headers=headers or None)


def _injected_failure(fake: AmplitudeFake, events: int) -> web.Response | None:
    if fake.fail_times <= 0:
        return None
    fake.fail_times -= 1
    headers = {"Retry-After": str(fake.retry_after_s)} if fake.retry_after_s is not None else {}
    if fake.fail_status == 429:
        body = {
            "code": 429,
            "error": "Too many requests for some devices and users",
            "eps_threshold": 30,
            "throttled_devices": {},
            "throttled_users": {},
            "throttled_events": list(range(events)),
        }
        return _answer(fake, 429, body, **headers)
    return _answer(fake, fake.fail_status, {"code": fake.fail_status}, **headers)


async def _httpapi(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    fake.requests += 1
    fake.headers.append({k.lower(): v for k, v in request.headers.items()})
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        body = None
    events = body.get("events") if isinstance(body, dict) else None
    failure = _injected_failure(fake, len(events) if isinstance(events, list) else 0)
    if failure is not None:
        return failure
    if len(raw) > MAX_BODY_BYTES:
        return _answer(fake, 413, {"code": 413, "error": "Payload too large"})
    if request.content_type != "application/json":
        return _answer(fake, 400, {"code": 400, "error": "Invalid request path"})
    if not isinstance(body, dict):
        return _answer(fake, 400, {"code": 400, "error": "Invalid JSON request body"})
    for required in ("api_key", "events"):
        if required not in body:
            missing = {"code": 400, "error": "Request missing required field"}
            return _answer(fake, 400, missing | {"missing_field": required})
    if body["api_key"] != fake.api_key:
        return _answer(fake, 400, {"code": 400, "error": "Invalid API key"})
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return _answer(fake, 400, {"code": 400, "error": "Invalid event JSON"})
    if len(events) > MAX_EVENTS:
        return _answer(fake, 413, {"code": 413, "error": "Payload too large"})
    options = body.get("options") if isinstance(body.get("options"), dict) else {}
    min_length = options.get("min_id_length", 5) if isinstance(options, dict) else 5

    invalid: dict[str, list[int]] = {}
    missing_fields: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        for name, problem in _problems(event, min_length):
            target = missing_fields if problem == "missing" else invalid
            target.setdefault(name, [index])  # Amplitude names the first bad event per field
    if invalid or missing_fields:
        answer: dict[str, Any] = {"code": 400, "error": "Invalid field values on some events"}
        if invalid:
            answer["events_with_invalid_fields"] = invalid
        if missing_fields:
            answer["events_with_missing_fields"] = missing_fields
        return _answer(fake, 400, answer)

    over_quota = [i for i, e in enumerate(events) if e.get("user_id") in fake.over_quota_users]
    if over_quota:
        throttled = {
            "code": 429,
            "error": "Too many requests for some devices and users",
            "eps_threshold": 30,
            "throttled_events": over_quota,
            "exceeded_daily_quota_users": {events[i]["user_id"]: 500_001 for i in over_quota},
        }
        return _answer(fake, 429, throttled)

    for event in events:
        for name in ("user_id", "device_id"):
            if isinstance(event.get(name), str) and len(event[name]) < min_length:
                del event[name]
        key = (str(event.get("device_id") or event.get("user_id")), str(event.get("insert_id")))
        if event.get("insert_id") is not None and key in fake.seen:
            continue
        fake.seen.add(key)
        fake.events.append(event)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    ok = {
        "code": 200,
        "events_ingested": len(events),
        "payload_size_bytes": len(raw),
        "server_upload_time": now_ms,
    }
    return _answer(fake, 200, ok)


def _problems(event: dict[str, Any], min_length: int) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    too_short: list[str] = []
    has_id = False
    for name in ("user_id", "device_id"):
        value = event.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or value.lower() in INVALID_IDS or len(value) > MAX_STRING:
            problems.append((name, "invalid"))
        elif len(value) < min_length:
            too_short.append(name)  # Amplitude removes it; the event fails if no id is left
        else:
            has_id = True
    if not has_id and too_short:
        problems.extend((name, "invalid") for name in too_short)
    elif not has_id and not problems:
        problems.append(("device_id", "missing"))
    event_type = event.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        problems.append(("event_type", "missing"))
    elif event_type in RESERVED or len(event_type) > MAX_STRING:
        problems.append(("event_type", "invalid"))
    if "time" in event:
        time = event["time"]
        if not isinstance(time, int) or isinstance(time, bool) or time < 0:
            problems.append(("time", "invalid"))
    if "insert_id" in event and not isinstance(event["insert_id"], str):
        problems.append(("insert_id", "invalid"))
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_STRING:
            problems.append((key, "invalid"))
    if "currency" in event and event["currency"] not in CURRENCY_CODES:
        problems.append(("currency", "invalid"))
    return problems


async def _deletions(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    fake.requests += 1
    failure = _injected_failure(fake, 0)
    if failure is not None:
        return failure
    expected = f"{fake.api_key}:{fake.secret_key}"
    if _basic_credentials(request.headers.get("Authorization", "")) != expected:
        return _answer(fake, 401, {"error": "Invalid API key or secret key"})
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        return _answer(fake, 400, {"error": "Invalid JSON request body"})
    user_ids = body.get("user_ids", []) if isinstance(body, dict) else None
    amplitude_ids = body.get("amplitude_ids", []) if isinstance(body, dict) else None
    if not isinstance(user_ids, list) or not isinstance(amplitude_ids, list):
        return _answer(fake, 400, {"error": "user_ids and amplitude_ids must be lists"})
    if not user_ids and not amplitude_ids:
        return _answer(fake, 400, {"error": "Missing user_ids or amplitude_ids"})
    if len(user_ids) + len(amplitude_ids) > 100:
        return _answer(fake, 400, {"error": "At most 100 ids per request"})
    fake.deletions.append(body)
    answer = {
        "day": "2026-12-22",
        "status": "staging",
        "amplitude_ids": [
            {"amplitude_id": 1000 + i, "requester": body.get("requester"), "user_id": user_id}
            for i, user_id in enumerate(user_ids)
        ],
        "app": 123456,
        "invalid_ids": [],
    }
    return _answer(fake, 200, answer)


def _basic_credentials(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
