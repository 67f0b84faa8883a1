"""A local Mixpanel that checks ``/import`` requests against the documented strict-mode rules.

``POST /import`` (https://docs.mixpanel.com/reference/import-events):

- 401 ``Invalid credentials`` unless HTTP Basic carries the service account (with the right
  ``project_id`` query parameter), the project secret, or the project token;
- 413 over ``max_body_bytes`` uncompressed (``Content-Encoding: gzip`` is accepted);
- 400 for a body that is not a JSON array (or NDJSON), or more than 2,000 events;
- strict mode (``strict=1`` is required): per event, ``event`` must be a non-empty string,
  ``properties.time`` integer seconds or milliseconds from 1971-01-01 to one hour after now,
  ``properties.distinct_id`` a string not on the disallowed list, ``properties.$insert_id``
  1-36 characters of ``[A-Za-z0-9-]`` not on that list, fewer than 255 properties. Bad events
  come back in ``failed_records`` (index, insert_id, field, message) with a 400, and the valid
  ones are ingested anyway, as Mixpanel does;
- otherwise 200 ``num_records_imported``. Events are deduplicated on (event, time,
  distinct_id, $insert_id).

``POST /api/app/data-deletions/v3.0/`` (GDPR API) checks ``Authorization: Bearer`` and the
``token`` query parameter. ``fail_times`` makes the next requests fail with ``fail_status``
(500, 502, 503, or 429 with ``Retry-After`` when ``retry_after_s`` is set) before any check.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from aiohttp import web

MAX_EVENTS = 2000
MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_PROPERTIES = 255
MIN_TIME = datetime(1971, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(hours=1)
DISALLOWED = frozenset(
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
INSERT_ID = re.compile(r"[A-Za-z0-9-]{1,36}")


@dataclass
class MixpanelFake:
    """The fake's configuration and what it received."""

    project_id: str = "424242"
    service_account_username: str = "router.sa"
    service_account_secret: str = "sa-secret-789"
    api_secret: str = "project-secret-000"
    project_token: str = "project-token-abc"
    gdpr_token: str = "gdpr-oauth-token"
    max_body_bytes: int = MAX_BODY_BYTES
    fail_times: int = 0
    fail_status: int = 500
    retry_after_s: int | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """What "now" is for the one-hour future limit."""
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    responses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    deletions: list[dict[str, Any]] = field(default_factory=list)
    seen: set[tuple[Any, ...]] = field(default_factory=set)


FAKE = web.AppKey("mixpanel_fake", MixpanelFake)


def create_app(fake: MixpanelFake | None = None) -> web.Application:
    """The fake Mixpanel as an aiohttp application."""
    app = web.Application(client_max_size=2 * MAX_BODY_BYTES)
    app[FAKE] = fake or MixpanelFake()
    app.router.add_post("/import", _import)
    app.router.add_post("/api/app/data-deletions/v3.0/", _deletions)
    return app


def _answer(fake: MixpanelFake, status: int, body: dict[str, Any], **headers: str) -> web.Response:
    fake.responses.append((status, body))
    return web.json_response(body, status=status, headers=headers or None)


def _injected_failure(fake: MixpanelFake) -> web.Response | None:
    if fake.fail_times <= 0:
        return None
    fake.fail_times -= 1
    headers = {"Retry-After": str(fake.retry_after_s)} if fake.retry_after_s is not None else {}
    body: dict[str, Any] = {"code": fake.fail_status, "status": "error"}
    if fake.fail_status == 429:
        body["error"] = (
            "Project exceeded rate limits. Please retry the request with exponential backoff."
        )
    return _answer(fake, fake.fail_status, body, **headers)


def _authorized(fake: MixpanelFake, request: web.Request) -> bool:
    credentials = _basic_credentials(request.headers.get("Authorization", ""))
    if credentials is None:
        return False
    user, _, password = credentials.partition(":")
    if (user, password) == (fake.service_account_username, fake.service_account_secret):
        return request.query.get("project_id") == fake.project_id
    return password == "" and user in (fake.api_secret, fake.project_token)


async def _import(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    fake.requests += 1
    failure = _injected_failure(fake)
    if failure is not None:
        return failure
    if not _authorized(fake, request):
        unauthorized = {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}
        return _answer(fake, 401, unauthorized)
    raw = await request.read()
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return _bad_request(fake, "unable to decompress the request body")
    if len(raw) > fake.max_body_bytes:
        too_large = {
            "code": 413,
            "error": f"request exceeds max limit of {fake.max_body_bytes} bytes",
            "status": "Request Entity Too Large",
        }
        return _answer(fake, 413, too_large)
    if request.query.get("strict") != "1":
        return _bad_request(fake, "this fake only implements strict=1")
    events = _decode_events(raw, request.content_type)
    if events is None:
        return _bad_request(fake, "unable to parse the request body as JSON or NDJSON")
    if len(events) > MAX_EVENTS:
        return _bad_request(fake, f"a request may hold at most {MAX_EVENTS} events")

    failed: list[dict[str, Any]] = []
    imported = 0
    now = fake.clock()
    for index, event in enumerate(events):
        problem = _problem(event, now)
        if problem is not None:
            path, message = problem
            properties = event.get("properties") if isinstance(event, dict) else None
            insert_id = properties.get("$insert_id") if isinstance(properties, dict) else None
            failed.append(
                {"index": index, "insert_id": insert_id, "field": path, "message": message}
            )
            continue
        imported += 1
        properties = event["properties"]
        key = (
            event["event"],
            properties["time"],
            properties["distinct_id"],
            properties["$insert_id"],
        )
        if key not in fake.seen:
            fake.seen.add(key)
            fake.events.append(event)
    if failed:
        partial = {
            "code": 400,
            "error": "some data points in the request failed validation",
            "failed_records": failed,
            "num_records_imported": imported,
            "status": "Bad Request",
        }
        return _answer(fake, 400, partial)
    return _answer(fake, 200, {"code": 200, "num_records_imported": imported, "status": "OK"})


def _bad_request(fake: MixpanelFake, error: str) -> web.Response:
    return _answer(fake, 400, {"code": 400, "error": error, "status": "Bad Request"})


def _decode_events(raw: bytes, content_type: str) -> list[Any] | None:
    try:
        if content_type == "application/x-ndjson":
            return [msgspec.json.decode(line) for line in raw.splitlines() if line.strip()]
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    if isinstance(decoded, dict):
        return [decoded]
    return decoded if isinstance(decoded, list) else None


def _problem(event: Any, now: datetime) -> tuple[str, str] | None:
    if not isinstance(event, dict):
        return "", "each event must be an object"
    name = event.get("event")
    if not isinstance(name, str) or not name:
        return "event", "'event' must be a non-empty string"
    properties = event.get("properties")
    if not isinstance(properties, dict):
        return "properties", "'properties' must be an object"
    if len(properties) >= MAX_PROPERTIES:
        return "properties", f"an event must have fewer than {MAX_PROPERTIES} properties"
    time = properties.get("time")
    if not isinstance(time, int) or isinstance(time, bool):
        return "properties.time", "'properties.time' must be seconds or ms since epoch"
    seconds = time / 1000 if time > 10**11 else time
    try:
        when = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return "properties.time", "'properties.time' is out of range"
    if when < MIN_TIME:
        return "properties.time", "'properties.time' is before 1971-01-01"
    if when > now + MAX_FUTURE:
        return "properties.time", "'properties.time' is more than 1 hour in the future"
    distinct_id = properties.get("distinct_id")
    if not isinstance(distinct_id, str):
        return "properties.distinct_id", "'properties.distinct_id' must be a string"
    if distinct_id.lower() in DISALLOWED:
        return "properties.distinct_id", "'properties.distinct_id' is a disallowed value"
    insert_id = properties.get("$insert_id")
    if not isinstance(insert_id, str):
        return "properties.$insert_id", "'properties.$insert_id' is required"
    if not INSERT_ID.fullmatch(insert_id) or insert_id.lower() in DISALLOWED:
        return "properties.$insert_id", "'properties.$insert_id' must be 36 alphanumerics or -"
    return None


async def _deletions(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    fake.requests += 1
    failure = _injected_failure(fake)
    if failure is not None:
        return failure
    if request.headers.get("Authorization") != f"Bearer {fake.gdpr_token}":
        return _answer(fake, 401, {"status": "error", "error": "invalid OAuth token"})
    if request.query.get("token") != fake.project_token:
        return _answer(fake, 403, {"status": "error", "error": "token does not match a project"})
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        return _answer(fake, 400, {"status": "error", "error": "invalid JSON"})
    ids = body.get("distinct_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or len(ids) > 1999:
        return _answer(fake, 400, {"status": "error", "error": "1 to 1999 distinct_ids"})
    if body.get("compliance_type", "GDPR") not in ("GDPR", "CCPA"):
        return _answer(fake, 400, {"status": "error", "error": "compliance_type: GDPR or CCPA"})
    fake.deletions.append(body)
    task = {"status": "ok", "results": {"task_id": f"task-{len(fake.deletions)}"}}
    return _answer(fake, 200, task)


def _basic_credentials(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
