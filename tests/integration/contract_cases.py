"""Per-platform cases of the destination contract suite (``test_destination_contract.py``).

Each case wraps one platform's fake server behind the same small interface, so the suite can
drive every destination type the same way: build its ``settings`` and allowlist, make the fake
fail once (the platform's transient or throttling answer), refuse everything (a request-wide
permanent error such as revoked credentials), go down and recover, and make one event of a
batch fail on its own. Every fake also records the raw bytes of each request it received
(request line, headers, body), so the suite can search the wire for fields outside the
allowlist.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web

from tests.conftest import HOOK_SECRET, WRITE_KEY
from tests.fakes import amplitude, ga4, meta_capi, mixpanel, tiktok
from tests.fakes.webhook import WebhookReceiver

DELIVERY: dict[str, int] = {
    "max_attempts": 3,
    "backoff_initial_ms": 10,
    "backoff_max_ms": 50,
    "timeout_ms": 2000,
    "retry_after_max_ms": 100,  # Amplitude's 30 s throttle pause, shortened for the suite
}
COMMON_FIELDS = (
    "userId",
    "anonymousId",
    "context.traits.email",
    "properties.order_id",
    "properties.revenue",
    "properties.currency",
)
GRANTED = {"consent": {"categoryPreferences": {"analytics": True, "advertising": True}}}
REVENUE = 42.5

# Values of fields that no destination lists: none of them may appear on any wire.
SECRET_NOTE = "note-zq7-confidential"
CLIENT_IP = "203.0.113.77"
STREET = "221B Quixotic Lane"
CITY = "Zzyzxville"
POSTAL_CODE = "90210-4477"
FORBIDDEN = (
    SECRET_NOTE,
    CLIENT_IP,
    STREET,
    CITY,
    POSTAL_CODE,
    "categoryPreferences",  # the consent signal itself never leaves
    hashlib.sha256(CITY.lower().encode()).hexdigest(),  # nor a hashed form of the address
    hashlib.sha256(STREET.lower().encode()).hexdigest(),
)

DOWN_TIMES = 10_000
"""How many requests a "down" fake refuses before a test makes it recover."""


def order(message_id: str, **extra: Any) -> dict[str, Any]:
    """An Order Completed event carrying allowlisted fields and PII-like fields outside them."""
    address = {"street": STREET, "city": CITY, "postalCode": POSTAL_CODE}
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": "user-0001",
        "anonymousId": "anon-0001",
        "properties": {
            "order_id": message_id,
            "revenue": REVENUE,
            "currency": "USD",
            "products": [{"product_id": "p1", "name": "Mat", "price": 9, "quantity": 1}],
            "secret_note": SECRET_NOTE,
        },
        "traits": {"address": address},
        "context": {
            **GRANTED,
            "ip": CLIENT_IP,
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Contract/1.0",
            "page": {"url": "https://shop.example.com/checkout"},
            "traits": {"email": "jane@example.com", "address": address},
        },
    }
    event.update(extra)
    return event


class Platform(abc.ABC):
    """One destination type and its fake, as the contract suite sees them."""

    type_name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]
    fields: ClassVar[tuple[str, ...]]
    batch_size: ClassVar[int] = 4
    dedup_id: ClassVar[str]
    """Where the platform's dedup id travels (documentation for failure messages)."""
    refusal_reason: ClassVar[str]
    """The dead-letter reason of ``refuse_all``."""
    partial_reason: ClassVar[str] = ""
    """The dead-letter reason of the event spoiled by ``spoil``."""
    partial_skip: ClassVar[str | None] = None
    """Why the platform has no partial failure, when it has none."""
    known_bugs: ClassVar[dict[str, str]] = {}
    """Contract clause -> description of the bug that makes it fail (strict xfail)."""
    currency_field: ClassVar[bool] = True
    """The platform has a currency field, documented as ISO 4217 (webhook and Mixpanel
    forward properties as they are)."""
    unpriced_purchase: ClassVar[str | None] = None
    """The dead-letter reason of an order without a valid currency, when the platform
    requires one (Meta: value and currency are "Required for purchase events")."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    @property
    def destination_id(self) -> str:
        """The destination's id in the routing file."""
        return f"contract-{self.type_name}".replace("_", "-")

    def app(self) -> web.Application:
        """The fake as an aiohttp application, recording every request's raw bytes."""

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            body = await request.read()
            head = "".join(f"{key}: {value}\n" for key, value in request.headers.items())
            self.raw.append(f"{request.method} {request.raw_path}\n{head}\n".encode() + body)
            response: web.StreamResponse = await handler(request)
            return response

        app = self._app()
        app.middlewares.append(record)
        return app

    def destination(self, base_url: str, **delivery: int) -> dict[str, Any]:
        """This platform's entry in a routing file, pointed at the fake on ``base_url``."""
        return {
            "id": self.destination_id,
            "type": self.type_name,
            "purpose": f"contract suite: {self.type_name}",
            "requires": list(self.requires),
            "fields": list(self.fields),
            "settings": self.settings(base_url),
            "delivery": {"batch_size": self.batch_size, **DELIVERY, **delivery},
        }

    @abc.abstractmethod
    def _app(self) -> web.Application:
        """The platform's fake application."""

    @abc.abstractmethod
    def settings(self, base_url: str) -> dict[str, Any]:
        """The connector's ``settings`` pointing at the fake."""

    @abc.abstractmethod
    def accepted_ids(self) -> list[str | None]:
        """The dedup id of every event the platform accepted, in order."""

    @abc.abstractmethod
    def problems(self) -> list[Any]:
        """Everything the fake refused or flagged against the platform's rules."""

    @abc.abstractmethod
    def fail_once(self) -> None:
        """Answer the next request with the platform's transient or throttling answer."""

    @abc.abstractmethod
    def refuse_all(self) -> None:
        """Refuse every request as a whole, permanently (revoked credentials...)."""

    @abc.abstractmethod
    def go_down(self) -> None:
        """Answer 503 to every request until ``recover``."""

    @abc.abstractmethod
    def recover(self) -> None:
        """Stop failing."""

    def spoil(self, event: dict[str, Any]) -> dict[str, Any]:
        """Make one event of a batch fail on its own at this platform."""
        raise NotImplementedError(self.partial_skip or "no partial failure defined")


class WebhookPlatform(Platform):
    """A partner's Standard Webhooks endpoint."""

    type_name = "webhook"
    currency_field = False
    requires = ()
    fields = ("messageId", "type", "event", *COMMON_FIELDS)
    batch_size = 1
    """One event per request: ``webhook-id`` is then the messageId (a batch gets a digest)."""
    dedup_id = "webhook-id header"
    refusal_reason = "http_401"
    partial_skip = (
        "webhook reports no per-event failures: the partner answers one HTTP status for the "
        "whole request and Standard Webhooks defines no per-event result"
    )
    ROTATED_SECRET = "whsec_" + base64.b64encode(b"a-rotated-signing-key-0123456789").decode()

    def __init__(self) -> None:
        super().__init__()
        self.receiver = WebhookReceiver(secret=HOOK_SECRET)

    def _app(self) -> web.Application:
        return self.receiver.app()

    def settings(self, base_url: str) -> dict[str, Any]:
        return {"url": f"{base_url}/hook", "secret": HOOK_SECRET}

    def accepted_ids(self) -> list[str | None]:
        return [received.webhook_id for received in self.receiver.accepted]

    def problems(self) -> list[Any]:
        return list(self.receiver.invalid)

    def fail_once(self) -> None:
        self.receiver.script = [500]

    def refuse_all(self) -> None:
        # The partner rotated its secret: every signature fails (401).
        self.receiver.secret = self.ROTATED_SECRET

    def go_down(self) -> None:
        self.receiver.script = [503] * DOWN_TIMES

    def recover(self) -> None:
        self.receiver.script.clear()


class GA4Platform(Platform):
    """Google Analytics 4 Measurement Protocol (production endpoint)."""

    type_name = "ga4"
    requires = ("analytics",)
    fields = (
        *COMMON_FIELDS,
        "context.traits.phone",
        "properties.products[].product_id",
        "context.page.url",
    )
    dedup_id = "params.transaction_id (MP has no per-event id; GA4 dedups purchases by it)"
    refusal_reason = "http_403"
    # GA4 answers 2xx to anything at /mp/collect: the encoder is the validator, so an event GA4
    # would discard is isolated before sending and dead-lettered as a drop.
    partial_reason = "dropped:reserved_event_name"

    def __init__(self) -> None:
        super().__init__()
        self.fake = ga4.GA4Fake()

    def _app(self) -> web.Application:
        return ga4.create_app(self.fake)

    def settings(self, base_url: str) -> dict[str, Any]:
        return {
            "measurement_id": "G-TEST123",
            "api_secret": "ga4-api-secret",
            "endpoint_url": f"{base_url}/mp/collect",
        }

    def accepted_ids(self) -> list[str | None]:
        return [e["event"].get("params", {}).get("transaction_id") for e in self.fake.accepted]

    def problems(self) -> list[Any]:
        return list(self.fake.violations)

    def fail_once(self) -> None:
        self.fake.fail_next(500)

    def refuse_all(self) -> None:
        self.fake.fail_next(403, times=100)

    def go_down(self) -> None:
        self.fake.fail_next(503, times=DOWN_TIMES)

    def recover(self) -> None:
        self.fake.failures.clear()

    def spoil(self, event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "event": "session_start"}  # reserved by GA4


class MetaCapiPlatform(Platform):
    """Meta Conversions API."""

    type_name = "meta_capi"
    unpriced_purchase = "dropped:missing_required"
    requires = ("advertising",)
    fields = (
        *COMMON_FIELDS,
        "context.traits.phone",
        "properties.products[].quantity",
        "properties.products[].product_id",
        "properties.fbc",
        "context.page.url",
        "context.userAgent",
    )
    dedup_id = "event_id"
    refusal_reason = "meta_error_190"
    partial_reason = "meta_error_100"
    PIXEL_ID = "1234567890"

    def __init__(self) -> None:
        super().__init__()
        self.fake = meta_capi.MetaCapiFake()

    def _app(self) -> web.Application:
        return meta_capi.create_app(self.fake)

    def settings(self, base_url: str) -> dict[str, Any]:
        return {
            "pixel_id": self.PIXEL_ID,
            "access_token": "meta-access-token",
            "endpoint_url": f"{base_url}/v25.0/{self.PIXEL_ID}/events",
        }

    def accepted_ids(self) -> list[str | None]:
        return [event.get("event_id") for event in self.fake.accepted]

    def problems(self) -> list[Any]:
        return list(self.fake.rejections)

    def fail_once(self) -> None:
        self.fake.fail_next(400, code=17)  # "User request limit reached": Meta's throttling

    def refuse_all(self) -> None:
        self.fake.fail_next(400, times=100, code=190)  # invalid OAuth access token

    def go_down(self) -> None:
        self.fake.fail_next(503, times=DOWN_TIMES)

    def recover(self) -> None:
        self.fake.failures.clear()

    def spoil(self, event: dict[str, Any]) -> dict[str, Any]:
        # Starts with "fb." (the encoder's check) but is not fb.<n>.<time>.<id>: Meta refuses
        # the whole request, and the worker bisects to isolate it.
        return {**event, "properties": {**event["properties"], "fbc": "fb.not-a-click-id"}}


class AmplitudePlatform(Platform):
    """Amplitude HTTP V2 API."""

    type_name = "amplitude"
    requires = ("analytics",)
    fields = COMMON_FIELDS
    dedup_id = "insert_id"
    refusal_reason = "invalid_api_key"
    partial_reason = "daily_quota_exceeded"
    API_KEY = "amp-api-key-123"

    def __init__(self) -> None:
        super().__init__()
        self.fake = amplitude.AmplitudeFake(api_key=self.API_KEY)

    def _app(self) -> web.Application:
        return amplitude.create_app(self.fake)

    def settings(self, base_url: str) -> dict[str, Any]:
        return {"api_key": self.API_KEY, "endpoint_url": f"{base_url}/2/httpapi"}

    def accepted_ids(self) -> list[str | None]:
        return [event.get("insert_id") for event in self.fake.events]

    def problems(self) -> list[Any]:
        return [body for status, body in self.fake.responses if status != 200]

    def fail_once(self) -> None:
        self.fake.fail_times, self.fake.fail_status, self.fake.retry_after_s = 1, 429, 0

    def refuse_all(self) -> None:
        self.fake.api_key = "revoked-api-key"

    def go_down(self) -> None:
        self.fake.fail_times, self.fake.fail_status = DOWN_TIMES, 503

    def recover(self) -> None:
        self.fake.fail_times = 0

    def spoil(self, event: dict[str, Any]) -> dict[str, Any]:
        # A user over Amplitude's daily quota: 429 naming it in throttled_events and
        # exceeded_daily_quota_users; nothing of the request is ingested, so the worker resends
        # the others. (A currency that is not ISO 4217, the old spoil, no longer leaves.)
        self.fake.over_quota_users.add("user-over-quota")
        return {**event, "userId": "user-over-quota"}


class MixpanelPlatform(Platform):
    """Mixpanel ``/import`` in strict mode."""

    type_name = "mixpanel"
    currency_field = False
    requires = ("analytics",)
    fields = COMMON_FIELDS
    dedup_id = "properties.$insert_id"
    refusal_reason = "invalid_credentials"
    partial_reason = "invalid_time"
    API_SECRET = "project-secret-000"

    def __init__(self) -> None:
        super().__init__()
        self.fake = mixpanel.MixpanelFake(api_secret=self.API_SECRET)

    def _app(self) -> web.Application:
        return mixpanel.create_app(self.fake)

    def settings(self, base_url: str) -> dict[str, Any]:
        return {"api_secret": self.API_SECRET, "endpoint_url": f"{base_url}/import"}

    def accepted_ids(self) -> list[str | None]:
        return [event["properties"].get("$insert_id") for event in self.fake.events]

    def problems(self) -> list[Any]:
        return [body for status, body in self.fake.responses if status != 200]

    def fail_once(self) -> None:
        self.fake.fail_times, self.fake.fail_status = 1, 429

    def refuse_all(self) -> None:
        self.fake.api_secret = "rotated-project-secret"

    def go_down(self) -> None:
        self.fake.fail_times, self.fake.fail_status = DOWN_TIMES, 503

    def recover(self) -> None:
        self.fake.fail_times = 0

    def spoil(self, event: dict[str, Any]) -> dict[str, Any]:
        # Mixpanel's clock runs 20 minutes behind ours and the event is stamped 50 minutes
        # ahead: within the router's one-hour tolerance, "more than 1 hour in the future" for
        # Mixpanel, which names it in failed_records and ingests the rest.
        self.fake.clock = lambda: datetime.now(UTC) - timedelta(minutes=20)
        ahead = datetime.now(UTC) + timedelta(minutes=50)
        return {**event, "timestamp": ahead.isoformat().replace("+00:00", "Z")}


class TikTokPlatform(Platform):
    """TikTok Events API 2.0."""

    type_name = "tiktok"
    requires = ("advertising",)
    fields = (
        *COMMON_FIELDS,
        "context.traits.phone",
        "properties.products[].product_id",
        "context.page.url",
        "context.userAgent",
    )
    dedup_id = "event_id"
    refusal_reason = "invalid_access_token"
    partial_reason = "invalid_params"
    ACCESS_TOKEN = "tt-access-token"
    PIXEL_CODE = "CTESTPIXEL0123456789"

    def __init__(self) -> None:
        super().__init__()
        self.fake = tiktok.TikTokFake(access_token=self.ACCESS_TOKEN, pixel_code=self.PIXEL_CODE)

    def _app(self) -> web.Application:
        return tiktok.create_app(self.fake)

    def settings(self, base_url: str) -> dict[str, Any]:
        return {
            "access_token": self.ACCESS_TOKEN,
            "pixel_code": self.PIXEL_CODE,
            "endpoint_url": f"{base_url}{tiktok.PATH}",
        }

    def accepted_ids(self) -> list[str | None]:
        return [event.get("event_id") for event in self.fake.events]

    def problems(self) -> list[Any]:
        return [body for status, body in self.fake.responses if status != 200 or body["code"]]

    def fail_once(self) -> None:
        self.fake.fail_times, self.fake.fail_status = 1, tiktok.RATE_LIMIT_CODE

    def refuse_all(self) -> None:
        self.fake.access_token = "revoked-access-token"

    def go_down(self) -> None:
        self.fake.fail_times, self.fake.fail_status = DOWN_TIMES, 503

    def recover(self) -> None:
        self.fake.fail_times = 0

    def spoil(self, event: dict[str, Any]) -> dict[str, Any]:
        # A page URL that is not a URL: TikTok refuses the whole batch with 40002, and the
        # worker bisects it to isolate the event (the encoder does not check URLs).
        context = {**event["context"], "page": {"url": "shop.example.com/checkout"}}
        return {**event, "context": context}


CASES: dict[str, type[Platform]] = {
    case.type_name: case
    for case in (
        WebhookPlatform,
        GA4Platform,
        MetaCapiPlatform,
        AmplitudePlatform,
        MixpanelPlatform,
        TikTokPlatform,
    )
}
"""Destination type -> its contract case; every type in ``destinations.registry`` needs one."""


def routing_text(*destinations: dict[str, Any]) -> str:
    """A routing file (YAML is a superset of JSON) with one source and these destinations."""
    return json.dumps(
        {"sources": [{"id": "web", "write_key": WRITE_KEY}], "destinations": list(destinations)}
    )
