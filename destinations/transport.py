"""The destinations' one I/O seam, and the only module of the package that imports aiohttp.

Connectors are pure: they build ``HttpRequest`` values and read ``HttpResponse`` values. A
``Transport`` carries one to the other. The process owns one ``AiohttpTransport`` (one client
session, one connection pool) and hands it to whatever sends: the delivery workers, erasure and
the anomaly alerts. Unit tests hand in a fake instead (``tests.fakes.transport``), the way
httpx's ``MockTransport`` stands in for its ``HTTPTransport``.
"""

from __future__ import annotations

import abc
import io
from datetime import UTC, datetime

import aiohttp

from destinations.base import HttpRequest, HttpResponse
from destinations.errors import TransportError

MAX_CONNECTIONS = 256
"""Open connections of the process's session, across every destination."""
_STREAM_ABOVE = 1024 * 1024


class Transport(abc.ABC):
    """Sends a request and returns the answer. Never retries: only the delivery worker does."""

    @abc.abstractmethod
    async def send(self, request: HttpRequest, timeout_s: float) -> HttpResponse:
        """The answer to ``request``; ``TransportError`` when no HTTP answer came back."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most fakes hold nothing
        """Release what the transport holds (connections)."""


class AiohttpTransport(Transport):
    """The real transport: one aiohttp client session, opened on first use (inside the
    event loop), closed by its owner with ``aclose``."""

    def __init__(self, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: HttpRequest, timeout_s: float) -> HttpResponse:
        """Send through the shared session (see ``send_request``)."""
        if self._session is None:
            self._session = open_session(max_connections=self._max_connections)
        return await send_request(self._session, request, timeout_s)

    async def aclose(self) -> None:
        """Close the session; a later ``send`` opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def open_session(*, max_connections: int = MAX_CONNECTIONS) -> aiohttp.ClientSession:
    """The client session of a process: a bounded pool, statuses left to ``interpret``."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections), raise_for_status=False
    )


async def send_request(
    session: aiohttp.ClientSession, request: HttpRequest, timeout_s: float
) -> HttpResponse:
    """Send one request; ``TransportError`` when no HTTP answer came back. Never retries."""
    # aiohttp wants large bodies as streams (it warns about bytes over 1 MiB).
    data: bytes | io.BytesIO = request.body
    if len(request.body) > _STREAM_ABOVE:
        data = io.BytesIO(request.body)
    try:
        async with session.request(
            request.method,
            request.url,
            data=data,
            headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            body = await response.read()
            return HttpResponse(
                status=response.status,
                headers=dict(response.headers),
                body=body,
                received_at=datetime.now(UTC),
            )
    except TimeoutError as exc:
        raise TransportError("timeout", f"no answer within {timeout_s:g}s") from exc
    except aiohttp.ClientError as exc:
        raise TransportError("connection_error", type(exc).__name__) from exc
