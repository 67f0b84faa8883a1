"""The ingestion API on a real Redis: statuses, error codes, partial batches, quarantine."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import itertools
import json
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from router.edge import ingest as ingest_module
from router.edge.app import backlog_of
from router.queue.items import entry_items
from router.queue.keys import QUARANTINE, queue_key
from router.routing import CompiledDestination
from tests.conftest import WRITE_KEY, AppFactory, routing_from


def _auth(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _track(**extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": "Order Completed",
        "anonymousId": "anon-1",
        "properties": {"order_id": "o-1", "revenue": 10},
    }
    event.update(extra)
    return event


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


@pytest.mark.parametrize("route", ["track", "t"])
async def test_track_and_alias_route_accept_one_event(router: Any, route: str) -> None:
    """`/v1/track` and analytics.js's `/v1/t` accept an event and answer success."""
    response = await router.post(f"/v1/{route}", json=_track(), headers=_auth())
    assert response.status == 200
    assert await response.json() == {"success": True}


@pytest.mark.parametrize(
    ("route", "event"),
    [
        ("identify", {"userId": "u1", "traits": {"plan": "pro"}}),
        ("i", {"userId": "u1"}),
        ("page", {"anonymousId": "a", "name": "Home"}),
        ("p", {"anonymousId": "a"}),
        ("screen", {"anonymousId": "a", "name": "Cart"}),
        ("s", {"anonymousId": "a"}),
        ("group", {"userId": "u1", "groupId": "g1"}),
        ("g", {"userId": "u1", "groupId": "g1"}),
        ("alias", {"userId": "u2", "previousId": "u1"}),
        ("a", {"userId": "u2", "previousId": "u1"}),
    ],
)
async def test_every_event_type_is_accepted(router: Any, route: str, event: dict[str, Any]) -> None:
    """All six types and their one-letter aliases are accepted."""
    response = await router.post(f"/v1/{route}", json=event, headers=_auth())
    assert response.status == 200, await response.text()


async def test_write_key_in_text_plain_body_is_accepted(router: Any) -> None:
    """analytics.js posts text/plain with the write key inside the body."""
    body = json.dumps(_track(writeKey=WRITE_KEY))
    response = await router.post("/v1/t", data=body, headers={"Content-Type": "text/plain"})
    assert response.status == 200


async def test_unknown_write_key_gets_401(router: Any) -> None:
    """A wrong key is refused with the one error shape."""
    response = await router.post("/v1/track", json=_track(), headers=_auth("nope"))
    assert response.status == 401
    body = await response.json()
    assert body["success"] is False
    assert body["code"] == "invalid_write_key"
    assert body["message"]


async def test_missing_write_key_gets_401(router: Any) -> None:
    """No key anywhere: 401 missing_write_key."""
    response = await router.post("/v1/track", json=_track())
    assert response.status == 401
    assert (await response.json())["code"] == "missing_write_key"


async def test_non_json_body_gets_400(router: Any) -> None:
    """Nothing usable: 400 invalid_json."""
    response = await router.post("/v1/batch", data=b"{not json", headers=_auth())
    assert response.status == 400
    assert (await response.json())["code"] == "invalid_json"


async def test_batch_with_one_invalid_event_accepts_the_others(
    router: Any, redis_client: aioredis.Redis
) -> None:
    """The bad event is reported with index, code and path and quarantined; the rest queue."""
    batch = [
        {"type": "track", **_track(messageId="m-0")},
        {"type": "track", **_track(messageId="m-1", timestamp="yesterday")},
        {"type": "track", **_track(messageId="m-2")},
    ]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=_auth())
    assert response.status == 200
    body = await response.json()
    assert body["success"] is True
    assert body["rejected"] == [
        {
            "index": 1,
            "code": "invalid_timestamp",
            "path": "timestamp",
            "message": "expected an ISO 8601 timestamp",
        }
    ]
    queued = await _queued(redis_client, "ops-hook")
    assert [q["delivery"]["message_id"] for q in queued] == ["m-0", "m-2"]
    quarantined = await redis_client.xrange(QUARANTINE)
    assert len(quarantined) == 1
    fields = quarantined[0][1]
    assert fields[b"code"] == b"invalid_timestamp"
    assert fields[b"index"] == b"1"
    assert json.loads(fields[b"shape"])["messageId"] == "string"
    assert b"raw" not in fields  # values never rest in the quarantine


@pytest.mark.parametrize(
    ("event", "code", "path"),
    [
        ({"type": "track", "anonymousId": "a"}, "missing_field", "event"),
        ({"type": "track", "event": "E"}, "missing_identity", "userId"),
        ({"type": "nope", "anonymousId": "a"}, "invalid_type", "type"),
        ({"anonymousId": "a", "event": "E"}, "missing_field", "type"),
        (
            {"type": "track", "event": "E", "anonymousId": "a", "properties": [1]},
            "invalid_field",
            "properties",
        ),
        (
            {"type": "track", "event": "E", "anonymousId": "a", "properties": {"x": 1e999}},
            "invalid_number",
            "properties.x",
        ),
        ({"type": "group", "userId": "u"}, "missing_field", "groupId"),
        ({"type": "alias", "userId": "u"}, "missing_field", "previousId"),
        ({"type": "track", "event": "E", "anonymousId": True}, "invalid_field", "anonymousId"),
    ],
)
async def test_each_rejection_has_its_code_and_path(
    router: Any, redis_client: aioredis.Redis, event: dict[str, Any], code: str, path: str
) -> None:
    """Every per-event rejection names its code and field path, and the good event survives."""
    good = {"type": "track", **_track(messageId="good")}
    raw = json.dumps({"batch": [good, event]}).replace("Infinity", "1e999")
    response = await router.post("/v1/batch", data=raw, headers=_auth())
    assert response.status == 200
    rejected = (await response.json())["rejected"]
    assert rejected[0]["index"] == 1
    assert rejected[0]["code"] == code
    assert rejected[0]["path"] == path
    assert [q["delivery"]["message_id"] for q in await _queued(redis_client, "ops-hook")] == [
        "good"
    ]


async def test_deep_nesting_is_rejected_not_crashing(router: Any) -> None:
    """An event nested deeper than the limit gets too_deep; a 10,000-deep one too."""
    deep: Any = "x"
    for _ in range(40):
        deep = {"k": deep}
    very_deep = "[" * 10_000 + "]" * 10_000
    raw = (
        '{"batch": [' + json.dumps({"type": "track", **_track(properties=deep)}) + ","
        '{"type": "track", "event": "E", "anonymousId": "a", "properties": {"x": '
        + very_deep
        + "}}"
        + ","
        + json.dumps({"type": "track", **_track()})
        + "]}"
    )
    response = await router.post("/v1/batch", data=raw, headers=_auth())
    assert response.status == 200
    body = await response.json()
    assert [r["code"] for r in body["rejected"]] == ["too_deep", "too_deep"]
    assert [r["index"] for r in body["rejected"]] == [0, 1]


async def test_single_invalid_event_gets_400_with_path(router: Any) -> None:
    """A single-event request whose event is invalid has nothing usable: 400, code and path."""
    response = await router.post("/v1/track", json={"anonymousId": "a"}, headers=_auth())
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "missing_field"
    assert body["path"] == "event"
    assert body["details"][0]["index"] == 0


async def test_all_events_rejected_gets_400(router: Any) -> None:
    """A batch with no valid event is refused as a whole, listing every rejection."""
    batch = [{"type": "track"}, {"type": "bogus"}]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=_auth())
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "no_valid_events"
    assert [d["index"] for d in body["details"]] == [0, 1]


async def test_oversized_event_in_batch_is_rejected_alone(router: Any) -> None:
    """An event over 32 KB is a per-event rejection inside a batch."""
    big = {"type": "track", **_track(properties={"blob": "x" * 40_000})}
    batch = [big, {"type": "track", **_track()}]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=_auth())
    assert response.status == 200
    assert (await response.json())["rejected"][0]["code"] == "event_too_large"


async def test_oversized_single_event_gets_413(router: Any) -> None:
    """A single event over 32 KB: 413 event_too_large."""
    event = _track(properties={"blob": "x" * 40_000})
    response = await router.post("/v1/track", json=event, headers=_auth())
    assert response.status == 413
    assert (await response.json())["code"] == "event_too_large"


async def test_oversized_body_gets_413(router: Any) -> None:
    """A request over 500 KB: 413 body_too_large."""
    batch = [{"type": "track", **_track(properties={"b": "x" * 20_000})} for _ in range(30)]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=_auth())
    assert response.status == 413
    assert (await response.json())["code"] == "body_too_large"


async def test_gzip_body_is_accepted(router: Any, redis_client: aioredis.Redis) -> None:
    """SDKs gzip their bodies (Content-Encoding: gzip)."""
    body = gzip.compress(json.dumps({"batch": [{"type": "track", **_track()}]}).encode())
    headers = {**_auth(), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    response = await router.post("/v1/batch", data=body, headers=headers)
    assert response.status == 200
    assert len(await _queued(redis_client, "ops-hook")) == 1


async def test_gzip_bomb_gets_413(router: Any) -> None:
    """A small gzip body that inflates past the limit is refused without inflating it all."""
    bomb = gzip.compress(b"[" + b" " * 50_000_000 + b"]")
    assert len(bomb) < 500 * 1024
    headers = {**_auth(), "Content-Encoding": "gzip"}
    response = await router.post("/v1/batch", data=bomb, headers=headers)
    assert response.status == 413
    assert (await response.json())["code"] == "body_too_large"


async def test_corrupt_gzip_gets_400(router: Any) -> None:
    """A body that claims gzip but is not: 400 invalid_encoding."""
    headers = {**_auth(), "Content-Encoding": "gzip"}
    response = await router.post("/v1/batch", data=b"definitely not gzip", headers=headers)
    assert response.status == 400
    assert (await response.json())["code"] == "invalid_encoding"


async def test_unsupported_encoding_gets_415(router: Any) -> None:
    """Only gzip/deflate are understood."""
    headers = {**_auth(), "Content-Encoding": "br"}
    response = await router.post("/v1/batch", data=b"x", headers=headers)
    assert response.status == 415
    assert (await response.json())["code"] == "unsupported_encoding"


async def test_batch_over_event_limit_is_one_cheap_413(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """A batch of more events than max_batch_events is refused whole, before any event is
    decoded: one small 413 too_many_events, nothing queued and nothing quarantined."""
    text = (routing_from.__globals__["TEST_CONFIG"]).read_text()
    text = text.replace("destinations:", "limits: {max_batch_events: 3}\n\ndestinations:", 1)
    router = await make_router(routing_from(text), workers=False)
    batch = [{"type": "track", **_track(messageId=f"m{i}")} for i in range(4)]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=_auth())
    assert response.status == 413
    body = await response.json()
    assert body["code"] == "too_many_events"
    assert "3 events" in body["message"]
    assert await _queued(redis_client, "ops-hook") == []
    assert await redis_client.xlen(QUARANTINE) == 0
    exactly = await router.post("/v1/batch", json={"batch": batch[:3]}, headers=_auth())
    assert exactly.status == 200
    assert len(await _queued(redis_client, "ops-hook")) == 3


async def test_a_flood_of_tiny_items_costs_one_answer_and_no_quarantine(
    router: Any, redis_client: aioredis.Redis
) -> None:
    """250,000 one-byte items in a 500 KB body: one 413 of a few hundred bytes, no per-item
    work (before: 10 s of CPU, a 24 MB answer and 250,000 quarantine entries)."""
    body = b'{"batch":[' + b",".join([b"1"] * 249_000) + b"]}"
    response = await router.post("/v1/batch", data=body, headers=_auth())
    assert response.status == 413
    assert len(await response.read()) < 500
    assert (await response.json())["code"] == "too_many_events"
    assert await redis_client.xlen(QUARANTINE) == 0


async def test_an_unknown_key_costs_no_decoding(router: Any, redis_client: aioredis.Redis) -> None:
    """A body with an unknown write key (in the body, the query or the header) is refused
    before its events are decoded: 401, not the 413 ``too_many_events`` its 5,000 events would
    get (the batch limit is 2,500) nor per-event rejections. (Observed through answers, not by
    replacing ``parse_body``: the compiled build calls it directly.)"""
    body = b'{"writeKey":"nope","batch":[' + b",".join([b"1"] * 5000) + b"]}"
    for url, headers in (
        ("/v1/batch", {}),
        ("/v1/batch?writeKey=nope", {}),
        ("/v1/batch", _auth("nope")),
    ):
        response = await router.post(url, data=body, headers=headers)
        assert response.status == 401
        assert (await response.json())["code"] == "invalid_write_key"
    assert await redis_client.xlen(QUARANTINE) == 0
    known = await router.post("/v1/batch", data=body, headers=_auth())
    assert known.status == 413  # the same body with a known key is decoded: too many events
    assert (await known.json())["code"] == "too_many_events"


_POISON = [
    ("NaN", "invalid_number", "properties.x"),
    ("Infinity", "invalid_number", "properties.x"),
    ("-Infinity", "invalid_number", "properties.x"),
    ("1e999", "invalid_number", "properties.x"),
    ('"\\ud800"', "invalid_string", "properties.x"),
    ('"a\\udc00b"', "invalid_string", "properties.x"),
    ('"a\x01b"', "invalid_string", "properties.x"),
    ('"a\x1fb"', "invalid_string", "properties.x"),
    ('"\udcff\udcfe"', "invalid_string", "properties.x"),  # bytes ff fe: not UTF-8
    ('[1, {"y": NaN}]', "invalid_number", "properties.x[1].y"),
]


@pytest.mark.parametrize(("value", "code", "path"), _POISON)
@pytest.mark.parametrize("gzipped", [False, True])
async def test_one_poisoned_value_costs_only_its_event(
    router: Any, redis_client: aioredis.Redis, value: str, code: str, path: str, gzipped: bool
) -> None:
    """NaN, Infinity, a lone surrogate escape (what Python's json.dumps writes for one), a raw
    control character or invalid UTF-8 inside one event: that event is rejected with its index,
    code and path; the others of the batch are queued."""
    good = [json.dumps({"type": "track", **_track(messageId=f"m{i}")}) for i in range(3)]
    poisoned = '{"type": "track", "event": "E", "anonymousId": "a", "properties": {"x": %s}}'
    items = [good[0], poisoned % value, good[1], good[2]]
    body = ('{"batch": [' + ",".join(items) + '], "sentAt": "2026-01-01T00:00:00Z"}').encode(
        "utf-8", "surrogateescape"
    )
    headers = _auth()
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    response = await router.post("/v1/batch", data=body, headers=headers)
    assert response.status == 200, await response.text()
    rejected = (await response.json())["rejected"]
    assert [(r["index"], r["code"], r["path"]) for r in rejected] == [(1, code, path)]
    queued = await _queued(redis_client, "ops-hook")
    assert [q["delivery"]["message_id"] for q in queued] == ["m0", "m1", "m2"]


async def test_python_json_dumps_output_with_nan_and_lone_surrogate(
    router: Any, redis_client: aioredis.Redis
) -> None:
    """What the Segment Python SDK posts (json.dumps of a batch holding float('nan') and a
    str with a lone surrogate): only those two events are lost."""
    batch = [
        {"type": "track", **_track(messageId="ok-1")},
        {"type": "track", **_track(messageId="nan", properties={"revenue": float("nan")})},
        {"type": "track", **_track(messageId="sur", properties={"name": "x\ud800"})},
        {"type": "track", **_track(messageId="ok-2")},
    ]
    body = json.dumps({"batch": batch})
    response = await router.post("/v1/batch", data=body, headers=_auth())
    assert response.status == 200
    rejected = (await response.json())["rejected"]
    assert [(r["index"], r["code"], r["path"]) for r in rejected] == [
        (1, "invalid_number", "properties.revenue"),
        (2, "invalid_string", "properties.name"),
    ]
    queued = await _queued(redis_client, "ops-hook")
    assert [q["delivery"]["message_id"] for q in queued] == ["ok-1", "ok-2"]


async def test_single_event_with_nan_gets_400_with_its_path(router: Any) -> None:
    """A single event holding NaN: 400 invalid_number at its path (not invalid_json), also when
    the write key is in the body as analytics.js sends it."""
    body = '{"writeKey": "%s", "event": "E", "anonymousId": "a", "properties": {"v": NaN}}'
    response = await router.post("/v1/track", data=body % WRITE_KEY)
    assert response.status == 400
    answer = await response.json()
    assert (answer["code"], answer["path"]) == ("invalid_number", "properties.v")


async def test_a_broken_envelope_is_still_invalid_json(router: Any) -> None:
    """When the batch's own structure is broken, nothing is usable: 400 invalid_json."""
    for body in (
        b'{"batch": [{"a": 1} {"b": 2}]}',
        b'{"batch": [1, 2',
        b'{"context": NaN, "batch": []}',
    ):
        response = await router.post("/v1/batch", data=body, headers=_auth())
        assert response.status == 400, body
        assert (await response.json())["code"] == "invalid_json"


async def test_request_limit_above_aiohttps_default_is_honoured(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """A routing file may allow bodies over aiohttp's own 1 MB default: the router's limit is
    the one that applies, in both directions."""
    text = (routing_from.__globals__["TEST_CONFIG"]).read_text()
    limits = "limits: {max_request_bytes: 3000000, max_batch_events: 5000}"
    text = text.replace("destinations:", limits + "\n\ndestinations:", 1)
    router = await make_router(routing_from(text), workers=False)
    padding = "x" * 400
    batch = [
        {"type": "track", **_track(messageId=f"big{i}"), "properties": {"note": padding}}
        for i in range(3000)
    ]
    body = json.dumps({"batch": batch}).encode()
    assert 1024**2 < len(body) < 3_000_000
    response = await router.post("/v1/batch", data=io.BytesIO(body), headers=_auth())
    assert response.status == 200, await response.text()
    assert "rejected" not in await response.json()
    assert len(await _queued(redis_client, "ops-hook")) == 3000
    too_big = json.dumps({"batch": batch * 3}).encode()
    assert len(too_big) > 3_000_000
    response = await router.post("/v1/batch", data=io.BytesIO(too_big), headers=_auth())
    assert response.status == 413
    assert (await response.json())["code"] == "body_too_large"


async def test_sdk_nulls_and_offsets_are_accepted(
    router: Any, redis_client: aioredis.Redis
) -> None:
    """analytics-python sends anonymousId null and +00:00 offsets; skew is corrected."""
    event = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "anonymousId": None,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "messageId": "m-null",
    }
    body = {"batch": [event], "sentAt": "2026-01-01T00:00:10+00:00"}
    response = await router.post("/v1/batch", json=body, headers=_auth())
    assert response.status == 200, await response.text()
    assert (await response.json()) == {"success": True}


async def test_cors_preflight_and_response_for_configured_origin(router: Any) -> None:
    """A configured origin gets CORS headers; another origin does not."""
    preflight = await router.options(
        "/v1/t",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    response = await router.post(
        "/v1/t", json=_track(writeKey=WRITE_KEY), headers={"Origin": "http://localhost:3000"}
    )
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    other = await router.post(
        "/v1/t", json=_track(writeKey=WRITE_KEY), headers={"Origin": "http://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_unknown_route_gets_404_in_error_shape(router: Any) -> None:
    """Unknown endpoints answer the one error shape."""
    response = await router.post("/v1/nope", json={}, headers=_auth())
    assert response.status == 404
    assert (await response.json())["code"] == "not_found"
    other = await router.get("/v2/anything")
    assert other.status == 404
    assert (await other.json())["code"] == "not_found"


async def test_health_and_readiness(router: Any, redis_server: Any) -> None:
    """/healthz answers while the process lives; /readyz fails when Redis is down."""
    assert (await router.get("/healthz")).status == 200
    assert (await router.get("/readyz")).status == 200
    redis_server.kill()
    assert (await router.get("/healthz")).status == 200
    ready = await router.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["code"] == "redis_unavailable"
    assert "Retry-After" in ready.headers


async def test_redis_down_gets_503_with_retry_after(router: Any, redis_server: Any) -> None:
    """When the queue cannot take the write, the SDK is told to retry."""
    redis_server.kill()
    response = await router.post("/v1/track", json=_track(), headers=_auth())
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    assert (await response.json())["code"] == "queue_unavailable"


async def test_queued_payload_is_minimized_before_redis(
    router: Any, redis_client: aioredis.Redis
) -> None:
    """What rests in a destination's stream is only what it may receive."""
    event = _track(
        userId="user-42",
        properties={"order_id": "o-9", "revenue": 5, "email": "x@example.com"},
        context={"consent": {"categoryPreferences": {"C0002": True}}, "ip": "10.1.2.3"},
    )
    response = await router.post("/v1/track", json=event, headers=_auth())
    assert response.status == 200
    analytics = await _queued(redis_client, "analytics-hook")
    raw_stream = str(await redis_client.xrange(queue_key("analytics-hook")))
    assert "x@example.com" not in raw_stream
    assert "user-42" not in raw_stream
    assert "10.1.2.3" not in raw_stream
    payload = analytics[0]["delivery"]["payload"]
    assert payload["properties"] == {"revenue": 5}
    assert len(payload["userId"]) == 64


async def test_a_big_batch_is_planned_in_slices_that_let_other_tasks_run(
    router: Any, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two slices of PLAN_SLICE events the handler yields to the event loop, so a
    2,500-event batch does not hold every other request for its whole plan step. Seen from
    ``CompiledDestination.events`` (read per event and destination, through Python attribute
    lookup also by the compiled planner): the ticks of another task it sees change from slice
    to slice and never within one."""
    ticks = 0
    seen: list[int] = []
    slot = CompiledDestination.__dict__["events"]  # the slot's descriptor

    def recording(destination: CompiledDestination) -> frozenset[str] | None:
        seen.append(ticks)
        events: frozenset[str] | None = slot.__get__(destination, CompiledDestination)
        return events

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(CompiledDestination, "events", property(recording))
    stop = asyncio.Event()
    task = asyncio.create_task(ticker(stop))
    batch = [{"type": "track", **_track(messageId=f"s{i}")} for i in range(1000)]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=_auth())
    stop.set()
    await task
    assert response.status == 200
    slices = [len(list(group)) for _, group in itertools.groupby(seen)]
    assert len(slices) == 1000 // ingest_module.PLAN_SLICE
    assert len(set(slices)) == 1  # every slice asks each destination about its 100 events
    assert slices[0] % ingest_module.PLAN_SLICE == 0
    assert all(later > earlier for earlier, later in itertools.pairwise(dict.fromkeys(seen)))
    assert len(await _queued(redis_client, "ops-hook")) == 1000


async def _post_until(router: Any, status: int) -> Any:
    """Post an event until the answer has ``status`` (the backlog is sampled every second)."""
    for _ in range(50):
        response = await router.post("/v1/track", json=_track(), headers=_auth())
        if response.status == status:
            return response
        await asyncio.sleep(0.2)
    raise AssertionError(f"never answered {status}")


async def test_429_backlog_while_redis_is_near_its_memory_limit(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """Past limits.backlog_memory_ratio of Redis' maxmemory, new events get 429 `backlog`
    with Retry-After (SDKs retry), before a full Redis would refuse writes; then 200 again."""
    text = (routing_from.__globals__["TEST_CONFIG"]).read_text()
    text = text.replace("destinations:", "limits: {backlog_memory_ratio: 0.5}\n\ndestinations:", 1)
    router = await make_router(routing_from(text), workers=False)
    used = int((await redis_client.info("memory"))["used_memory"])
    assert not await backlog_of(redis_client, 0.01)  # no maxmemory: never a backlog
    await redis_client.config_set("maxmemory", str(used * 10))
    await _post_until(router, 200)
    for index in range(6):  # in parts: a command's own buffer counts against maxmemory
        await redis_client.set(f"ballast:{index}", b"x" * used)
    refused = await _post_until(router, 429)
    assert (await refused.json())["code"] == "backlog"
    assert int(refused.headers["Retry-After"]) >= 1
    await redis_client.delete(*(f"ballast:{index}" for index in range(6)))
    await _post_until(router, 200)
