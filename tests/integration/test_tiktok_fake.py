"""TikTok connector against the local fake: encode -> send_request -> interpret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from destinations.base import ConsentFacts, Delivery, HttpRequest, Outcome
from destinations.tiktok import TikTokConnector, TikTokSettings
from destinations.transport import send_request
from tests.fakes.tiktok import PATH, TikTokFake, create_app

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def fake() -> TikTokFake:
    return TikTokFake()


@pytest.fixture
async def server(aiohttp_server: ServerFactory, fake: TikTokFake) -> TestServer:
    return await aiohttp_server(create_app(fake))


def build(server: TestServer, fake: TikTokFake, **settings: Any) -> TikTokConnector:
    base = {
        "access_token": fake.access_token,
        "pixel_code": fake.pixel_code,
        "endpoint_url": str(server.make_url(PATH)),
    }
    return TikTokConnector("tt", TikTokSettings(**(base | settings)))


@pytest.fixture
def tiktok(server: TestServer, fake: TikTokFake) -> TikTokConnector:
    return build(server, fake)


def delivery(number: int, **payload: Any) -> Delivery:
    payload.setdefault("userId", f"user-{number}")
    payload.setdefault(
        "context",
        {
            "ip": "203.0.113.9",
            "userAgent": "Mozilla/5.0",
            "traits": {"email": f"Buyer{number}@Example.com", "phone": "+1 650 555 1212"},
            "page": {"url": "https://shop.example/thanks"},
        },
    )
    payload.setdefault(
        "properties",
        {"revenue": 16, "currency": "usd", "products": [{"product_id": "p1", "price": 8}]},
    )
    return Delivery(
        message_id=f"msg-{number}",
        type="track",
        timestamp=NOW,
        payload=payload,
        event="Order Completed",
        consent=ConsentFacts(gpc=number % 2 == 1),
    )


def mutate(request: HttpRequest, change: Callable[[dict[str, Any]], None]) -> HttpRequest:
    body = msgspec.json.decode(request.body)
    change(body)
    return msgspec.structs.replace(request, body=msgspec.json.encode(body))


async def exchange(
    connector: TikTokConnector, session: aiohttp.ClientSession, request: HttpRequest
) -> Outcome:
    response = await send_request(session, request, timeout_s=10)
    return connector.interpret(response, request)


async def test_fake_accepts_encoded_batch_with_hashed_user_data(
    tiktok: TikTokConnector, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """Encoded events pass the fake's checks (hashes included) and are recorded."""
    [request] = tiktok.encode([delivery(0), delivery(1)], NOW).requests
    outcome = await exchange(tiktok, session, request)
    assert (outcome.kind, outcome.reason) == ("ok", "")
    assert [e["event_id"] for e in fake.events] == ["msg-0", "msg-1"]
    assert [e["limited_data_use"] for e in fake.events] == [False, True]
    assert fake.events[0]["event"] == "CompletePayment"


async def test_fake_rejects_an_unhashed_email(
    tiktok: TikTokConnector, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """Putting the clear email back into a correct request is refused (code 40002)."""
    [request] = tiktok.encode([delivery(1)], NOW).requests

    def unhash(body: dict[str, Any]) -> None:
        body["data"][0]["user"]["email"] = "buyer1@example.com"

    outcome = await exchange(tiktok, session, mutate(request, unhash))
    assert fake.responses[-1][1]["code"] == 40002
    assert "user.email" in fake.responses[-1][1]["message"]
    assert (outcome.kind, outcome.reason) == ("permanent", "invalid_params")
    assert fake.events == []


async def test_fake_rejects_an_unhashed_phone(
    tiktok: TikTokConnector, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """A phone number in clear is refused."""
    [request] = tiktok.encode([delivery(1)], NOW).requests

    def unhash(body: dict[str, Any]) -> None:
        body["data"][0]["user"]["phone"] = ["+16505551212"]

    outcome = await exchange(tiktok, session, mutate(request, unhash))
    assert outcome.reason == "invalid_params"
    assert fake.events == []


async def test_fake_rejects_a_request_without_access_token(
    tiktok: TikTokConnector, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """Without the Access-Token header the answer is code 40104, permanent."""
    [request] = tiktok.encode([delivery(1)], NOW).requests
    headers = {k: v for k, v in request.headers.items() if k != "Access-Token"}
    outcome = await exchange(tiktok, session, msgspec.structs.replace(request, headers=headers))
    assert (outcome.kind, outcome.reason) == ("permanent", "missing_access_token")


async def test_fake_rejects_a_wrong_access_token(
    server: TestServer, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """A wrong token is code 40105, permanent."""
    connector = build(server, fake, access_token="revoked")
    [request] = connector.encode([delivery(1)], NOW).requests
    outcome = await exchange(connector, session, request)
    assert (outcome.kind, outcome.reason) == ("permanent", "invalid_access_token")


async def test_fake_rejects_another_pixel(
    server: TestServer, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """A pixel the token does not own is refused with code 40001."""
    connector = build(server, fake, pixel_code="COTHERPIXEL")
    [request] = connector.encode([delivery(1)], NOW).requests
    assert (await exchange(connector, session, request)).reason == "no_permission"


async def test_fake_rejects_1001_events(
    tiktok: TikTokConnector, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """Forcing 1,001 events into one request is refused; the encoder splits them itself."""
    requests = tiktok.encode([delivery(i, context={}) for i in range(1001)], NOW).requests
    assert [len(r.indices) for r in requests] == [1000, 1]
    extra = msgspec.json.decode(requests[1].body)["data"]

    def add_one(body: dict[str, Any]) -> None:
        body["data"].extend(extra)

    outcome = await exchange(tiktok, session, mutate(requests[0], add_one))
    assert "data: size" in fake.responses[-1][1]["message"]
    assert outcome.reason == "invalid_params"
    for request in requests:
        assert (await exchange(tiktok, session, request)).kind == "ok"
    assert len(fake.events) == 1001


@pytest.mark.parametrize("field", ["event", "event_time", "event_id"])
async def test_fake_rejects_an_event_missing_a_required_field(
    tiktok: TikTokConnector, session: aiohttp.ClientSession, fake: TikTokFake, field: str
) -> None:
    """event, event_time and event_id are required on every data entry."""
    [request] = tiktok.encode([delivery(1)], NOW).requests

    def drop(body: dict[str, Any]) -> None:
        del body["data"][0][field]

    outcome = await exchange(tiktok, session, mutate(request, drop))
    assert f"data[0].{field}" in fake.responses[-1][1]["message"]
    assert outcome.kind == "permanent"


async def test_fake_rejects_millisecond_event_time(
    tiktok: TikTokConnector, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """event_time in milliseconds instead of seconds is refused."""
    [request] = tiktok.encode([delivery(1)], NOW).requests

    def to_ms(body: dict[str, Any]) -> None:
        body["data"][0]["event_time"] *= 1000

    assert (await exchange(tiktok, session, mutate(request, to_ms))).kind == "permanent"


@pytest.mark.parametrize(
    ("status", "reason", "retry_after"),
    [(500, "http_500", 9.0), (429, "http_429", 9.0), (40100, "rate_limited", None)],
)
async def test_failures_retry_until_the_fake_accepts(
    tiktok: TikTokConnector,
    session: aiohttp.ClientSession,
    fake: TikTokFake,
    status: int,
    reason: str,
    retry_after: float | None,
) -> None:
    """HTTP 500 and 429 (with Retry-After) and code 40100 retry; the next attempt delivers."""
    fake.fail_times, fake.fail_status, fake.retry_after_s = 2, status, 9
    [request] = tiktok.encode([delivery(1)], NOW).requests
    outcomes = [await exchange(tiktok, session, request) for _ in range(3)]
    assert [o.kind for o in outcomes] == ["retry", "retry", "ok"]
    assert (outcomes[0].reason, outcomes[0].retry_after_s) == (reason, retry_after)
    assert len(fake.events) == 1


async def test_resending_the_same_events_is_deduplicated(
    tiktok: TikTokConnector, session: aiohttp.ClientSession, fake: TikTokFake
) -> None:
    """event + event_id dedup: a resend does not double count."""
    [request] = tiktok.encode([delivery(1)], NOW).requests
    await exchange(tiktok, session, request)
    await exchange(tiktok, session, request)
    assert len(fake.events) == 1
