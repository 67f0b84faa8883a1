"""Amplitude connector against the local fake: encode -> send_request -> interpret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from destinations.amplitude import AmplitudeConnector, AmplitudeSettings
from destinations.base import Delivery, HttpRequest, Outcome
from destinations.transport import AiohttpTransport, send_request
from router.compliance.erasure import request_deletion
from tests.fakes.amplitude import AmplitudeFake, create_app

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
def fake() -> AmplitudeFake:
    return AmplitudeFake()


@pytest.fixture
async def amplitude(aiohttp_server: ServerFactory, fake: AmplitudeFake) -> AmplitudeConnector:
    server = await aiohttp_server(create_app(fake))
    settings = AmplitudeSettings(
        api_key=fake.api_key,
        secret_key=fake.secret_key,
        endpoint_url=str(server.make_url("/2/httpapi")),
        deletion_url=str(server.make_url("/api/2/deletions/users")),
    )
    return AmplitudeConnector("amp", settings)


def delivery(number: int, **payload: Any) -> Delivery:
    payload.setdefault("userId", f"user-{number:05d}")
    payload.setdefault("properties", {"order_id": f"T{number}", "revenue": 10.5})
    return Delivery(
        message_id=f"msg-{number}",
        type="track",
        timestamp=datetime(2026, 11, 22, 11, 0, number % 60, tzinfo=UTC),
        payload=payload,
        event="Order Completed",
    )


def mutate(request: HttpRequest, change: Callable[[dict[str, Any]], None]) -> HttpRequest:
    body = msgspec.json.decode(request.body)
    change(body)
    return msgspec.structs.replace(request, body=msgspec.json.encode(body))


async def exchange(
    connector: AmplitudeConnector, session: aiohttp.ClientSession, request: HttpRequest
) -> Outcome:
    response = await send_request(session, request, timeout_s=10)
    return connector.interpret(response, request)


async def test_fake_accepts_encoded_batch_and_records_the_events(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """A correctly encoded batch is accepted and every event is recorded."""
    batch = [delivery(i, anonymousId=f"anon-{i:05d}") for i in range(3)]
    [request] = amplitude.encode(batch, NOW).requests
    outcome = await exchange(amplitude, session, request)
    assert (outcome.kind, outcome.failed) == ("ok", {})
    assert [e["insert_id"] for e in fake.events] == ["msg-0", "msg-1", "msg-2"]
    assert fake.events[0]["event_type"] == "Order Completed"


async def test_resending_the_same_events_is_deduplicated_by_insert_id(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """A retry of a request that did arrive does not duplicate events."""
    [request] = amplitude.encode([delivery(1)], NOW).requests
    await exchange(amplitude, session, request)
    await exchange(amplitude, session, request)
    assert len(fake.events) == 1


async def test_server_errors_retry_until_the_fake_accepts(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """Two 500 answers are retries; the third attempt delivers."""
    fake.fail_times = 2
    [request] = amplitude.encode([delivery(1)], NOW).requests
    kinds = [(await exchange(amplitude, session, request)).kind for _ in range(3)]
    assert kinds == ["retry", "retry", "ok"]
    assert len(fake.events) == 1


async def test_throttling_retries_after_retry_after(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """A 429 with Retry-After becomes a retry after that many seconds."""
    fake.fail_times, fake.fail_status, fake.retry_after_s = 1, 429, 12
    [request] = amplitude.encode([delivery(1)], NOW).requests
    outcome = await exchange(amplitude, session, request)
    assert (outcome.kind, outcome.reason, outcome.retry_after_s) == ("retry", "throttled", 12.0)
    assert (await exchange(amplitude, session, request)).kind == "ok"


async def test_throttling_without_retry_after_waits_30_seconds(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """Amplitude's documented 429 body alone means the 30 s pause."""
    fake.fail_times, fake.fail_status = 1, 429
    [request] = amplitude.encode([delivery(1)], NOW).requests
    assert (await exchange(amplitude, session, request)).retry_after_s == 30.0


async def test_fake_rejects_a_four_character_id(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """Mutating a correct request to a 4-character user_id makes the fake answer 400."""
    [request] = amplitude.encode([delivery(1)], NOW).requests

    def shorten(body: dict[str, Any]) -> None:
        body["events"][0]["user_id"] = "abcd"

    outcome = await exchange(amplitude, session, mutate(request, shorten))
    assert fake.responses[-1][0] == 400
    assert fake.responses[-1][1]["events_with_invalid_fields"] == {"user_id": [0]}
    assert (outcome.kind, outcome.failed) == ("permanent", {0: "invalid_field"})
    assert fake.events == []


async def test_partial_rejection_fails_the_bad_event_and_the_rest_is_delivered(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """A 400 naming one event: it fails, the others retry and arrive on the resend."""
    batch = [delivery(i) for i in range(3)]
    [request] = amplitude.encode(batch, NOW).requests

    def break_second(body: dict[str, Any]) -> None:
        body["events"][1]["time"] = "2026-11-22T11:00:00Z"

    outcome = await exchange(amplitude, session, mutate(request, break_second))
    assert (outcome.kind, outcome.failed) == ("retry", {1: "invalid_field"})
    assert fake.events == []
    rest = [batch[request.indices[k]] for k in range(3) if k not in outcome.failed]
    [resend] = amplitude.encode(rest, NOW).requests
    assert (await exchange(amplitude, session, resend)).kind == "ok"
    assert [e["insert_id"] for e in fake.events] == ["msg-0", "msg-2"]


async def test_fake_rejects_an_event_without_any_id(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """Removing user_id and device_id from a correct event is refused as a missing field."""
    [request] = amplitude.encode([delivery(1)], NOW).requests

    def strip_ids(body: dict[str, Any]) -> None:
        del body["events"][0]["user_id"]

    outcome = await exchange(amplitude, session, mutate(request, strip_ids))
    assert fake.responses[-1][1]["events_with_missing_fields"] == {"device_id": [0]}
    assert outcome.failed == {0: "missing_field"}


async def test_fake_rejects_a_request_without_api_key(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """Without api_key the whole request fails permanently."""
    [request] = amplitude.encode([delivery(1)], NOW).requests

    def drop_key(body: dict[str, Any]) -> None:
        del body["api_key"]

    outcome = await exchange(amplitude, session, mutate(request, drop_key))
    assert fake.responses[-1][1]["missing_field"] == "api_key"
    assert (outcome.kind, outcome.reason) == ("permanent", "invalid_request")


async def test_fake_rejects_a_wrong_api_key(
    session: aiohttp.ClientSession, aiohttp_server: ServerFactory, fake: AmplitudeFake
) -> None:
    """A wrong api_key is answered 'Invalid API key' and is permanent."""
    server = await aiohttp_server(create_app(fake))
    wrong = AmplitudeConnector(
        "amp", AmplitudeSettings(api_key="nope", endpoint_url=str(server.make_url("/2/httpapi")))
    )
    [request] = wrong.encode([delivery(1)], NOW).requests
    outcome = await exchange(wrong, session, request)
    assert (outcome.kind, outcome.reason) == ("permanent", "invalid_api_key")


async def test_fake_refuses_2000_events_with_413(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """A request forced to 2,000 events is too large; the encoder never builds one."""
    batch = [delivery(i) for i in range(2000)]
    requests = amplitude.encode(batch, NOW).requests
    assert all(len(r.indices) <= 1000 for r in requests)
    events = [e for r in requests for e in msgspec.json.decode(r.body)["events"]]

    def all_events(body: dict[str, Any]) -> None:
        body["events"] = events

    outcome = await exchange(amplitude, session, mutate(requests[0], all_events))
    assert fake.responses[-1][0] == 413
    assert (outcome.kind, outcome.reason) == ("permanent", "payload_too_large")


@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")  # the forced 1.6 MB
async def test_fake_refuses_a_body_over_1_mb_and_encoder_keeps_under_it(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """Large events are split into bodies under 1 MB that the fake accepts; one big body not."""
    batch = [delivery(i, properties={"blob": "x" * 200_000}) for i in range(8)]
    requests = amplitude.encode(batch, NOW).requests
    assert len(requests) > 1
    for request in requests:
        assert (await exchange(amplitude, session, request)).kind == "ok"
    assert len(fake.events) == 8
    joined = [e for r in requests for e in msgspec.json.decode(r.body)["events"]]

    def everything(body: dict[str, Any]) -> None:
        body["events"] = joined

    outcome = await exchange(amplitude, session, mutate(requests[0], everything))
    assert fake.responses[-1][0] == 413
    assert outcome.reason == "payload_too_large"


async def test_users_over_daily_quota_fail_and_the_others_retry(
    amplitude: AmplitudeConnector, session: aiohttp.ClientSession, fake: AmplitudeFake
) -> None:
    """exceeded_daily_quota_users marks those events permanent; the rest is retried."""
    fake.over_quota_users = {"user-00001"}
    [request] = amplitude.encode([delivery(0), delivery(1)], NOW).requests
    outcome = await exchange(amplitude, session, request)
    assert (outcome.kind, outcome.failed) == ("retry", {1: "daily_quota_exceeded"})


async def test_deletion_schedules_a_deletion_job(
    amplitude: AmplitudeConnector, transport: AiohttpTransport, fake: AmplitudeFake
) -> None:
    """The deletion request posts the ids with Basic auth and returns a receipt without them."""
    receipt = await request_deletion(amplitude, ["user-00001"], transport)
    assert receipt == {
        "destination": "amp",
        "type": "amplitude",
        "ids": 1,
        "http_status": 200,
        "status": "scheduled",
        "reason": "",
        "job_day": "2026-12-22",
        "invalid_ids": 0,
    }
    assert fake.deletions[0]["user_ids"] == ["user-00001"]


async def test_deletion_with_wrong_secret_fails_and_without_secret_skips(
    aiohttp_server: ServerFactory, transport: AiohttpTransport, fake: AmplitudeFake
) -> None:
    """A wrong secret key is a permanent failure; no secret key skips the call."""
    server = await aiohttp_server(create_app(fake))
    url = str(server.make_url("/api/2/deletions/users"))
    wrong = AmplitudeConnector(
        "amp", AmplitudeSettings(api_key=fake.api_key, secret_key="bad", deletion_url=url)
    )
    receipt = await request_deletion(wrong, ["user-00001"], transport)
    assert (receipt["status"], receipt["reason"]) == ("failed", "http_401")
    unset = AmplitudeConnector("amp", AmplitudeSettings(api_key=fake.api_key, deletion_url=url))
    skipped = await request_deletion(unset, ["user-00001"], transport)
    assert (skipped["status"], skipped["reason"]) == ("skipped", "no_secret_key")
    assert fake.deletions == []


async def test_deletion_reports_retry_when_nothing_answers(
    transport: AiohttpTransport,
) -> None:
    """A refused connection is a retry receipt, not an exception."""
    settings = AmplitudeSettings(
        api_key="k", secret_key="s", deletion_url="http://127.0.0.1:9/api/2/deletions/users"
    )
    receipt = await request_deletion(AmplitudeConnector("amp", settings), ["user-1"], transport)
    assert (receipt["status"], receipt["reason"]) == ("retry", "connection_error")
