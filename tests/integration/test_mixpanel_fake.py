"""Mixpanel connector against the local fake: encode -> send_request -> interpret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from destinations.base import Delivery, HttpRequest, Outcome
from destinations.mixpanel import MixpanelConnector, MixpanelSettings
from destinations.transport import AiohttpTransport, send_request
from router.compliance.erasure import request_deletion
from tests.fakes.mixpanel import MixpanelFake, create_app

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    http = AiohttpTransport()
    yield http
    await http.aclose()


@pytest.fixture
def fake() -> MixpanelFake:
    return MixpanelFake(clock=lambda: NOW)


@pytest.fixture
async def server(aiohttp_server: ServerFactory, fake: MixpanelFake) -> TestServer:
    return await aiohttp_server(create_app(fake))


def build(server: TestServer, fake: MixpanelFake, **settings: Any) -> MixpanelConnector:
    base: dict[str, Any] = {
        "endpoint_url": str(server.make_url("/import")),
        "gdpr_url": str(server.make_url("/api/app")),
    }
    if not {"api_secret", "project_token", "service_account_username"} & set(settings):
        base |= {
            "project_id": fake.project_id,
            "service_account_username": fake.service_account_username,
            "service_account_secret": fake.service_account_secret,
        }
    return MixpanelConnector("mp", MixpanelSettings(**(base | settings)))


@pytest.fixture
def mixpanel(server: TestServer, fake: MixpanelFake) -> MixpanelConnector:
    return build(server, fake)


def delivery(number: int, **payload: Any) -> Delivery:
    payload.setdefault("userId", f"user-{number}")
    payload.setdefault("properties", {"order_id": f"T{number}", "total": 12})
    return Delivery(
        message_id=f"msg-{number}",
        type="track",
        timestamp=NOW - timedelta(minutes=5, seconds=number),
        payload=payload,
        event="Order Completed",
    )


def mutate(request: HttpRequest, change: Callable[[list[dict[str, Any]]], None]) -> HttpRequest:
    events = msgspec.json.decode(request.body)
    change(events)
    return msgspec.structs.replace(request, body=msgspec.json.encode(events))


async def exchange(
    connector: MixpanelConnector, session: aiohttp.ClientSession, request: HttpRequest
) -> Outcome:
    response = await send_request(session, request, timeout_s=10)
    return connector.interpret(response, request)


async def test_fake_accepts_encoded_batch_and_records_the_events(
    mixpanel: MixpanelConnector, session: aiohttp.ClientSession, fake: MixpanelFake
) -> None:
    """A correctly encoded batch passes strict validation and every event is recorded."""
    batch = [delivery(i, anonymousId=f"anon-{i}") for i in range(3)]
    [request] = mixpanel.encode(batch, NOW).requests
    outcome = await exchange(mixpanel, session, request)
    assert (outcome.kind, outcome.failed) == ("ok", {})
    assert [e["properties"]["$insert_id"] for e in fake.events] == ["msg-0", "msg-1", "msg-2"]
    assert fake.responses[-1] == (200, {"code": 200, "num_records_imported": 3, "status": "OK"})


@pytest.mark.parametrize("credential", ["api_secret", "project_token"])
async def test_project_secret_and_token_authenticate(
    server: TestServer, session: aiohttp.ClientSession, fake: MixpanelFake, credential: str
) -> None:
    """The legacy project secret and the project token are accepted credentials."""
    value = fake.api_secret if credential == "api_secret" else fake.project_token
    connector = build(server, fake, **{credential: value})
    [request] = connector.encode([delivery(1)], NOW).requests
    assert (await exchange(connector, session, request)).kind == "ok"


async def test_fake_rejects_bad_credentials_permanently(
    server: TestServer, session: aiohttp.ClientSession, fake: MixpanelFake
) -> None:
    """A wrong service account secret is a 401, permanent."""
    connector = build(
        server,
        fake,
        project_id=fake.project_id,
        service_account_username=fake.service_account_username,
        service_account_secret="wrong",
    )
    [request] = connector.encode([delivery(1)], NOW).requests
    outcome = await exchange(connector, session, request)
    assert (outcome.kind, outcome.reason) == ("permanent", "invalid_credentials")
    assert fake.events == []


async def test_server_errors_and_rate_limits_retry_until_accepted(
    mixpanel: MixpanelConnector, session: aiohttp.ClientSession, fake: MixpanelFake
) -> None:
    """A 503 then a 429 with Retry-After are retries; the third attempt delivers once."""
    [request] = mixpanel.encode([delivery(1)], NOW).requests
    fake.fail_times, fake.fail_status = 1, 503
    first = await exchange(mixpanel, session, request)
    fake.fail_times, fake.fail_status, fake.retry_after_s = 1, 429, 4
    second = await exchange(mixpanel, session, request)
    third = await exchange(mixpanel, session, request)
    assert [first.kind, second.kind, third.kind] == ["retry", "retry", "ok"]
    assert second.retry_after_s == 4.0
    assert len(fake.events) == 1


async def test_fake_rejects_2001_events(
    mixpanel: MixpanelConnector, session: aiohttp.ClientSession, fake: MixpanelFake
) -> None:
    """Forcing 2,001 events into one request is refused; the encoder splits them itself."""
    batch = [delivery(i) for i in range(2001)]
    requests = mixpanel.encode(batch, NOW).requests
    assert [len(r.indices) for r in requests] == [2000, 1]
    extra = msgspec.json.decode(requests[1].body)

    def add_one(events: list[dict[str, Any]]) -> None:
        events.extend(extra)

    outcome = await exchange(mixpanel, session, mutate(requests[0], add_one))
    assert fake.responses[-1][0] == 400
    assert (outcome.kind, outcome.reason) == ("permanent", "invalid_request")
    assert fake.events == []


async def test_missing_insert_id_fails_that_event_and_the_others_are_imported(
    mixpanel: MixpanelConnector, session: aiohttp.ClientSession, fake: MixpanelFake
) -> None:
    """Without $insert_id an event is a failed record; Mixpanel imports the valid ones."""
    [request] = mixpanel.encode([delivery(i) for i in range(3)], NOW).requests

    def drop_insert_id(events: list[dict[str, Any]]) -> None:
        del events[1]["properties"]["$insert_id"]

    outcome = await exchange(mixpanel, session, mutate(request, drop_insert_id))
    assert fake.responses[-1][1]["failed_records"][0]["field"] == "properties.$insert_id"
    assert (outcome.kind, outcome.failed) == ("ok", {1: "invalid_insert_id"})
    assert [e["properties"]["$insert_id"] for e in fake.events] == ["msg-0", "msg-2"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"distinct_id": None}, "invalid_distinct_id"),
        ({"distinct_id": "undefined"}, "invalid_distinct_id"),
        ({"time": None}, "invalid_time"),
        ({"time": "2026-11-22"}, "invalid_time"),
        ({"$insert_id": "has spaces and is far too long to be an insert id"}, "invalid_insert_id"),
    ],
)
async def test_fake_rejects_missing_or_invalid_required_properties(
    mixpanel: MixpanelConnector,
    session: aiohttp.ClientSession,
    fake: MixpanelFake,
    change: dict[str, Any],
    reason: str,
) -> None:
    """Strict mode refuses an event whose time, distinct_id or $insert_id is wrong."""
    [request] = mixpanel.encode([delivery(1)], NOW).requests

    def apply(events: list[dict[str, Any]]) -> None:
        for key, value in change.items():
            if value is None:
                del events[0]["properties"][key]
            else:
                events[0]["properties"][key] = value

    outcome = await exchange(mixpanel, session, mutate(request, apply))
    assert (outcome.kind, outcome.failed) == ("permanent", {0: reason})
    assert fake.events == []


async def test_fake_rejects_events_over_an_hour_in_the_future(
    mixpanel: MixpanelConnector, session: aiohttp.ClientSession, fake: MixpanelFake
) -> None:
    """An event moved 2 hours ahead fails; the encoder would have dropped it."""
    future = NOW + timedelta(hours=2)
    dropped = mixpanel.encode([msgspec.structs.replace(delivery(1), timestamp=future)], NOW)
    assert dropped.dropped[0].reason == "time_in_future"
    [request] = mixpanel.encode([delivery(1)], NOW).requests

    def move(events: list[dict[str, Any]]) -> None:
        events[0]["properties"]["time"] = int(future.timestamp() * 1000)

    outcome = await exchange(mixpanel, session, mutate(request, move))
    assert outcome.failed == {0: "invalid_time"}


async def test_resending_the_same_events_is_deduplicated(
    mixpanel: MixpanelConnector, session: aiohttp.ClientSession, fake: MixpanelFake
) -> None:
    """A retry of a delivered request does not create duplicates."""
    [request] = mixpanel.encode([delivery(1)], NOW).requests
    await exchange(mixpanel, session, request)
    await exchange(mixpanel, session, request)
    assert len(fake.events) == 1


async def test_deletion_creates_a_gdpr_deletion_task(
    server: TestServer, transport: AiohttpTransport, fake: MixpanelFake
) -> None:
    """The deletion request posts to the GDPR API and returns the task id without the ids."""
    connector = build(server, fake, project_token=fake.project_token, gdpr_token=fake.gdpr_token)
    receipt = await request_deletion(connector, ["user-1", "user-2"], transport)
    assert receipt == {
        "destination": "mp",
        "type": "mixpanel",
        "ids": 2,
        "http_status": 200,
        "status": "scheduled",
        "reason": "",
        "task_id": "task-1",
    }
    assert fake.deletions == [{"distinct_ids": ["user-1", "user-2"], "compliance_type": "GDPR"}]


async def test_deletion_with_a_bad_token_fails_and_without_one_skips(
    server: TestServer, transport: AiohttpTransport, fake: MixpanelFake
) -> None:
    """A wrong OAuth token fails permanently; no token skips the call."""
    wrong = build(server, fake, project_token=fake.project_token, gdpr_token="bad")
    receipt = await request_deletion(wrong, ["user-1"], transport)
    assert (receipt["status"], receipt["reason"]) == ("failed", "http_401")
    unset = build(server, fake, project_token=fake.project_token)
    skipped = await request_deletion(unset, ["user-1"], transport)
    assert (skipped["status"], skipped["reason"]) == ("skipped", "no_gdpr_token")


async def test_deletion_rate_limit_is_a_retry_receipt(
    server: TestServer, transport: AiohttpTransport, fake: MixpanelFake
) -> None:
    """The GDPR API's one-request-a-second 429 comes back as status retry."""
    fake.fail_times, fake.fail_status = 1, 429
    connector = build(server, fake, project_token=fake.project_token, gdpr_token=fake.gdpr_token)
    receipt = await request_deletion(connector, ["user-1"], transport)
    assert (receipt["status"], receipt["reason"]) == ("retry", "http_429")
