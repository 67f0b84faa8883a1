"""GA4 connector end to end against the fake Measurement Protocol server (no Redis)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from destinations.base import ConsentFacts, Delivery, HttpRequest, Outcome
from destinations.ga4 import GA4Connector, GA4Settings
from destinations.transport import send_request
from tests.fakes.ga4 import GA4Fake, create_app

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def fake_server(aiohttp_server: ServerFactory) -> tuple[GA4Fake, str]:
    fake = GA4Fake()
    server = await aiohttp_server(create_app(fake))
    return fake, str(server.make_url(""))


def connector(base: str, **settings: Any) -> GA4Connector:
    values = {
        "measurement_id": "G-TEST123",
        "api_secret": "secret",
        "endpoint_url": f"{base}/mp/collect",
        "debug_endpoint_url": f"{base}/debug/mp/collect",
        **settings,
    }
    return GA4Connector("ga4-web", GA4Settings.model_validate(values))


def delivery(event: str, index: int = 0, **payload: Any) -> Delivery:
    now = datetime.now(UTC)
    body = {"anonymousId": "507f191e810c19729de860ea", "event": event, **payload}
    return Delivery(
        message_id=f"m-{index}",
        type="track",
        timestamp=now - timedelta(seconds=index),
        payload=body,
        event=event,
        consent=ConsentFacts(ad_user_data=True, ad_personalization=False),
    )


def realistic_batch() -> list[Delivery]:
    traits = {"email": "Jane.Doe@gmail.com", "phone": "+1 650 555 1212", "firstName": "Jane"}
    order = {
        "order_id": "T-1",
        "total": 30,
        "currency": "usd",
        "products": [{"product_id": "p1", "name": "Mat", "price": 15, "quantity": 2}],
    }
    return [
        delivery("Order Completed", 0, userId="u-1", properties=order, context={"traits": traits}),
        delivery("Video Played", 1, properties={"title": "Intro", "seconds": 12}),
        delivery("Session Start", 2),
        delivery("Product Viewed", 3, anonymousId=None, properties={"product_id": "p1"}),
        Delivery(
            message_id="page",
            type="page",
            timestamp=datetime.now(UTC),
            payload={"anonymousId": "42.7", "context": {"page": {"url": "https://shop.test/"}}},
        ),
    ]


async def post(session: aiohttp.ClientSession, request: HttpRequest) -> Any:
    return await send_request(session, request, timeout_s=5)


async def test_valid_batch_is_accepted_without_violations(fake_server: tuple[GA4Fake, str]) -> None:
    """A realistic batch reaches the fake with zero rule violations and every good event."""
    fake, base = fake_server
    conn = connector(base)
    encoded = conn.encode(realistic_batch(), datetime.now(UTC))
    assert sorted((d.index, d.reason) for d in encoded.dropped) == [
        (2, "reserved_event_name"),
        (3, "missing_client_id"),
    ]
    async with aiohttp.ClientSession() as session:
        for request in encoded.requests:
            response = await post(session, request)
            assert response.status == 204
            assert conn.interpret(response, request) == Outcome(kind="ok")
    assert fake.violations == []
    assert sorted(e["event"]["name"] for e in fake.accepted) == [
        "page_view",
        "purchase",
        "video_played",
    ]
    purchase = next(e for e in fake.accepted if e["event"]["name"] == "purchase")
    assert purchase["user_id"] == "u-1"
    assert purchase["consent"] == {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"}
    assert set(purchase["user_data"]) == {"sha256_email_address", "sha256_phone_number", "address"}


async def test_validation_server_finds_nothing_in_encoded_requests(
    fake_server: tuple[GA4Fake, str],
) -> None:
    """validate_only requests get an empty validationMessages list and an ok outcome."""
    fake, base = fake_server
    conn = connector(base, validate_only=True)
    encoded = conn.encode(realistic_batch(), datetime.now(UTC))
    async with aiohttp.ClientSession() as session:
        for request in encoded.requests:
            response = await post(session, request)
            assert json.loads(response.body) == {"validationMessages": []}
            assert conn.interpret(response, request).kind == "ok"
    assert fake.accepted == []


def mutate(request: HttpRequest, change: Callable[[dict[str, Any]], None]) -> HttpRequest:
    body = json.loads(request.body)
    change(body)
    return HttpRequest(
        method=request.method,
        url=request.url,
        headers=request.headers,
        body=json.dumps(body).encode(),
        indices=request.indices,
        secrets=request.secrets,
    )


def _unhashed_email(body: dict[str, Any]) -> None:
    body["user_data"]["sha256_email_address"] = ["jane.doe@gmail.com"]


def _twenty_six_events(body: dict[str, Any]) -> None:
    body["events"] = body["events"] * 26


def _no_client_id(body: dict[str, Any]) -> None:
    del body["client_id"]


def _uuid_client_id(body: dict[str, Any]) -> None:
    body["client_id"] = "507f191e-810c-1972-9de8-60ea00000000"


def _bad_name(body: dict[str, Any]) -> None:
    body["events"][0]["name"] = "_badEventName"


def _reserved_name(body: dict[str, Any]) -> None:
    body["events"][0]["name"] = "session_start"


def _too_many_params(body: dict[str, Any]) -> None:
    body["events"][0]["params"] = {f"p{i}": i for i in range(26)}


def _old_timestamp(body: dict[str, Any]) -> None:
    body["events"][0]["timestamp_micros"] = int((time.time() - 73 * 3600) * 1_000_000)


def _long_value(body: dict[str, Any]) -> None:
    body["events"][0]["params"]["label"] = "x" * 101


def _user_data_without_user_id(body: dict[str, Any]) -> None:
    del body["user_id"]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (_unhashed_email, "VALUE_INVALID"),
        (_twenty_six_events, "EXCEEDED_MAX_ENTITIES"),
        (_no_client_id, "VALUE_REQUIRED"),
        (_uuid_client_id, "VALUE_INVALID"),
        (_bad_name, "NAME_INVALID"),
        (_reserved_name, "NAME_RESERVED"),
        (_too_many_params, "EXCEEDED_MAX_ENTITIES"),
        (_old_timestamp, "VALUE_OUT_OF_BOUNDS"),
        (_long_value, "VALUE_OUT_OF_BOUNDS"),
        (_user_data_without_user_id, "VALUE_REQUIRED"),
    ],
)
async def test_fake_rejects_a_broken_request(
    fake_server: tuple[GA4Fake, str], change: Callable[[dict[str, Any]], None], code: str
) -> None:
    """A correct request, mutated to break one rule, is flagged by both endpoints."""
    fake, base = fake_server
    good = connector(base).encode(realistic_batch()[:1], datetime.now(UTC)).requests[0]
    bad = mutate(good, change)
    debug = HttpRequest(
        method=bad.method,
        url=bad.url.replace("/mp/collect", "/debug/mp/collect"),
        headers=bad.headers,
        body=bad.body,
        indices=bad.indices,
    )
    async with aiohttp.ClientSession() as session:
        assert (await post(session, good)).status == 204
        assert fake.violations == []
        validation = json.loads((await post(session, debug)).body)["validationMessages"]
        assert code in {m["validationCode"] for m in validation}
        response = await post(session, bad)
    assert response.status == 204  # production hides the problem...
    assert code in {v["validationCode"] for v in fake.violations}  # ...the fake does not
    assert len(fake.accepted) == 1


async def test_validation_messages_map_to_failed_events(fake_server: tuple[GA4Fake, str]) -> None:
    """A bad event named by the validation server fails alone; the request is otherwise ok."""
    _, base = fake_server
    conn = connector(base, validate_only=True)
    now = datetime.now(UTC)
    request = conn.encode([delivery("A", 0), delivery("B", 1)], now).requests[0]

    def rename_second(body: dict[str, Any]) -> None:
        body["events"][1]["name"] = "9lives"

    async with aiohttp.ClientSession() as session:
        response = await post(session, mutate(request, rename_second))
    outcome = conn.interpret(response, request)
    assert (outcome.kind, outcome.failed) == ("ok", {1: "ga4_name_invalid"})


async def test_server_errors_are_retried_then_succeed(fake_server: tuple[GA4Fake, str]) -> None:
    """Two 500s give retry outcomes; the third attempt is accepted."""
    fake, base = fake_server
    fake.fail_next(500, times=2)
    conn = connector(base)
    request = conn.encode([delivery("Clicked")], datetime.now(UTC)).requests[0]
    kinds = []
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            kinds.append(conn.interpret(await post(session, request), request).kind)
    assert kinds == ["retry", "retry", "ok"]
    assert [e["event"]["name"] for e in fake.accepted] == ["clicked"]


async def test_rate_limit_honours_retry_after(fake_server: tuple[GA4Fake, str]) -> None:
    """429 with Retry-After is a retry after that many seconds."""
    fake, base = fake_server
    fake.fail_next(429, retry_after="7")
    conn = connector(base)
    request = conn.encode([delivery("Clicked")], datetime.now(UTC)).requests[0]
    async with aiohttp.ClientSession() as session:
        outcome = conn.interpret(await post(session, request), request)
    assert (outcome.kind, outcome.retry_after_s) == ("retry", 7.0)


async def test_client_error_is_permanent(fake_server: tuple[GA4Fake, str]) -> None:
    """A 4xx (here a 413 from an oversized body) is permanent and not retried."""
    _, base = fake_server
    conn = connector(base)
    request = conn.encode([delivery("Clicked")], datetime.now(UTC)).requests[0]
    oversized = HttpRequest(
        method="POST",
        url=request.url,
        headers=request.headers,
        body=b" " * 131_000 + request.body,
        indices=request.indices,
    )
    async with aiohttp.ClientSession() as session:
        outcome = conn.interpret(await post(session, oversized), oversized)
    assert (outcome.kind, outcome.reason) == ("permanent", "http_413")
