"""HTTP helpers of the edge: the one error shape, bounded body reading, write-key auth, CORS.

Every error answer has the same JSON shape, with ``code`` and ``message`` at the top level
because the Segment and RudderStack SDKs read them there:
``{"success": false, "code": "body_too_large", "message": "...", "details"?: [...]}``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

JSON = "application/json"


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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after
        self.path = path


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
    return json_response(body, error.status, headers)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, decompressed, never more than ``max_bytes`` (413 past that)."""
    length = request.content_length
    if length is not None:
        if length > max_bytes:
            raise _too_large(max_bytes)
        # The parser stops at the announced length, checked above; no aiohttp size limit.
        body = await request.content.read()
    else:
        body = await _read_bounded(request, max_bytes)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        return inflate(body, max_bytes, gzip=encoding != "deflate")
    raise HttpError(
        415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported; use gzip"
    )


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
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": ", ".join(names) if reflect else KNOWN_REQUEST_HEADERS,
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin, Access-Control-Request-Headers",
    }
