"""``read_body`` on a body that has fully arrived (the fast path: no timer, no waiting)."""

from __future__ import annotations

import asyncio
import gzip
from unittest import mock

import pytest
from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from router.edge.http import HttpError, read_body


def _arrived(body: bytes) -> streams.StreamReader:
    """A request payload whose every byte has been received and parsed."""
    payload = streams.StreamReader(
        mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop()
    )
    payload.feed_data(body)
    payload.feed_eof()
    return payload


async def test_an_arrived_body_is_read_whole() -> None:
    body = b'{"batch": []}' * 100
    request = make_mocked_request("POST", "/v1/batch", payload=_arrived(body))
    assert request.content.is_eof()
    assert await read_body(request, max_bytes=len(body)) == body


async def test_an_arrived_body_over_the_limit_is_413() -> None:
    request = make_mocked_request("POST", "/v1/batch", payload=_arrived(b"x" * 101))
    with pytest.raises(HttpError) as raised:
        await read_body(request, max_bytes=100)
    assert (raised.value.status, raised.value.code) == (413, "body_too_large")


async def test_an_arrived_gzip_body_is_inflated() -> None:
    request = make_mocked_request(
        "POST",
        "/v1/batch",
        headers={"Content-Encoding": "gzip"},
        payload=_arrived(gzip.compress(b'{"batch": []}')),
    )
    assert await read_body(request, max_bytes=1000) == b'{"batch": []}'
