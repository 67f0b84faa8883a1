"""The consent endpoint: ``POST /v1/consent``.

``POST /v1/consent`` (write-key auth, like ``/v1/track``): store a person's consent choice
``{"userId"?, "anonymousId"?, "categories": {"analytics": true, "C0004": false}, "timestamp"?,
"source"?}``; ids are mapped like Segment ``categoryPreferences``. 200 once it is in Redis; a
``consent_written`` record (subjects as keyed tokens, the source id) goes to the audit trail's
next flush.

Who may write (``sources[].consent_writes``): a source with ``grant`` stores any choice; any
other source may only withdraw: its denials are stored, and a grant that stored consent does
not already hold is refused with 403 ``consent_write_forbidden`` (the withdrawals of the same
request are stored all the same: a withdrawal must never be lost to a malformed request).

``POST /admin/erase`` lives in the operator API (``router.edge.admin``): roles ``operator`` and
``admin``, and ``ROUTER_OPERATOR_TOKEN`` as an operator token.

The body is validated once by the pure ``router.core.consent_input.parse_consent_body`` (ids
normalized and hashed, categories mapped, ``source`` and ``timestamp`` checked); a
``Rejection`` is answered 400 with its stable code and path.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from redis.exceptions import RedisError

from router.core.audit_records import consent_written
from router.core.consent_input import body_write_key, parse_consent_body
from router.core.jsonscan import depth_path
from router.core.outcomes import Rejection
from router.edge.http import HttpError, basic_auth_key, json_response, read_body, rejected
from router.edge.ingest import authenticate
from router.edge.state import STATE, AppState


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
    max_depth = routing.file.limits.max_depth
    path = depth_path(body, max_depth)
    if path is not None:  # ingest's limit, checked before a recursive decoder sees the body
        raise HttpError(400, "too_deep", f"nesting deeper than {max_depth} levels", path=path)
    source = authenticate(routing, request, body_write_key(body))
    consent = parse_consent_body(body, routing.policy, datetime.now(UTC))
    if isinstance(consent, Rejection):
        raise rejected(consent)
    if state.consent is None:
        raise _unavailable(state)
    try:
        result = await state.consent.write(
            consent.subjects, consent.record, may_grant=source.may_grant
        )
    except (RedisError, OSError) as exc:
        raise _unavailable(state) from exc
    status = "forbidden" if result.refused else "written"
    state.stats.add("router_consent_writes_total", route="consent", source=source.id, status=status)
    if state.audit is not None:
        kind, data = consent_written(
            consent.record,
            consent.ids,
            "consent",
            state.audit_key,
            source_id=source.id,
            refused=result.refused,
        )
        state.audit.record(kind, data)
    if result.refused:
        raise HttpError(
            403,
            "consent_write_forbidden",
            f"source {source.id!r} may only withdraw consent (consent_writes: "
            f"{source.consent_writes.value}): the grant of {', '.join(sorted(result.refused))} "
            "was not stored; the withdrawals in the request were",
            path="categories",
        )
    return json_response({"success": True})
