"""A local TikTok Events API 2.0 that checks ``event/track/`` requests.

Like TikTok's Business API it answers HTTP 200 with a ``code`` in the body:

- ``40104`` when the ``Access-Token`` header is missing, ``40105`` when it is wrong;
- ``40001`` when ``event_source_id`` is not the pixel the token belongs to;
- ``40002`` (invalid parameters; the whole request is refused) for: a body that is not
  JSON, an ``event_source`` other than web/app/offline/crm, ``data`` empty or over 1,000
  events, and per event: missing ``event``, ``event_time`` that is not integer Unix seconds,
  missing ``event_id``, ``user.email`` / ``user.phone`` / ``user.external_id`` that are not
  SHA-256 hex (64 lowercase hex digits; string or list of strings), a non-boolean
  ``limited_data_use``, a ``currency`` that is not an ISO 4217 code, a ``value`` without a
  ``currency`` (TikTok reports no revenue for it), a non-numeric ``value``, ``contents`` that
  is not a list of objects, a ``page.url`` that is not an http(s) URL;
- ``0`` otherwise; events are recorded, deduplicated on (event, event_id).

``fail_times`` makes the next requests fail with ``fail_status`` before any check: HTTP 500 or
429 (with ``Retry-After`` when ``retry_after_s`` is set), or ``40100`` for TikTok's rate limit
code in an HTTP 200 answer.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from destinations.iso import CURRENCY_CODES

MAX_EVENTS = 1000
PATH = "/open_api/v1.3/event/track/"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
EVENT_SOURCES = frozenset({"web", "app", "offline", "crm"})
RATE_LIMIT_CODE = 40100
MAX_SECONDS = 10**11
"""Larger ``event_time`` values are milliseconds, which TikTok does not accept."""


@dataclass
class TikTokFake:
    """The fake's configuration and what it received."""

    access_token: str = "tt-access-token"
    pixel_code: str = "CTESTPIXEL0123456789"
    fail_times: int = 0
    fail_status: int = 500
    retry_after_s: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    responses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)


FAKE = web.AppKey("tiktok_fake", TikTokFake)


def create_app(fake: TikTokFake | None = None) -> web.Application:
    """The fake TikTok as an aiohttp application."""
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[FAKE] = fake or TikTokFake()
    app.router.add_post(PATH, _track)
    return app


def _answer(fake: TikTokFake, status: int, body: dict[str, Any], **headers: str) -> web.Response:
    fake.responses.append((status, body))
    return web.json_response(body, status=status, headers=headers or None)


def _code(fake: TikTokFake, code: int, message: str) -> web.Response:
    body = {"code": code, "message": message, "request_id": uuid.uuid4().hex, "data": {}}
    return _answer(fake, 200, body)


async def _track(request: web.Request) -> web.Response:
    fake = request.app[FAKE]
    fake.requests += 1
    if fake.fail_times > 0:
        fake.fail_times -= 1
        if fake.fail_status == RATE_LIMIT_CODE:
            return _code(fake, RATE_LIMIT_CODE, "Too many requests. Please retry later.")
        headers = {"Retry-After": str(fake.retry_after_s)} if fake.retry_after_s else {}
        return _answer(fake, fake.fail_status, {"message": "injected failure"}, **headers)
    token = request.headers.get("Access-Token")
    if not token:
        return _code(fake, 40104, "Access token is null, please check it.")
    if token != fake.access_token:
        return _code(fake, 40105, "Access token is incorrect or has been revoked.")
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        return _code(fake, 40002, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _code(fake, 40002, "The request body must be an object.")
    if body.get("event_source") not in EVENT_SOURCES:
        return _code(fake, 40002, "event_source: must be one of web, app, offline, crm.")
    if body.get("event_source_id") != fake.pixel_code:
        return _code(fake, 40001, "No permission to operate the event source.")
    data = body.get("data")
    if not isinstance(data, list) or not 1 <= len(data) <= MAX_EVENTS:
        return _code(fake, 40002, f"data: size must be between 1 and {MAX_EVENTS}.")
    for index, event in enumerate(data):
        problem = _problem(event)
        if problem is not None:
            return _code(fake, 40002, f"data[{index}].{problem}")
    for event in data:
        key = (event["event"], event["event_id"])
        if key not in fake.seen:
            fake.seen.add(key)
            fake.events.append(event)
    return _code(fake, 0, "OK")


def _problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "must be an object"
    if not isinstance(event.get("event"), str) or not event["event"]:
        return "event: is required"
    event_time = event.get("event_time")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        return "event_time: must be an integer Unix timestamp in seconds"
    if not 0 < event_time < MAX_SECONDS:
        return "event_time: must be in seconds"
    if not isinstance(event.get("event_id"), str) or not event["event_id"]:
        return "event_id: is required"
    user = event.get("user", {})
    if not isinstance(user, dict):
        return "user: must be an object"
    for key in ("email", "phone", "external_id"):
        if key in user and not _hashed(user[key]):
            return f"user.{key}: must be SHA-256 hashed"
    for key in ("ip", "user_agent", "ttclid", "ttp", "locale"):
        if key in user and not isinstance(user[key], str):
            return f"user.{key}: must be a string"
    if "limited_data_use" in event and not isinstance(event["limited_data_use"], bool):
        return "limited_data_use: must be a boolean"
    page = event.get("page", {})
    if not isinstance(page, dict) or not all(isinstance(v, str) for v in page.values()):
        return "page: url and referrer must be strings"
    if "url" in page and not page["url"].startswith(("http://", "https://")):
        return "page.url: must be an http(s) URL"
    properties = event.get("properties", {})
    if not isinstance(properties, dict):
        return "properties: must be an object"
    if "currency" in properties and properties["currency"] not in CURRENCY_CODES:
        return "properties.currency: must be an ISO 4217 code"
    if "value" in properties and "currency" not in properties:
        return "properties.currency: is required with value"
    value = properties.get("value", 0)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "properties.value: must be a number"
    contents = properties.get("contents", [])
    if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
        return "properties.contents: must be a list of objects"
    return None


def _hashed(value: Any) -> bool:
    if isinstance(value, str):
        return SHA256_HEX.fullmatch(value) is not None
    if isinstance(value, list):
        return bool(value) and all(
            isinstance(item, str) and SHA256_HEX.fullmatch(item) for item in value
        )
    return False
