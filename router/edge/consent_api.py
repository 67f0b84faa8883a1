"""The consent endpoints: ``POST /v1/consent`` and ``GET /v1/consent/status``.

``POST /v1/consent`` (write-key auth, like ``/v1/track``): store a person's consent choice
``{"userId"?, "anonymousId"?, "categories": {"analytics": true, "C0004": false}, "timestamp"?,
"source"?}``; ids are mapped like Segment ``categoryPreferences``. 200 once it is in Redis; a
``consent_written`` record (subjects as keyed tokens, the source id) goes to the audit trail's
next flush.

Who may write (``sources[].consent_writes``): a source with ``grant`` stores any choice; any
other source may only withdraw: its denials are stored, and a grant that stored consent does
not already hold is refused with 403 ``consent_write_forbidden`` (the withdrawals of the same
request are stored all the same: a withdrawal must never be lost to a malformed request).

``GET /v1/consent/status?userId=..&anonymousId=..`` (write-key auth and CORS like
``/v1/track``): what the router holds for the person, for a site to show them (as California's
rules on opt-out preference signals ask): the stored consent (merged as the router applies it,
and per id: granted and denied categories, source, timestamp, expiry), and for each opt-out
signal (``gpc``: ``Sec-GPC`` / ``context.consent.gpc``; ``usPrivacy``: a GPP or US Privacy
opt-out) whether the router honoured it and when it last did: the time of the newest audit
record where a destination was withheld from the person for that signal (found through the
audit trail's subject index, so honoured means a destination actually did not get the data;
the trail is written once a second). Errors: 400 ``missing_identity`` / ``invalid_id`` with
the parameter as ``path``, 401, 503 ``consent_store_unavailable``.

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

from consent.ids import subject_key
from consent.records import merge_records
from router.compliance.subject_report import consent_json, iso, opt_outs_honoured
from router.core.audit_records import consent_written, subject_token
from router.core.consent_input import body_write_key, parse_consent_body, parse_status_query
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
    consent = parse_consent_body(body, routing.policy, datetime.now(UTC), state.subject_secret)
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


async def get_consent_status(request: web.Request) -> web.Response:
    """``GET /v1/consent/status?userId=..&anonymousId=..``: what the router holds for a person,
    for a site to show them (see the module docstring)."""
    state = request.app[STATE]
    authenticate(state.routing, request, None)
    query = parse_status_query(request.query.items())
    if isinstance(query, Rejection):
        raise rejected(query)
    if state.consent is None:
        raise _unavailable(state)
    labelled = [("userId", query.user_id), ("anonymousId", query.anonymous_id)]
    try:
        secret = state.subject_secret
        records = await state.consent.lookup(subject_key(i, secret) for _, i in labelled if i)
        honoured = await opt_outs_honoured(
            state.redis, [subject_token(i, state.audit_key) for i in query.ids]
        )
    except (RedisError, OSError) as exc:
        raise _unavailable(state) from exc
    merged = merge_records(records.values())
    return json_response(
        {
            "success": True,
            "consent": consent_json(merged),
            "ids": {
                name: consent_json(records.get(subject_key(value, secret))) if value else None
                for name, value in labelled
            },
            "optOut": {
                signal: {
                    "honoured": reason in honoured,
                    "at": iso(datetime.fromisoformat(honoured[reason]["at"]))
                    if reason in honoured
                    else None,
                }
                for signal, reason in OPT_OUT_SIGNALS
            },
        }
    )


OPT_OUT_SIGNALS = (("gpc", "gpc_opt_out"), ("usPrivacy", "us_opt_out"))
"""The opt-out signals the status reports, and the skip reason that shows one honoured."""
