"""Meta CAPI connector end to end against the fake Conversions API server (no Redis)."""

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

from destinations.base import ConsentFacts, Delivery, HttpRequest, HttpResponse
from destinations.meta_capi import MetaCapiConnector, MetaCapiSettings
from destinations.transport import send_request
from tests.fakes.meta_capi import MetaCapiFake, create_app

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)"


@pytest.fixture
async def fake_server(aiohttp_server: ServerFactory) -> tuple[MetaCapiFake, str]:
    fake = MetaCapiFake()
    server = await aiohttp_server(create_app(fake))
    return fake, str(server.make_url("/v25.0/1234567890/events"))


def connector(endpoint: str, **settings: Any) -> MetaCapiConnector:
    values = {"pixel_id": "1234567890", "access_token": "tok", "endpoint_url": endpoint}
    return MetaCapiConnector("meta", MetaCapiSettings.model_validate({**values, **settings}))


def delivery(
    event: str, index: int = 0, *, age: timedelta | None = None, **payload: Any
) -> Delivery:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "anonymousId": f"anon-{index}",
        "event": event,
        "context": {
            "page": {"url": "https://shop.test/checkout"},
            "userAgent": UA,
            "ip": "2001:db8::1",
            "traits": {"email": "John_Smith@gmail.com", "phone": "+1 650 555 1212"},
        },
        **payload,
    }
    return Delivery(
        message_id=f"msg-{index}",
        type="track",
        timestamp=now - (age if age is not None else timedelta(seconds=index)),
        payload=body,
        event=event,
        consent=ConsentFacts(us_opt_out=index % 2 == 1),
    )


def realistic_batch() -> list[Delivery]:
    order = {
        "order_id": "T-1",
        "revenue": 30,
        "currency": "usd",
        "products": [{"product_id": "p1", "price": 15, "quantity": 2}],
        "fbp": "fb.1.1558571054389.1098115397",
    }
    return [
        delivery("Order Completed", 0, properties=order),
        delivery("Product Viewed", 1, properties={"product_id": "p1", "price": 15}),
        delivery("Signed Up", 2, age=timedelta(days=8)),
        delivery("Newsletter Joined", 3),
    ]


async def post(request: HttpRequest) -> HttpResponse:
    async with aiohttp.ClientSession() as session:
        return await send_request(session, request, timeout_s=5)


async def test_valid_batch_is_accepted(fake_server: tuple[MetaCapiFake, str]) -> None:
    """Encoded events pass every fake rule; the stale one was dropped before sending."""
    fake, endpoint = fake_server
    conn = connector(endpoint)
    encoded = conn.encode(realistic_batch(), datetime.now(UTC))
    assert [(d.index, d.reason) for d in encoded.dropped] == [(2, "too_old")]
    assert len(encoded.requests) == 1
    response = await post(encoded.requests[0])
    assert response.status == 200, response.body
    assert conn.interpret(response, encoded.requests[0]).kind == "ok"
    assert json.loads(response.body)["events_received"] == 3
    assert fake.rejections == []
    assert [e["event_id"] for e in fake.accepted] == ["msg-0", "msg-1", "msg-3"]
    assert [e["data_processing_options"] for e in fake.accepted] == [[], ["LDU"], ["LDU"]]


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
    body["data"][1]["user_data"]["em"] = ["john_smith@gmail.com"]


def _phone_with_plus(body: dict[str, Any]) -> None:
    body["data"][0]["user_data"]["ph"] = ["+16505551212"]


def _hashed_ip(body: dict[str, Any]) -> None:
    body["data"][0]["user_data"]["client_ip_address"] = "a" * 64


def _stale_event(body: dict[str, Any]) -> None:
    body["data"][2]["event_time"] = int(time.time()) - 8 * 24 * 3600


def _too_many_events(body: dict[str, Any]) -> None:
    body["data"] = (body["data"] * 334)[:1001]


def _no_event_name(body: dict[str, Any]) -> None:
    del body["data"][0]["event_name"]


def _no_event_time(body: dict[str, Any]) -> None:
    del body["data"][0]["event_time"]


def _no_action_source(body: dict[str, Any]) -> None:
    del body["data"][0]["action_source"]


def _no_user_agent(body: dict[str, Any]) -> None:
    del body["data"][0]["user_data"]["client_user_agent"]


def _bad_ldu(body: dict[str, Any]) -> None:
    body["data"][1]["data_processing_options"] = ["CCPA"]


@pytest.mark.parametrize(
    "change",
    [
        _unhashed_email,
        _phone_with_plus,
        _hashed_ip,
        _stale_event,
        _too_many_events,
        _no_event_name,
        _no_event_time,
        _no_action_source,
        _no_user_agent,
        _bad_ldu,
    ],
)
async def test_fake_rejects_the_whole_broken_request(
    fake_server: tuple[MetaCapiFake, str], change: Callable[[dict[str, Any]], None]
) -> None:
    """One broken event fails the whole request with a code 100 error; nothing is recorded."""
    fake, endpoint = fake_server
    conn = connector(endpoint)
    good = conn.encode(realistic_batch(), datetime.now(UTC)).requests[0]
    bad = mutate(good, change)
    response = await post(bad)
    assert response.status == 400
    assert json.loads(response.body)["error"]["code"] == 100
    assert fake.accepted == []
    outcome = conn.interpret(response, bad)
    assert outcome.kind == "permanent"
    assert outcome.reason.startswith("meta_error_100")
    assert (await post(good)).status == 200


async def test_unhashed_email_reports_meta_subcode(fake_server: tuple[MetaCapiFake, str]) -> None:
    """An unhashed contact field gives meta_error_100_2804016, like Meta's real answer."""
    _, endpoint = fake_server
    conn = connector(endpoint)
    bad = mutate(conn.encode(realistic_batch(), datetime.now(UTC)).requests[0], _unhashed_email)
    outcome = conn.interpret(await post(bad), bad)
    assert (outcome.kind, outcome.reason) == ("permanent", "meta_error_100_2804016")


async def test_bisecting_a_rejected_batch_isolates_the_bad_event(
    fake_server: tuple[MetaCapiFake, str],
) -> None:
    """Halves of a rejected batch are accepted except the half holding the bad event."""
    fake, endpoint = fake_server
    conn = connector(endpoint)
    batch = [delivery("Clicked", i) for i in range(4)]
    bad_delivery = Delivery(
        message_id=batch[3].message_id,
        type="track",
        timestamp=batch[3].timestamp,
        payload={**batch[3].payload, "context": {"traits": {"email": "x@y.co"}}},
        event="Clicked",
    )
    # Sent as a system event, the missing page URL and user agent are allowed by the encoder,
    # then forced to "website": the fake refuses it, as Meta would.
    system = connector(endpoint, action_source="system_generated")
    request = system.encode([*batch[:3], bad_delivery], datetime.now(UTC)).requests[0]

    def as_website(body: dict[str, Any]) -> None:
        for event in body["data"]:
            event["action_source"] = "website"

    whole = mutate(request, as_website)
    assert conn.interpret(await post(whole), whole).kind == "permanent"
    assert conn.split_on_rejection is True
    first, second = (
        mutate(whole, lambda body: body.update(data=body["data"][:2])),
        mutate(whole, lambda body: body.update(data=body["data"][2:])),
    )
    assert conn.interpret(await post(first), first).kind == "ok"
    assert conn.interpret(await post(second), second).kind == "permanent"
    assert [e["event_id"] for e in fake.accepted] == ["msg-0", "msg-1"]


async def test_rate_limit_then_success(fake_server: tuple[MetaCapiFake, str]) -> None:
    """Code 17 (user throttled) and 500s retry; the next attempt is accepted."""
    fake, endpoint = fake_server
    fake.fail_next(400, code=17, retry_after="12")
    fake.fail_next(500)
    conn = connector(endpoint)
    request = conn.encode([delivery("Clicked")], datetime.now(UTC)).requests[0]
    first = conn.interpret(await post(request), request)
    assert (first.kind, first.reason, first.retry_after_s) == ("retry", "meta_error_17", 12.0)
    second = conn.interpret(await post(request), request)
    assert (second.kind, second.reason) == ("retry", "http_500")
    assert conn.interpret(await post(request), request).kind == "ok"
    assert len(fake.accepted) == 1


async def test_missing_token_is_permanent(fake_server: tuple[MetaCapiFake, str]) -> None:
    """Without an access token the fake answers code 190: permanent."""
    _, endpoint = fake_server
    conn = connector(endpoint)
    request = conn.encode([delivery("Clicked")], datetime.now(UTC)).requests[0]
    anonymous = HttpRequest(
        method="POST",
        url=request.url.split("?")[0],
        headers=request.headers,
        body=request.body,
        indices=request.indices,
    )
    outcome = conn.interpret(await post(anonymous), anonymous)
    assert (outcome.kind, outcome.reason) == ("permanent", "meta_error_190")
