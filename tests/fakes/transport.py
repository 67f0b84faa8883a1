"""A transport that answers without a network and keeps what it was asked, for unit tests.

Modelled on httpx's ``MockTransport``: ``handler`` decides each answer (a response, or an
exception to raise such as ``TransportError``); the default answers ``200`` with an empty body.
"""

from __future__ import annotations

from collections.abc import Callable

from destinations.base import HttpRequest, HttpResponse
from destinations.transport import Transport

Handler = Callable[[HttpRequest], HttpResponse | Exception]


def _ok(request: HttpRequest) -> HttpResponse:
    del request
    return HttpResponse(status=200, headers={}, body=b"")


class RecordingTransport(Transport):
    """Answers with ``handler`` and records every request with its timeout."""

    def __init__(self, handler: Handler = _ok) -> None:
        self.handler = handler
        self.sent: list[tuple[HttpRequest, float]] = []
        self.closed = False

    @property
    def requests(self) -> list[HttpRequest]:
        """The requests sent, in order."""
        return [request for request, _ in self.sent]

    async def send(self, request: HttpRequest, timeout_s: float) -> HttpResponse:
        """Record the request, then answer (or raise) what ``handler`` says."""
        self.sent.append((request, timeout_s))
        answer = self.handler(request)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        """Remember that the owner closed it."""
        self.closed = True
