"""A local GA4 Measurement Protocol server that checks requests against Google's rules.

``/debug/mp/collect`` behaves like Google's validation server: ``200`` with
``{"validationMessages": [...]}`` (``fieldPath``, ``description``, ``validationCode``).
``/mp/collect`` behaves like production: ``204`` whatever the payload, so the fake records what
it would have flagged in ``violations`` (tests assert it stays empty) and keeps the events of
clean requests in ``accepted``.

The rules come from the Measurement Protocol reference, the event reference (currency ISO 4217,
required with value), the validation guide, the uid-data page
and the Help Center collection limits (see /work/shared/reference/destinations.md section 1).
Two behaviours are observed rather than documented: the ``client_id`` format check
(``<number>.<number>``, reported by users of the validation server) and the answer to a body
over 130 kB (the fake answers ``413``; Google documents the limit, not the answer).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from destinations.iso import CURRENCY_CODES

MAX_BODY_BYTES = 130_000
MAX_EVENTS = 25
MAX_PARAMS = 25
MAX_ITEMS = 200
MAX_VALUE_LENGTH = 100
MAX_USER_ID_LENGTH = 256
MAX_AGE_S = 72 * 3600
MAX_FUTURE_S = 15 * 60
VALUE_LENGTHS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
RESERVED_EVENTS = frozenset(
    {
        "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
        "adunit_exposure", "app_clear_data", "app_exception", "app_install", "app_remove",
        "app_store_refund", "app_update", "app_upgrade", "dynamic_link_app_open",
        "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
        "firebase_in_app_message_action", "firebase_in_app_message_dismiss",
        "firebase_in_app_message_impression", "first_open", "first_visit", "in_app_purchase",
        "notification_dismiss", "notification_foreground", "notification_open",
        "notification_receive", "notification_send", "os_update", "session_start",
        "user_engagement",
    }
)  # fmt: skip
RESERVED_PARAMS = frozenset({"firebase_conversion"})
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
TOP_LEVEL_KEYS = frozenset(
    {
        "client_id", "app_instance_id", "user_id", "timestamp_micros", "user_properties",
        "user_data", "consent", "non_personalized_ads", "user_location", "ip_override",
        "device", "user_agent", "validation_behavior", "events",
    }
)  # fmt: skip
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
CLIENT_ID = re.compile(r"[0-9]+\.[0-9]+")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _message(path: str, description: str, code: str) -> dict[str, str]:
    return {"fieldPath": path, "description": description, "validationCode": code}


@dataclass
class GA4Fake:
    """State and rules of the fake; tests read ``accepted`` and ``violations``."""

    clock: Callable[[], float] = time.time
    accepted: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After``)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.failures.extend([(status, headers)] * times)

    def validate(self, query: dict[str, str], body: Any) -> list[dict[str, str]]:
        """Every problem Google's validation server would report for this request."""
        messages: list[dict[str, str]] = []
        if not query.get("measurement_id"):
            messages.append(
                _message("measurement_id", "measurement_id is required", "VALUE_REQUIRED")
            )
        if not query.get("api_secret"):
            messages.append(_message("api_secret", "api_secret is required", "VALUE_REQUIRED"))
        if not isinstance(body, dict):
            return [*messages, _message("", "Unable to parse the JSON body", "VALUE_INVALID")]
        for key in body:
            if key not in TOP_LEVEL_KEYS:
                messages.append(_message(key, f"Unknown field [{key}]", "VALUE_INVALID"))
        messages.extend(self._client(body))
        messages.extend(self._user_data(body))
        messages.extend(self._consent(body.get("consent")))
        if "timestamp_micros" in body:
            messages.extend(self._timestamp("timestamp_micros", body["timestamp_micros"]))
        events = body.get("events")
        if not isinstance(events, list) or not events:
            messages.append(_message("events", "events is required", "VALUE_REQUIRED"))
            return messages
        if len(events) > MAX_EVENTS:
            text = f"Request has [{len(events)}] events, the maximum is [{MAX_EVENTS}]"
            messages.append(_message("events", text, "EXCEEDED_MAX_ENTITIES"))
        for index, event in enumerate(events):
            messages.extend(self._event(index, event))
        return messages

    def _client(self, body: dict[str, Any]) -> list[dict[str, str]]:
        messages = []
        client_id = body.get("client_id")
        if not isinstance(client_id, str) or not client_id:
            messages.append(_message("client_id", "client_id is required", "VALUE_REQUIRED"))
        elif not CLIENT_ID.fullmatch(client_id):
            text = (
                f"client_id [{client_id}] has invalid format. "
                "It should be in <number>.<number> format."
            )
            messages.append(_message("client_id", text, "VALUE_INVALID"))
        user_id = body.get("user_id")
        if user_id is not None and (
            not isinstance(user_id, str) or len(user_id) > MAX_USER_ID_LENGTH
        ):
            messages.append(
                _message(
                    "user_id", "user_id must be a string of at most 256 characters", "VALUE_INVALID"
                )
            )
        return messages

    def _user_data(self, body: dict[str, Any]) -> list[dict[str, str]]:
        user_data = body.get("user_data")
        if user_data is None:
            return []
        if not isinstance(user_data, dict):
            return [_message("user_data", "user_data must be an object", "VALUE_INVALID")]
        messages = []
        if not body.get("user_id"):
            messages.append(
                _message("user_id", "user_id is required with user_data", "VALUE_REQUIRED")
            )
        hashed: list[tuple[str, Any]] = []
        for key, limit in (("sha256_email_address", 3), ("sha256_phone_number", 3)):
            values = user_data.get(key, [])
            values = values if isinstance(values, list) else [values]
            if len(values) > limit:
                messages.append(
                    _message(f"user_data.{key}", f"At most {limit} values", "EXCEEDED_MAX_ENTITIES")
                )
            hashed.extend((f"user_data.{key}", value) for value in values)
        addresses = user_data.get("address", [])
        addresses = addresses if isinstance(addresses, list) else [addresses]
        if len(addresses) > 2:
            messages.append(
                _message("user_data.address", "At most 2 addresses", "EXCEEDED_MAX_ENTITIES")
            )
        for address in addresses:
            for key, value in (address if isinstance(address, dict) else {}).items():
                if key.startswith("sha256_"):
                    hashed.append((f"user_data.address.{key}", value))
        for path, value in hashed:
            if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
                text = f"{path} must be a SHA-256 hex digest, not a clear value"
                messages.append(_message(path, text, "VALUE_INVALID"))
        return messages

    @staticmethod
    def _consent(consent: Any) -> list[dict[str, str]]:
        if consent is None:
            return []
        if not isinstance(consent, dict):
            return [_message("consent", "consent must be an object", "VALUE_INVALID")]
        return [
            _message(f"consent.{key}", f"{value!r} is not GRANTED or DENIED", "VALUE_INVALID")
            for key, value in consent.items()
            if key not in ("ad_user_data", "ad_personalization")
            or value not in ("GRANTED", "DENIED")
        ]

    def _timestamp(self, path: str, value: Any) -> list[dict[str, str]]:
        if isinstance(value, bool) or not isinstance(value, int):
            return [_message(path, "timestamp_micros must be an integer", "VALUE_INVALID")]
        age_s = self.clock() - value / 1_000_000
        if age_s > MAX_AGE_S or age_s < -MAX_FUTURE_S:
            text = "timestamp_micros must be within the last 72 hours"
            return [_message(path, text, "VALUE_OUT_OF_BOUNDS")]
        return []

    def _event(self, index: int, event: Any) -> list[dict[str, str]]:
        at = f"Event at index: [{index}]"
        if not isinstance(event, dict):
            return [_message("events", f"{at} is not an object", "VALUE_INVALID")]
        messages = []
        name = event.get("name")
        if not isinstance(name, str) or not name:
            messages.append(_message("events", f"{at} has no name.", "VALUE_REQUIRED"))
        elif not NAME.fullmatch(name):
            text = f"{at} has invalid name [{name}]. Names must start with an alphabetic character."
            messages.append(_message("events", text, "NAME_INVALID"))
        elif name in RESERVED_EVENTS or name.startswith(RESERVED_PREFIXES):
            messages.append(
                _message("events", f"{at} has name [{name}] which is reserved.", "NAME_RESERVED")
            )
        if "timestamp_micros" in event:
            for message in self._timestamp("events.timestamp_micros", event["timestamp_micros"]):
                messages.append({**message, "description": f"{at}: {message['description']}"})
        params = event.get("params", {})
        if not isinstance(params, dict):
            return [
                *messages,
                _message("events.params", f"{at} params is not an object", "VALUE_INVALID"),
            ]
        if len(params) > MAX_PARAMS:
            messages.append(
                _message(
                    "events.params",
                    f"{at} has more than {MAX_PARAMS} params",
                    "EXCEEDED_MAX_ENTITIES",
                )
            )
        for key, value in params.items():
            if key == "items":
                messages.extend(self._items(at, value))
            else:
                messages.extend(self._param(at, "events.params", key, value))
        # Event reference: currency is ISO 4217, and "If you set value then currency is
        # required for revenue metrics to be computed accurately".
        if "currency" in params and params["currency"] not in CURRENCY_CODES:
            text = f"{at} has currency [{params['currency']}], not an ISO 4217 code"
            messages.append(_message("events.params.currency", text, "VALUE_INVALID"))
        if "value" in params and "currency" not in params:
            text = f"{at} has a value without currency: no revenue is computed"
            messages.append(_message("events.params.currency", text, "VALUE_REQUIRED"))
        return messages

    @staticmethod
    def _param(at: str, path: str, key: str, value: Any) -> list[dict[str, str]]:
        if not NAME.fullmatch(key):
            return [_message(path, f"{at} has invalid param name [{key}]", "NAME_INVALID")]
        if key in RESERVED_PARAMS or key.startswith(RESERVED_PREFIXES):
            return [_message(path, f"{at} has reserved param name [{key}]", "NAME_RESERVED")]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return [
                _message(path, f"{at} param [{key}] must be a string or a number", "VALUE_INVALID")
            ]
        if isinstance(value, str) and len(value) > VALUE_LENGTHS.get(key, MAX_VALUE_LENGTH):
            return [_message(path, f"{at} param [{key}] value is too long", "VALUE_OUT_OF_BOUNDS")]
        return []

    def _items(self, at: str, items: Any) -> list[dict[str, str]]:
        if not isinstance(items, list):
            return [_message("events.params.items", f"{at} items must be a list", "VALUE_INVALID")]
        messages = []
        if len(items) > MAX_ITEMS:
            messages.append(
                _message(
                    "events.params.items",
                    f"{at} has more than {MAX_ITEMS} items",
                    "EXCEEDED_MAX_ENTITIES",
                )
            )
        for item in items:
            if not isinstance(item, dict) or not (item.get("item_id") or item.get("item_name")):
                messages.append(
                    _message(
                        "events.params.items",
                        f"{at} item needs item_id or item_name",
                        "VALUE_REQUIRED",
                    )
                )
                continue
            for key, value in item.items():
                messages.extend(self._param(at, "events.params.items", key, value))
        return messages


GA4_FAKE = web.AppKey("ga4_fake", GA4Fake)


async def _collect(request: web.Request) -> web.StreamResponse:
    fake = request.app[GA4_FAKE]
    raw = await request.read()
    query = dict(request.query)
    fake.requests.append({"path": request.path, "query": query, "body": raw})
    if fake.failures:
        status, headers = fake.failures.pop(0)
        return web.Response(status=status, headers=headers)
    if len(raw) >= MAX_BODY_BYTES:
        return web.Response(status=413)
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = None
    messages = fake.validate(query, body)
    if request.path.startswith("/debug/"):
        return web.json_response({"validationMessages": messages})
    fake.violations.extend(messages)
    if not messages:
        envelope = {key: value for key, value in body.items() if key != "events"}
        fake.accepted.extend({**envelope, "event": event} for event in body["events"])
    return web.Response(status=204)


def create_app(fake: GA4Fake | None = None) -> web.Application:
    """The fake as an aiohttp application; state in ``app[GA4_FAKE]``."""
    app = web.Application()
    app[GA4_FAKE] = fake if fake is not None else GA4Fake()
    app.router.add_post("/mp/collect", _collect)
    app.router.add_post("/debug/mp/collect", _collect)
    return app
