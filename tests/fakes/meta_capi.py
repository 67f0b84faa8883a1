"""A local Meta Conversions API server that checks requests against Meta's documented rules.

``POST /{version}/{pixel_id}/events`` takes ``{"data": [...]}`` as JSON (or the ``data`` form
field) with ``access_token`` in the query or the body. Like Meta it fails the *whole* request
when one event is invalid, answering a Graph API error object (``code`` 100, ``OAuthException``)
and recording nothing; a valid request gets ``{"events_received": n, "messages": [],
"fbtrace_id": ...}`` and its events land in ``accepted``.

Rules (reference section 2): at most 1,000 events; ``event_name``, ``event_time``,
``action_source`` required; an ``event_time`` over 7 days old fails the request; website events
need ``event_source_url`` and ``client_user_agent``; contact fields must be SHA-256 hex;
``client_ip_address``, ``client_user_agent``, ``fbc``, ``fbp`` must not be hashed; customer
information must pass the "baseline requirements for matching"; LDU options well formed;
``custom_data.currency`` an ISO 4217 code; ``Purchase`` events carry ``custom_data.value`` and
``currency`` ("Required for purchase events"); every ``contents[]`` item has ``id`` and
``quantity`` ("id and quantity are the required fields"); ``st`` of a US state name is not
its hashed full name, and ``country`` is the hash of an ISO 3166-1 alpha-2 code (customer
information parameters).
The error subcode 2804016 ("User Parameter Not Hashed") is from a real answer quoted in
facebook-java-business-sdk#421; other errors carry no subcode rather than an invented one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from destinations.iso import COUNTRY_CODES, CURRENCY_CODES, US_STATES

MAX_EVENTS = 1000
MAX_AGE_S = 7 * 24 * 3600
ACTION_SOURCES = frozenset(
    {
        "email", "website", "app", "phone_call", "chat", "physical_store", "system_generated",
        "business_messaging", "other",
    }
)  # fmt: skip
HASHED_FIELDS = frozenset({"em", "ph", "fn", "ln", "db", "ge", "ct", "st", "zp", "country"})
NEVER_HASHED = frozenset({"client_ip_address", "client_user_agent", "fbc", "fbp"})
WEAK_SETS = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
FB_COOKIE = re.compile(r"fb\.[0-9]+\.[0-9]+\..+")
NOT_HASHED_SUBCODE = 2804016
US_STATE_NAME_HASHES = frozenset(hashlib.sha256(name.encode()).hexdigest() for name in US_STATES)
"""Hashes of full US state names written as Meta's normalizer would ("california"): Meta
asks for the two-letter code, so these match no one."""
COUNTRY_HASHES = frozenset(
    hashlib.sha256(code.lower().encode()).hexdigest() for code in COUNTRY_CODES
)


class RejectedError(Exception):
    """One request-level rejection, as a Graph API error."""

    def __init__(self, message: str, title: str, subcode: int | None = None) -> None:
        super().__init__(message)
        self.title = title
        self.subcode = subcode

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": "Invalid parameter",
            "type": "OAuthException",
            "code": 100,
            "is_transient": False,
            "error_user_title": self.title,
            "error_user_msg": str(self),
            "fbtrace_id": "FakeTrace",
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        return {"error": error}


@dataclass
class MetaCapiFake:
    """State and rules of the fake; tests read ``accepted`` and ``rejections``."""

    clock: Callable[[], float] = time.time
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[int, dict[str, Any] | None, dict[str, str]]] = field(default_factory=list)

    def fail_next(
        self,
        status: int,
        times: int = 1,
        *,
        code: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and a Graph error ``code``."""
        body = None
        if code is not None:
            body = {"error": {"message": "fake failure", "type": "OAuthException", "code": code}}
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.failures.extend([(status, body, headers)] * times)

    def check(self, data: Any) -> None:
        """Raise ``RejectedError`` for the first rule the request breaks."""
        if not isinstance(data, list) or not data:
            raise RejectedError("data must be a non-empty array of events", "Missing Events")
        if len(data) > MAX_EVENTS:
            raise RejectedError(
                f"{len(data)} events; the maximum is {MAX_EVENTS}", "Too Many Events"
            )
        for index, event in enumerate(data):
            self._event(index, event)

    def _event(self, index: int, event: Any) -> None:
        at = f"data[{index}]"
        if not isinstance(event, dict):
            raise RejectedError(f"{at} is not an object", "Invalid Event")
        for key in ("event_name", "event_time", "action_source", "user_data"):
            if key not in event:
                raise RejectedError(f"{at}.{key} is required", "Missing Parameter")
        if not isinstance(event["event_name"], str) or not event["event_name"]:
            raise RejectedError(f"{at}.event_name must be a non-empty string", "Invalid Event Name")
        event_time = event["event_time"]
        if isinstance(event_time, bool) or not isinstance(event_time, int):
            raise RejectedError(f"{at}.event_time must be unix seconds", "Invalid Event Time")
        if self.clock() - event_time > MAX_AGE_S:
            raise RejectedError(
                f"{at}.event_time is more than 7 days in the past; no events were processed",
                "Event Timestamp Too Old",
            )
        if event["action_source"] not in ACTION_SOURCES:
            raise RejectedError(f"{at}.action_source is not a valid value", "Invalid Action Source")
        user_data = event["user_data"]
        if not isinstance(user_data, dict):
            raise RejectedError(f"{at}.user_data must be an object", "Invalid User Data")
        if event["action_source"] == "website":
            url = event.get("event_source_url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise RejectedError(
                    f"{at}.event_source_url is required", "Missing Event Source URL"
                )
            if not user_data.get("client_user_agent"):
                raise RejectedError(f"{at} needs client_user_agent", "Missing User Agent")
        self._user_data(at, user_data)
        self._privacy(at, event)
        custom = event.get("custom_data", {})
        if not isinstance(custom, dict):
            raise RejectedError(f"{at}.custom_data must be an object", "Invalid Custom Data")
        value = custom.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RejectedError(f"{at}.custom_data.value must be a number", "Invalid Value")
        currency = custom.get("currency")
        if currency is not None and str(currency).upper() not in CURRENCY_CODES:
            raise RejectedError(f"{at}.custom_data.currency must be ISO 4217", "Invalid Currency")
        if event["event_name"] == "Purchase" and (value is None or currency is None):
            raise RejectedError(
                f"{at}: value and currency are required for Purchase events",
                "Missing Purchase Value",
            )
        contents = custom.get("contents", [])
        if not isinstance(contents, list) or not all(
            isinstance(item, dict) and item.get("id") and isinstance(item.get("quantity"), int)
            for item in contents
        ):
            raise RejectedError(
                f"{at}.custom_data.contents: id and quantity are the required fields",
                "Invalid Contents",
            )

    @staticmethod
    def _user_data(at: str, user_data: dict[str, Any]) -> None:
        for key, raw in user_data.items():
            values = raw if isinstance(raw, list) else [raw]
            for value in values:
                if key in HASHED_FIELDS and (
                    not isinstance(value, str) or not SHA256_HEX.fullmatch(value)
                ):
                    raise RejectedError(
                        f"The {key} parameter isn't hashed. Hash all user parameters as SHA256,"
                        " except for client user agent, click ID, and browser ID.",
                        "User Parameter Not Hashed",
                        NOT_HASHED_SUBCODE,
                    )
                if key in NEVER_HASHED and isinstance(value, str) and SHA256_HEX.fullmatch(value):
                    raise RejectedError(f"{at}.user_data.{key} must not be hashed", "Hashed Value")
        ip = user_data.get("client_ip_address")
        if ip is not None:
            try:
                ipaddress.ip_address(str(ip))
            except ValueError:
                raise RejectedError(
                    f"{at} has an invalid client_ip_address", "Invalid IP"
                ) from None
        for key in ("fbc", "fbp"):
            cookie = user_data.get(key)
            if cookie is not None and not FB_COOKIE.fullmatch(str(cookie)):
                raise RejectedError(f"{at}.user_data.{key} is malformed", "Invalid Browser ID")
        if user_data.get("st") in US_STATE_NAME_HASHES:
            raise RejectedError(f"{at}.user_data.st must be the 2-letter code", "Invalid State")
        country = user_data.get("country")
        if country is not None and country not in COUNTRY_HASHES:
            raise RejectedError(f"{at}.user_data.country must be ISO alpha-2", "Invalid Country")
        keys = set(user_data)
        if not keys or any(keys <= weak for weak in WEAK_SETS):
            raise RejectedError(
                f"{at} has too little customer information", "Invalid Customer Info"
            )

    @staticmethod
    def _privacy(at: str, event: dict[str, Any]) -> None:
        options = event.get("data_processing_options", [])
        if not isinstance(options, list) or any(option != "LDU" for option in options):
            raise RejectedError(f"{at}.data_processing_options accepts only LDU", "Invalid Options")
        if options:
            for key in ("data_processing_options_country", "data_processing_options_state"):
                value = event.get(key)
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise RejectedError(
                        f"{at}.{key} must be an integer with LDU", "Invalid Options"
                    )


META_FAKE = web.AppKey("meta_capi_fake", MetaCapiFake)


async def _events(request: web.Request) -> web.StreamResponse:
    fake = request.app[META_FAKE]
    raw = await request.read()
    fake.requests.append({"path": request.path, "query": dict(request.query), "body": raw})
    if fake.failures:
        status, body, headers = fake.failures.pop(0)
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)
    try:
        if request.content_type == "application/x-www-form-urlencoded":
            form = dict(await request.post())
            payload: Any = {**form, "data": json.loads(str(form.get("data", "null")))}
        else:
            payload = json.loads(raw)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        rejection = RejectedError("the body is not a JSON object", "Invalid Body")
        fake.rejections.append(rejection.body())
        return web.json_response(rejection.body(), status=400)
    if not (request.query.get("access_token") or payload.get("access_token")):
        error = {"message": "An access token is required", "type": "OAuthException", "code": 190}
        return web.json_response({"error": error}, status=400)
    try:
        fake.check(payload.get("data"))
    except RejectedError as rejection:
        fake.rejections.append(rejection.body())
        return web.json_response(rejection.body(), status=400)
    fake.accepted.extend(payload["data"])
    return web.json_response(
        {"events_received": len(payload["data"]), "messages": [], "fbtrace_id": "FakeTrace"}
    )


def create_app(fake: MetaCapiFake | None = None) -> web.Application:
    """The fake as an aiohttp application; state in ``app[META_FAKE]``."""
    app = web.Application()
    app[META_FAKE] = fake if fake is not None else MetaCapiFake()
    app.router.add_post("/{version}/{pixel_id}/events", _events)
    return app
