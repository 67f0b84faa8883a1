"""Real SDK clients (analytics-python, rudder-sdk-python) pointed at the router.

The SDKs are synchronous (requests plus a consumer thread), so their calls and their
flush/shutdown run in a worker thread while the router's event loop keeps serving. Every HTTP
answer the SDKs get is recorded through a ``requests`` response hook, so a partially rejected
batch (a 200 with ``rejected``) cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio as aioredis
import requests
import yaml
from rudderstack.analytics import request as rudder_request
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics import request as segment_request
from segment.analytics.client import Client as SegmentClient

from router.queue.keys import QUARANTINE, dlq_key, queue_key
from tests.conftest import TEST_CONFIG, WRITE_KEY, AppFactory, routing_from, wait_for
from tests.fakes.webhook import Received, WebhookReceiver

CONFIG = yaml.safe_load(TEST_CONFIG.read_text())
DESTINATIONS = {d["id"]: d for d in CONFIG["destinations"]}
TOKENIZE_KEY = DESTINATIONS["analytics-hook"]["tokenize_key"].encode()
HEX64 = re.compile(r"^[0-9a-f]{64}$")

GRANTED = {"consent": {"categoryPreferences": {"C0002": True}}}
DENIED = {"consent": {"categoryPreferences": {"C0002": False}}}
RUDDER_GRANTED = {
    "consentManagement": {
        "provider": "oneTrust",
        "allowedConsentIds": ["C0001", "C0002"],
        "deniedConsentIds": ["C0004"],
    }
}
RUDDER_DENIED = {
    "consentManagement": {
        "provider": "oneTrust",
        "allowedConsentIds": ["C0001"],
        "deniedConsentIds": ["C0002", "C0004"],
    }
}

EMAIL = "jane.doe@example.com"
SDK_CLIENTS: dict[str, type[Any]] = {"segment": SegmentClient, "rudder": RudderClient}
SDK_SESSIONS: tuple[requests.Session, ...] = (segment_request._session, rudder_request._session)


def allowed_paths(destination_id: str) -> set[str]:
    """The paths a destination may receive: its allowlist plus its transformed fields."""
    destination = DESTINATIONS[destination_id]
    return set(destination["fields"]) | set(destination.get("transforms") or {})


def leaf_paths(value: Any, prefix: str = "") -> set[str]:
    """Every leaf of a JSON value in allowlist syntax (``properties.products[].product_id``)."""
    if isinstance(value, dict):
        paths: set[str] = set()
        for name, item in value.items():
            paths |= leaf_paths(item, f"{prefix}.{name}" if prefix else name)
        return paths
    if isinstance(value, list):
        return set().union(*(leaf_paths(item, f"{prefix}[]") for item in value))
    return {prefix}


def token(user_id: str) -> str:
    """What analytics-hook must receive instead of a raw userId (keyed HMAC-SHA256)."""
    return hmac.new(TOKENIZE_KEY, user_id.encode(), hashlib.sha256).hexdigest()


@dataclass
class Uploads:
    """What the SDKs were told: every HTTP answer and every on_error call."""

    responses: list[tuple[int, Any]] = field(default_factory=list)
    encodings: list[str | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_error(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        self.errors.append(f"{error!r} ({len(batch)} event(s))")

    def on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        del args, kwargs
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        self.responses.append((response.status_code, body))
        self.encodings.append(response.request.headers.get("Content-Encoding"))


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Uploads]:
    """Record the SDKs' HTTP answers; close their module-wide keep-alive sessions afterwards."""
    recorded = Uploads()
    for session in SDK_SESSIONS:
        monkeypatch.setitem(session.hooks, "response", [recorded.on_response])
    yield recorded
    for session in SDK_SESSIONS:
        session.close()


def start_sdk(kind: str, host: str, uploads: Uploads, *, gzip: bool) -> Any:
    """An SDK client with a short upload interval and few retries (failures surface fast)."""
    return SDK_CLIENTS[kind](
        write_key=WRITE_KEY,
        host=host,
        gzip=gzip,
        on_error=uploads.on_error,
        max_retries=1,
        timeout=10,
        upload_interval=0.05,
    )


def order_properties(order_id: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "revenue": 99.5,
        "email": EMAIL,
        "products": [
            {"product_id": "p-1", "name": "Yoga mat", "price": 49.75},
            {"product_id": "p-2", "name": "Yoga block", "price": 49.75},
        ],
    }


def send_journey(
    client: Any, user_id: str, anonymous_id: str | None, context: dict[str, Any], order_id: str
) -> dict[str, str]:
    """Order Completed, identify and page for one person; their messageIds by type."""
    ids: dict[str, str] = {}
    _, message = client.track(
        user_id=user_id,
        anonymous_id=anonymous_id,
        event="Order Completed",
        properties=order_properties(order_id),
        context=copy.deepcopy(context),
    )
    ids["track"] = message["messageId"]
    _, message = client.identify(
        user_id=user_id,
        anonymous_id=anonymous_id,
        traits={"email": EMAIL, "name": "Jane Doe", "plan": "pro"},
        context=copy.deepcopy(context),
    )
    ids["identify"] = message["messageId"]
    _, message = client.page(
        user_id=user_id,
        anonymous_id=anonymous_id,
        name="Checkout",
        properties={"url": "https://shop.example/checkout?email=" + EMAIL, "title": "Checkout"},
        context=copy.deepcopy(context),
    )
    ids["page"] = message["messageId"]
    return ids


def split_deliveries(state: WebhookReceiver) -> tuple[list[dict[str, Any]], list[Received]]:
    """Accepted deliveries by destination: analytics-hook events, ops-hook requests.

    Both destinations post to the same receiver; analytics-hook's allowlist has ``type`` and
    ops-hook's has not, and ops-hook sends one event per request (batch_size 1). Delivery is
    at-least-once: a retry (e.g. after the worker's request timed out on a busy machine)
    carries the same webhook-id, and like any Standard Webhooks receiver this one dedupes on it.
    """
    analytics: list[dict[str, Any]] = []
    ops: list[Received] = []
    seen: set[str] = set()
    for request in state.accepted:
        if request.webhook_id in seen:
            continue
        seen.add(request.webhook_id)
        body = request.body
        if "batch" in body:
            analytics.extend(body["batch"])
        elif "type" in body:
            analytics.append(body)
        else:
            ops.append(request)
    return analytics, ops


async def wait_for_deliveries(
    state: WebhookReceiver, condition: Callable[[], bool], within_s: float = 10.0
) -> None:
    """``wait_for`` that says what the receiver saw when it times out."""
    try:
        await wait_for(condition, within_s)
    except AssertionError as exc:
        seen = [(r.status, r.webhook_id, r.body) for r in state.requests]
        raise AssertionError(f"{exc}; received {seen}; invalid {state.invalid}") from None


async def drained(client: aioredis.Redis, destination_ids: list[str], within_s: float = 10) -> None:
    """Wait until every destination's stream is empty: nothing more can be delivered."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        lengths = [await client.xlen(queue_key(d)) for d in destination_ids]
        if not any(lengths):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"streams not drained: {dict(zip(destination_ids, lengths, strict=True))}"
            )
        await asyncio.sleep(0.02)


async def run_journeys(
    kind: str,
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_client: aioredis.Redis,
    uploads: Uploads,
    *,
    gzip: bool,
    granted: dict[str, Any],
    denied: dict[str, Any],
) -> None:
    """Send both people's journeys through an SDK and check everything that arrived."""
    state, url = receiver
    client = await make_router(routing_from(hook_url=url))
    host = str(client.server.make_url("/"))
    sdk = start_sdk(kind, host, uploads, gzip=gzip)

    def journeys() -> tuple[dict[str, str], dict[str, str]]:
        return (
            send_journey(sdk, "user-granted-1", "anon-granted-1", granted, "T-1001"),
            send_journey(sdk, "user-denied-2", None, denied, "T-1002"),
        )

    yes, no = await asyncio.to_thread(journeys)
    await asyncio.to_thread(sdk.shutdown)

    assert uploads.errors == []
    assert uploads.responses, "the SDK sent nothing"
    assert all(r == (200, {"success": True}) for r in uploads.responses), uploads.responses
    assert set(uploads.encodings) == {"gzip" if gzip else None}
    assert await redis_client.xlen(QUARANTINE) == 0

    def arrived() -> bool:
        analytics, ops = split_deliveries(state)
        return len(analytics) >= 3 and len(ops) >= 2

    await wait_for_deliveries(state, arrived)
    await drained(redis_client, ["analytics-hook", "ops-hook"])
    assert state.invalid == []
    analytics, ops = split_deliveries(state)
    assert len(analytics) == 3
    assert len(ops) == 2
    assert await redis_client.xlen(dlq_key("analytics-hook")) == 0
    assert await redis_client.xlen(dlq_key("ops-hook")) == 0

    # analytics-hook: only the consenting person, only allowlisted fields, userId tokenized
    by_id = {event["messageId"]: event for event in analytics}
    assert set(by_id) == set(yes.values())
    user = token("user-granted-1")
    assert HEX64.match(user)
    for event in analytics:
        assert leaf_paths(event) <= allowed_paths("analytics-hook"), event
    assert by_id[yes["track"]] == {
        "messageId": yes["track"],
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "anonymousId": "anon-granted-1",
        "properties": {"revenue": 99.5, "products": [{"product_id": "p-1"}, {"product_id": "p-2"}]},
    }
    for kind_ in ("identify", "page"):
        assert by_id[yes[kind_]] == {
            "messageId": yes[kind_],
            "type": kind_,
            "userId": user,
            "anonymousId": "anon-granted-1",
        }

    # ops-hook (requires: []): both orders, consent or not; the SDK's messageId is webhook-id
    assert sorted(r.webhook_id for r in ops) == sorted([yes["track"], no["track"]])
    for request in ops:
        assert leaf_paths(request.body) <= allowed_paths("ops-hook"), request.body
    by_hook = {r.webhook_id: r.body for r in ops}
    for ids, order_id in ((yes, "T-1001"), (no, "T-1002")):
        assert by_hook[ids["track"]] == {
            "messageId": ids["track"],
            "event": "Order Completed",
            "properties": {"order_id": order_id},
        }

    # nothing personal left, whichever way it was spelled
    everything = json.dumps([r.body for r in state.requests])
    for secret in (EMAIL, "user-granted-1", "user-denied-2", "Yoga mat", "Jane Doe"):
        assert secret not in everything


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
async def test_segment_python_events_reach_webhook_with_only_allowlisted_fields(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_client: aioredis.Redis,
    uploads: Uploads,
    gzip: bool,
) -> None:
    """analytics-python (plain, and gzip=True): consented events reach both hooks minimized;
    denied ones only ops; compressed batches are decoded and routed alike."""
    await run_journeys(
        "segment",
        make_router,
        receiver,
        redis_client,
        uploads,
        gzip=gzip,
        granted=GRANTED,
        denied=DENIED,
    )


@pytest.mark.parametrize("gzip", [True, False], ids=["gzip", "plain"])
async def test_rudder_python_events_reach_webhook_with_only_allowlisted_fields(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_client: aioredis.Redis,
    uploads: Uploads,
    gzip: bool,
) -> None:
    """rudder-sdk-python (gzip by default, and plain): routed and minimized like Segment's."""
    await run_journeys(
        "rudder",
        make_router,
        receiver,
        redis_client,
        uploads,
        gzip=gzip,
        granted=GRANTED,
        denied=DENIED,
    )


async def test_rudder_python_consent_management_ids_decide_the_routing(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_client: aioredis.Redis,
    uploads: Uploads,
) -> None:
    """rudder-sdk-python with RudderStack's own context.consentManagement allowed/denied ids."""
    await run_journeys(
        "rudder",
        make_router,
        receiver,
        redis_client,
        uploads,
        gzip=False,
        granted=RUDDER_GRANTED,
        denied=RUDDER_DENIED,
    )


TIMES_YAML = """
sources:
  - id: web
    write_key: test-write-key
destinations:
  - id: times-hook
    type: webhook
    requires: []
    fields: [messageId, userId, anonymousId, originalTimestamp, timestamp]
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
    delivery: {batch_size: 1, max_attempts: 3, backoff_initial_ms: 10, backoff_max_ms: 50}
"""


@pytest.mark.parametrize("kind", ["segment", "rudder"])
async def test_sdk_null_anonymous_id_and_utc_offset_timestamps_are_accepted(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_client: aioredis.Redis,
    uploads: Uploads,
    kind: str,
) -> None:
    """The SDKs' ``anonymousId: null`` and ``+00:00``/``+02:00`` timestamps are accepted as is."""
    state, url = receiver
    client = await make_router(routing_from(TIMES_YAML, hook_url=url))
    sdk = start_sdk(kind, str(client.server.make_url("/")), uploads, gzip=False)
    stamps = {
        "utc": datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC),
        "offset": datetime(2024, 5, 1, 14, 0, 0, 456000, tzinfo=timezone(timedelta(hours=2))),
    }
    sent: list[dict[str, Any]] = []

    def calls() -> None:
        for label, stamp in stamps.items():
            _, message = sdk.track(user_id=f"u-{label}", event="Signed Up", timestamp=stamp)
            sent.append(message)
        sdk.shutdown()

    await asyncio.to_thread(calls)

    # what the SDK put on the wire is what this test is about
    assert [m["anonymousId"] for m in sent] == [None, None]
    assert sent[0]["timestamp"].endswith("+00:00")
    assert sent[1]["timestamp"].endswith("+02:00")
    assert uploads.errors == []
    assert uploads.responses
    assert all(r == (200, {"success": True}) for r in uploads.responses), uploads.responses
    assert await redis_client.xlen(QUARANTINE) == 0

    await wait_for_deliveries(state, lambda: len(state.accepted) >= 2)
    assert state.invalid == []
    await drained(redis_client, ["times-hook"])
    assert len(state.accepted) == 2
    by_id = {r.webhook_id: r.body for r in state.accepted}
    assert set(by_id) == {m["messageId"] for m in sent}
    for message, (label, stamp) in zip(sent, stamps.items(), strict=True):
        body = by_id[message["messageId"]]
        assert "anonymousId" not in body  # null is "absent", never the string "None"
        assert body["userId"] == f"u-{label}"
        original = datetime.fromisoformat(body["originalTimestamp"].replace("Z", "+00:00"))
        assert abs(original - stamp) < timedelta(milliseconds=1)
        assert body["originalTimestamp"].endswith("Z")
        # timestamp is corrected for the client's clock by sentAt: it stays near the original
        corrected = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        assert abs(corrected - stamp) < timedelta(seconds=30)
