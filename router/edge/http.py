"""HTTP helpers of the edge: the one error shape, bounded body reading, write-key auth, CORS.

Every error answer has the same JSON shape, with ``code`` and ``message`` at the top level
because the Segment and RudderStack SDKs read them there:
``{"success": false, "code": "body_too_large", "message": "...", "details"?: [...]}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from router.core.consent_input import field_rejection
from router.core.outcomes import Rejection

T = TypeVar("T")

JSON = "application/json"
log = logging.getLogger("router.http")


class HttpError(Exception):
    """An answer other than 200, raised inside a handler and rendered by ``error_response``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        path: str | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after
        self.path = path
        self.close = close
        """Close the connection after the answer (what is left of the request is unusable)."""


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response encoded with msgspec."""
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type=JSON, headers=headers
    )


def error_response(error: HttpError) -> web.Response:
    """The one error shape."""
    body: dict[str, Any] = {"success": False, "code": error.code, "message": error.message}
    if error.path is not None:
        body["path"] = error.path
    if error.details:
        body["details"] = error.details
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    response = json_response(body, error.status, headers)
    if error.close:
        response.force_close()
    return response


READ_TIMEOUT: Final = web.AppKey("read_timeout_s", float)
"""Seconds a request body may take to arrive (``ROUTER_HTTP_READ_TIMEOUT_S``)."""
DEFAULT_READ_TIMEOUT_S: Final = 30.0


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, decompressed, never more than ``max_bytes`` (413 past that).

    A body that does not arrive within the application's ``READ_TIMEOUT`` is a ``408`` (and
    the connection is closed); a body cut short by the client or broken in its framing (bad
    chunked encoding, fewer bytes than announced) is a ``400 incomplete_body``, logged without
    a traceback: the client went away or misbehaved, nothing is wrong here.
    """
    try:
        if request.content.is_eof():  # all of it has arrived: take it, no waiting, no timer
            body = request.content.read_nowait()
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
        else:
            async with asyncio.timeout(_read_timeout_s(request)):
                body = await _read_raw(request, max_bytes)
    except TimeoutError:
        # End the body here: aiohttp would otherwise keep reading ("lingering") for up to 10 s
        # before closing; the answer says the connection closes (``close=True``).
        request.content.feed_eof()
        raise HttpError(
            408,
            "request_timeout",
            f"the request body did not arrive within {_read_timeout_s(request):g} s",
            close=True,
        ) from None
    except (ConnectionError, web.RequestPayloadError) as exc:
        log.info("request body incomplete", extra={"error": type(exc).__name__})
        raise HttpError(
            400,
            "incomplete_body",
            "the request body ended early or is not framed correctly",
            close=True,
        ) from None
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        return inflate(body, max_bytes, gzip=encoding != "deflate")
    raise HttpError(
        415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
    )


def _read_timeout_s(request: web.Request) -> float:
    return request.config_dict.get(READ_TIMEOUT, DEFAULT_READ_TIMEOUT_S)


async def _read_raw(request: web.Request, max_bytes: int) -> bytes:
    length = request.content_length
    if length is None:
        return await _read_bounded(request, max_bytes)
    if length > max_bytes:
        raise _too_large(max_bytes)
    # The parser stops at the announced length, checked above; no aiohttp size limit.
    return await request.content.read()


def _too_large(max_bytes: int) -> HttpError:
    return HttpError(413, "body_too_large", f"the request body is larger than {max_bytes} bytes")


async def _read_bounded(request: web.Request, max_bytes: int) -> bytes:
    """A body of unannounced length (chunked), read no further than ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def inflate(body: bytes, max_bytes: int, *, gzip: bool) -> bytes:
    """Decompress, stopping past ``max_bytes`` of output (a gzip bomb gets 413, not memory)."""
    wbits = 47 if gzip else 15  # 47: gzip or zlib header auto-detected
    decompressor = zlib.decompressobj(wbits)
    try:
        data = decompressor.decompress(body, max_bytes + 1)
        if len(data) <= max_bytes and not decompressor.eof:
            data += decompressor.flush()
    except zlib.error as exc:
        raise HttpError(400, "invalid_encoding", "the body is not valid gzip data") from exc
    if len(data) > max_bytes or decompressor.unconsumed_tail:
        raise HttpError(
            413, "body_too_large", f"the decompressed body is larger than {max_bytes} bytes"
        )
    return data


def basic_auth_key(header: str | None) -> str | None:
    """The write key of ``Authorization: Basic base64(key:)``; ``None`` without that header."""
    if not header:
        return None
    return _basic_auth_key(header)


@functools.lru_cache(maxsize=256)
def _basic_auth_key(header: str) -> str | None:
    """Memoized: every request of an SDK sends the same header."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""
    return decoded.partition(":")[0]


CORS_PATH_PREFIXES: Final = ("/v1/", "/beacon/")
"""Where browser SDKs post (``/v1/...``, RudderStack's ``/beacon/v1/batch``): only answers on
these paths carry CORS headers; ``/admin``, ``/metrics`` and the probes never do."""

KNOWN_REQUEST_HEADERS: Final = (
    "Content-Type, Content-Encoding, Authorization, AnonymousId, SentAt, X-Retry-Count, "
    "traceparent, Rsa-Recovered, Rsa-Retry-Attempt, Rsa-Retry-Reason, Rsa-Since-First-Attempt, "
    "Rsa-Since-Last-Attempt"
)
"""What the browser SDKs send (analytics.js: Authorization, X-Retry-Count; RudderStack v3:
AnonymousId, SentAt, the ``Rsa-*`` retry headers): allowed when a preflight's list of requested
headers is not one to reflect."""

EXPOSE_HEADERS: Final = "Retry-After"
"""Answer headers a browser SDK may read besides the safelisted ones: ``Retry-After`` of a 429
or 503 tells it when to retry."""

MAX_REQUESTED_HEADERS: Final = 32
MAX_REQUESTED_HEADERS_CHARS: Final = 1024
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP field name (RFC 9110 ``token``)."""


def cors_headers(origin: str | None, allowed: Iterable[str]) -> dict[str, str]:
    """CORS answer headers when ``origin`` is allowed (``*`` allows every origin)."""
    if not origin:
        return {}
    allowed = set(allowed)
    if origin not in allowed and "*" not in allowed:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": EXPOSE_HEADERS,
        "Vary": "Origin",
    }


def preflight_headers(requested: str | None) -> dict[str, str]:
    """The rest of a preflight's answer for an allowed origin.

    ``Access-Control-Request-Headers`` is reflected when it is a short list of field names, so
    whatever header an SDK adds in a later version is allowed without a release of the router;
    anything else (too long, not tokens) gets the list of the SDKs' known headers, which the
    browser then checks the request against.
    """
    names = [n.strip() for n in (requested or "").split(",") if n.strip()]
    reflect = (
        names
        and len(names) <= MAX_REQUESTED_HEADERS
        and len(requested or "") <= MAX_REQUESTED_HEADERS_CHARS
        and all(_TOKEN.fullmatch(n) for n in names)
    )
    return {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": ", ".join(names) if reflect else KNOWN_REQUEST_HEADERS,
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin, Access-Control-Request-Headers",
    }


_FRAMING_CODES: Final = {431: "headers_too_large", 504: "timeout"}


class _JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering what it rejects itself (a request that is not
    HTTP/1.1, headers too long or too many, a broken request line) in the one JSON error shape
    instead of ``text/plain``, and logging it without a traceback: it is the client's error."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        del message  # aiohttp's message may quote the request's bytes
        if status >= 500 and status != 504:
            log.error("error handling a request", extra={"error": type(exc).__name__})
            error = HttpError(500, "internal_error", "unexpected error")
        else:
            log.info("malformed HTTP request", extra={"error": type(exc).__name__})
            code = _FRAMING_CODES.get(status, "invalid_http")
            error = HttpError(status, code, f"the request is not valid HTTP/1.1 ({code})")
        if request.writer.output_size > 0:  # an answer has started: only closing is left
            raise ConnectionError("an answer was already being sent")
        response = error_response(error)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class RouterRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer HTTP framing errors in the JSON error shape
    (``_JsonErrorHandler``). The swap relies on aiohttp's ``Server`` building its handlers
    in ``__call__`` from ``_loop`` and ``_kwargs``: tests/integration/test_http_edge.py fails
    if a new aiohttp changes that."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server


def rejected(rejection: Rejection) -> HttpError:
    """A 400 carrying a rejection's code, path (none when empty) and message."""
    return HttpError(400, rejection.code, rejection.message, path=rejection.path or None)


def invalid_field(error: msgspec.ValidationError) -> HttpError:
    """A 400 ``invalid_field`` with the field's path (a missing or unknown field's name too)."""
    return rejected(field_rejection(error))


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """A JSON body decoded and validated: 400 ``invalid_field`` with the field path, or 400
    ``invalid_json`` (also for nesting too deep to decode)."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid_field(exc) from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HttpError(400, "invalid_json", "the body is not valid JSON") from exc
