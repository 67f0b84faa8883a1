"""The edge under misbehaving clients: idle and half-sent connections are closed, framing
errors get the JSON error shape, a client that leaves mid-body is not an error of ours."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest

from tests.conftest import WRITE_KEY, AppFactory, routing_from

pytestmark = pytest.mark.usefixtures("redis_server")

TRACK = json.dumps({"event": "E", "anonymousId": "a"}).encode()


async def _connect(make_router: AppFactory, **settings: float) -> tuple[str, int]:
    client = await make_router(routing_from(), workers=False, **settings)
    server = client.server
    assert server.port is not None
    return server.host, server.port


async def _exchange(host: str, port: int, data: bytes, within_s: float = 5.0) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), within_s)
    finally:
        writer.close()


def _answer(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def _request_head(length: int, *, close: bool = False) -> bytes:
    key = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    connection = "Connection: close\r\n" if close else ""
    return (
        "POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Basic {key}\r\nContent-Length: {length}\r\n{connection}\r\n"
    ).encode()


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects and says nothing
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\n",  # headers never finished (slowloris)
    ],
)
async def test_a_silent_or_unfinished_connection_is_closed(
    make_router: AppFactory, sent: bytes
) -> None:
    """Nothing is held open past ``ROUTER_HTTP_IDLE_TIMEOUT_S`` without a request."""
    host, port = await _connect(make_router, http_idle_timeout_s=0.3)
    assert await _exchange(host, port, sent, within_s=5) == b""


async def test_an_idle_keep_alive_connection_is_closed(make_router: AppFactory) -> None:
    """After an answer, a connection that sends nothing more is closed too."""
    host, port = await _connect(make_router, http_idle_timeout_s=0.3)
    raw = await _exchange(host, port, _request_head(len(TRACK)) + TRACK, within_s=5)
    status, headers, body = _answer(raw)
    assert (status, body["success"]) == (200, True)
    assert headers.get("connection", "keep-alive").lower() != "close"


async def test_a_half_sent_body_is_a_408_and_a_closed_connection(
    make_router: AppFactory,
) -> None:
    """A body that stops arriving is answered ``408 request_timeout``, then closed."""
    host, port = await _connect(make_router, http_read_timeout_s=0.3)
    raw = await _exchange(host, port, _request_head(1000) + TRACK[:10], within_s=5)
    status, headers, body = _answer(raw)
    assert status == 408
    assert body["code"] == "request_timeout"
    assert headers["content-type"].startswith("application/json")
    assert headers["connection"].lower() == "close"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (
            b"POST /v1/track HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\n\r\n",
            400,
        ),
    ],
)
async def test_framing_errors_get_the_json_error_shape(
    make_router: AppFactory,
    request_bytes: bytes,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What aiohttp refuses before any handler runs is answered like every other error,
    and is not logged as an error of the router."""
    host, port = await _connect(make_router)
    with caplog.at_level(logging.INFO):
        raw = await _exchange(host, port, request_bytes)
    answered, headers, body = _answer(raw)
    assert answered in {status, 400}
    assert headers["content-type"].startswith("application/json")
    assert body["success"] is False
    assert body["code"] in {"invalid_http", "headers_too_large"}
    assert isinstance(body["message"], str)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_leaving_mid_body_is_not_an_error(
    make_router: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A disconnect mid-body is logged at INFO without a traceback, and the router serves on."""
    host, port = await _connect(make_router)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            _, writer = await asyncio.open_connection(host, port)
            writer.write(_request_head(1000) + TRACK[:10])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)
        raw = await _exchange(host, port, _request_head(len(TRACK), close=True) + TRACK)
    assert _answer(raw)[0] == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]
