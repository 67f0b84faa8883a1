"""The privacy endpoints: ``POST /v1/consent`` and ``POST /admin/erase``.

- ``POST /v1/consent`` (write-key auth, like ``/v1/track``): store a person's consent choice
  ``{"userId"?, "anonymousId"?, "categories": {"analytics": true, "C0004": false}, "timestamp"?,
  "source"?}``; ids are mapped like Segment ``categoryPreferences``. 200 once it is in Redis.
- ``POST /admin/erase`` (``Authorization: Bearer $ROUTER_OPERATOR_TOKEN``): erase a person
  (``router.erasure``) and answer with the receipt. Without a configured token erasure is
  disabled (503); a wrong or missing token is 401.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from aiohttp import web
from redis.exceptions import RedisError

from router.erasure import erase, parse_erase_body
from router.http import HttpError, basic_auth_key, json_response, read_body
from router.ingest import STATE, AppState, authenticate
from router.stored_consent import body_write_key, parse_consent_body

MAX_ERASE_BODY_BYTES = 64 * 1024


def _unavailable(state: AppState) -> HttpError:
    return HttpError(
        503,
        "consent_store_unavailable",
        "the consent store is unavailable; retry later",
        retry_after=state.settings.retry_after_s,
    )


async def post_consent(request: web.Request) -> web.Response:
    """``POST /v1/consent``: store a consent choice for the given ids."""
    state = request.app[STATE]
    routing = state.routing
    if basic_auth_key(request.headers.get("Authorization")):
        authenticate(routing, request, None)
    body = await read_body(request, routing.file.limits.max_event_bytes)
    source = authenticate(routing, request, body_write_key(body))
    subjects, record = parse_consent_body(body, routing.policy, datetime.now(UTC))
    if state.consent is None:
        raise _unavailable(state)
    try:
        await state.consent.write(subjects, record)
    except (RedisError, OSError) as exc:
        raise _unavailable(state) from exc
    state.stats.add("router_consent_writes_total", route="consent", source=source.id)
    return json_response({"success": True})


def _check_operator(state: AppState, header: str | None) -> None:
    token = state.settings.operator_token
    expected = token.get_secret_value().encode() if token is not None else b""
    if not expected:
        raise HttpError(
            503, "erasure_disabled", "erasure is disabled: set ROUTER_OPERATOR_TOKEN to enable it"
        )
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise HttpError(401, "invalid_token", "send Authorization: Bearer <operator token>")


async def post_erase(request: web.Request) -> web.Response:
    """``POST /admin/erase``: erase a person; the receipt lists what was done."""
    state = request.app[STATE]
    _check_operator(state, request.headers.get("Authorization"))
    identifiers = parse_erase_body(await read_body(request, MAX_ERASE_BODY_BYTES))
    if state.consent is None:
        raise _unavailable(state)
    try:
        receipt = await erase(state.redis, state.consent, state.routing, identifiers)
    except (RedisError, OSError) as exc:
        raise _unavailable(state) from exc
    state.stats.add("router_erasures_total")
    return json_response({"success": True, "receipt": receipt})
