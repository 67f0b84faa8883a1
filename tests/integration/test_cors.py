"""CORS as browser SDKs need it, RudderStack's beacon route and analytics.js's ``/v1/m``.

Header lists and bodies are the ones the SDKs send (RudderStack JS v3 ``XhrQueue`` and
``BeaconQueue``, analytics-next ``RemoteMetrics``); the real SDKs run in a browser in
``tests/e2e/browser``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from router.edge.state import STATE
from router.queue.items import entry_items
from router.queue.keys import QUARANTINE, queue_key
from tests.conftest import WRITE_KEY, AppFactory, routing_from

ORIGIN = "http://localhost:3000"  # cors_origins of config/test.yaml
RUDDER_FIRST_ATTEMPT = "anonymousid,authorization,content-type,sentat"
RUDDER_RETRY = (
    "anonymousid,authorization,content-type,rsa-recovered,rsa-retry-attempt,rsa-retry-reason,"
    "rsa-since-first-attempt,rsa-since-last-attempt,sentat"
)
SEGMENT_BATCH_RETRY = "authorization,x-retry-count"


def _auth(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _allowed(headers: Any) -> set[str]:
    return {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}


async def _queued(client: aioredis.Redis, destination: str) -> list[dict[str, Any]]:
    entries = await client.xrange(queue_key(destination))
    return [
        msgspec.json.decode(raw)
        for _, fields in entries
        for raw in entry_items({k.decode(): v for k, v in fields.items()})
    ]


@pytest.fixture
async def router(make_router: AppFactory) -> Any:
    """The router without workers, so queued entries stay in Redis for inspection."""
    return await make_router(routing_from(), workers=False)


@pytest.mark.parametrize(
    ("path", "requested"),
    [
        ("/v1/page", RUDDER_FIRST_ATTEMPT),
        ("/v1/track", RUDDER_RETRY),
        ("/v1/b", SEGMENT_BATCH_RETRY),
        ("/beacon/v1/batch", "content-type"),
    ],
    ids=["rudder-first-attempt", "rudder-retry", "segment-batch-retry", "beacon"],
)
async def test_preflight_allows_every_header_the_sdks_request(
    router: Any, path: str, requested: str
) -> None:
    """A listed origin's preflight allows exactly what RudderStack and analytics.js ask for."""
    response = await router.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert set(requested.split(",")) <= _allowed(response.headers)
    assert "Access-Control-Request-Headers" in response.headers["Vary"]


@pytest.mark.parametrize(
    "requested",
    ["x-ok, bad header", "x-ok,x(y)", ",".join(f"x-h{i}" for i in range(40)), "x-" + "a" * 1100],
    ids=["space", "separator", "too-many", "too-long"],
)
async def test_preflight_answers_known_headers_when_the_request_is_not_reflectable(
    router: Any, requested: str
) -> None:
    """Malformed or oversized header lists are not echoed; the SDKs' known headers are."""
    response = await router.options(
        "/v1/track",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
        },
    )
    assert response.status == 204
    allowed = _allowed(response.headers)
    assert {"content-type", "authorization", "anonymousid", "sentat"} <= allowed
    assert not allowed & {"bad header", "x(y)", "x-h39", "x-ok"}
    assert all(len(name) < 40 for name in allowed)


async def test_preflight_from_unlisted_origin_carries_no_cors_headers(router: Any) -> None:
    """An origin that is not configured gets no Access-Control-* header at all."""
    response = await router.options(
        "/v1/track",
        headers={
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": RUDDER_FIRST_ATTEMPT,
        },
    )
    assert response.status == 204
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("invalid_json", 400, "invalid_json"),
        ("unknown_key", 401, "invalid_write_key"),
        ("unknown_route", 404, "not_found"),
        ("too_large", 413, "body_too_large"),
        ("backlog", 429, "backlog"),
        ("redis_down", 503, "queue_unavailable"),
    ],
)
async def test_error_answers_carry_cors_headers(
    router: Any, redis_server: Any, case: str, status: int, code: str
) -> None:
    """Every error answer to a listed origin is readable by the SDK: status, body, Retry-After."""
    headers = {"Origin": ORIGIN, **_auth()}
    path = "/v1/track"
    body: bytes = json.dumps({"event": "Signed Up", "anonymousId": "a-1"}).encode()
    if case == "invalid_json":
        body = b'{"event": '
    elif case == "unknown_key":
        headers.update(_auth("not-a-key"))
    elif case == "unknown_route":
        path = "/v1/nope"
    elif case == "too_large":
        path, body = "/v1/batch", b'{"batch": [' + b" " * 600_000 + b"]}"
    elif case == "backlog":
        router.server.app[STATE].backlogged = True
    elif case == "redis_down":
        redis_server.kill()
    response = await router.post(path, data=body, headers=headers)
    assert response.status == status
    answer = await response.json()
    assert answer["success"] is False
    assert answer["code"] == code
    assert answer["message"]
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {
        h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")
    }
    assert "retry-after" in exposed
    if status in (429, 503):
        assert response.headers["Retry-After"].isdigit()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/metrics"),
        ("GET", "/admin/destinations"),
        ("OPTIONS", "/admin/destinations"),
        ("POST", "/admin/erase"),
        ("GET", "/healthz"),
    ],
)
async def test_admin_and_metrics_answers_carry_no_cors_headers(
    router: Any, method: str, path: str
) -> None:
    """The operator API, /metrics and the probes are not for browsers, even a listed origin."""
    response = await router.request(
        method,
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    if response.status >= 400:
        assert (await response.json())["success"] is False


def _rudder_event(kind: str, message_id: str, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "messageId": message_id,
        "anonymousId": "anon-beacon-1",
        "channel": "web",
        "originalTimestamp": "2026-01-01T00:00:00.000Z",
        "context": {
            "consentManagement": {
                "provider": "custom",
                "resolutionStrategy": "and",
                "allowedConsentIds": ["C0001", "C0002"],
                "deniedConsentIds": ["C0004"],
            }
        },
    }
    event.update(extra)
    return event


async def test_beacon_batch_is_accepted_and_queued(
    router: Any, redis_client: aioredis.Redis
) -> None:
    """RudderStack's sendBeacon: text/plain batch, write key in the query, events queued."""
    body = {
        "batch": [
            _rudder_event(
                "track", "m-beacon-1", event="Order Completed", properties={"revenue": 5}
            ),
            _rudder_event("page", "m-beacon-2", name="Checkout"),
        ],
        "sentAt": "2026-01-01T00:00:01.000Z",
    }
    response = await router.post(
        f"/beacon/v1/batch?writeKey={WRITE_KEY}",
        data=json.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN},
    )
    assert response.status == 200, await response.text()
    assert await response.json() == {"success": True}
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    queued = await _queued(redis_client, "analytics-hook")
    assert sorted(item["delivery"]["payload"]["messageId"] for item in queued) == [
        "m-beacon-1",
        "m-beacon-2",
    ]
    assert await redis_client.xlen(QUARANTINE) == 0


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [("?writeKey=nope", 401, "invalid_write_key"), ("", 401, "missing_write_key")],
)
async def test_beacon_without_a_known_write_key_is_refused(
    router: Any, redis_client: aioredis.Redis, query: str, status: int, code: str
) -> None:
    """A beacon with a wrong or no write key gets the 401 of the other routes, nothing queued."""
    body = {"batch": [_rudder_event("track", "m-x", event="Signed Up")], "sentAt": "2026-01-01"}
    response = await router.post(f"/beacon/v1/batch{query}", data=json.dumps(body))
    assert response.status == status
    assert (await response.json())["code"] == code
    assert await redis_client.xlen(queue_key("analytics-hook")) == 0


async def test_beacon_route_takes_batches_only(router: Any) -> None:
    """Only /beacon/v1/batch exists under /beacon (RudderStack posts nothing else there)."""
    response = await router.post(f"/beacon/v1/track?writeKey={WRITE_KEY}", data="{}")
    assert response.status == 404
    assert (await response.json())["code"] == "not_found"


SEGMENT_METRICS = {
    "series": [
        {
            "type": "Counter",
            "metric": "analytics_js.invoke",
            "value": 1,
            "tags": {"track": None, "library": "analytics.js", "library_version": "npm:next-1"},
        },
        {
            "type": "Counter",
            "metric": "analytics_js.invoke",
            "value": 1,
            "tags": {"page": None, "library": "analytics.js"},
        },
        {"type": "Counter", "metric": "user@example.com", "value": 1, "tags": {"x": "y"}},
    ]
}


async def test_sdk_usage_metrics_are_answered_counted_and_dropped(
    router: Any, redis_client: aioredis.Redis
) -> None:
    """analytics.js's POST /v1/m gets 200 with CORS; counted by bounded name; nothing queued."""
    response = await router.post(
        "/v1/m",
        data=json.dumps(SEGMENT_METRICS),
        headers={"Content-Type": "text/plain", "Origin": ORIGIN},
    )
    assert response.status == 200
    assert await response.json() == {"success": True}
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    metrics = await (await router.get("/metrics")).text()
    assert 'router_sdk_metrics_total{kind="analytics_js.invoke"} 2' in metrics
    assert 'router_sdk_metrics_total{kind="other"} 1' in metrics
    assert "user@example.com" not in metrics
    assert await redis_client.keys("rt:q:*") == []
    assert await redis_client.xlen(QUARANTINE) == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (b'{"series": [{"metric": 3}]}', 400, "invalid_field"),
        (b'{"series": [' + b" " * 70_000 + b"]}", 413, "body_too_large"),
    ],
    ids=["invalid-json", "wrong-shape", "too-large"],
)
async def test_bad_sdk_usage_metrics_get_the_error_shape(
    router: Any, body: bytes, status: int, code: str
) -> None:
    """A bad /v1/m body is an error in the one shape, with CORS, never a 500."""
    response = await router.post("/v1/m", data=body, headers={"Origin": ORIGIN})
    assert response.status == status
    answer = await response.json()
    assert (answer["success"], answer["code"]) == (False, code)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
