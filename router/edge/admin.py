"""The operator API under ``/admin``: bearer tokens with roles, every call audited.

Wiring (in ``create_app``, after ``app[STATE]`` is set)::

    add_admin_routes(app, tokens=tokens_of(settings), audit_key=settings.audit_key_bytes)

Tokens: ``ROUTER_ADMIN_TOKENS`` is a JSON object ``{"<sha256 hex of the token>": "<role>"}`` or
the path of a file holding one. Only hashes are stored; a presented ``Authorization: Bearer``
token is hashed and compared with every stored hash in constant time. Make a token with
``python -c 'import secrets; print(secrets.token_urlsafe(32))'`` and store
``sha256sum``'s hex of it. No token: 401. A role not in the endpoint's row of ``ROLE_TABLE``:
403. Each call, allowed or not, appends an ``admin_call`` record to the audit trail (endpoint,
method, status, role, and the first 12 hex digits of the token's hash: never the token).
The record goes through the process's one audit writer (its lane; concurrent calls share round
trips). No call answers 500: a call that cannot be audited, a Redis failure or a bug answers 503
with ``Retry-After``. JSON bodies get ingest's limits (``limits.max_depth``, checked before any
decoder with ``jsonscan.depth_path``: 400 ``too_deep`` with the path).

Roles: ``viewer`` < ``operator`` < ``admin``, and ``auditor`` beside them (privacy and legal:
the data map, anomalies, explain, the audit trail and subject access reports, but not queues
or dead letters).

Endpoints (``ROLE_TABLE`` is the source of truth):

- ``GET  /admin/destinations``                      id, type, purpose, requires, queue, held...
- ``GET  /admin/datamap?day=YYYY-MM-DD``            what left, per destination (default today)
- ``GET  /admin/inventory[?format=markdown]``       the record of processing: recipients, legal
                                                    basis, what was sent in 30 days, flags
- ``GET  /admin/anomalies?limit=N``                 newest first
- ``POST /admin/holds/{destination}/release``       the held events flow again
- ``POST /admin/holds/{destination}/discard``       drop the queued events, then release
- ``GET  /admin/dlq/{destination}?limit=N``         dead letters: id, reason, time, event id
- ``POST /admin/dlq/{destination}/replay``          body ``{"ids": [...]}`` or all (up to limit)
- ``GET  /admin/quarantine?limit=N``                rejected events, redacted
- ``GET  /admin/audit/export``                      JSON lines
- ``GET  /admin/audit/verify``                      the chain check
- ``POST /admin/explain``                           ``{"event": {...}, "consent"?, "headers"?}``
- ``POST /admin/erase``                             ``{"userId"?, "anonymousId"?, "email"?}``:
                                                    erase a person (``router.compliance.erasure``)
- ``POST /admin/subject-report``                    the same body: a person's subject access
                                                    report (roles ``auditor``, ``admin``)

``ROUTER_OPERATOR_TOKEN`` (the 0.1 erasure token) counts as a token with the ``operator`` role
(``create_app`` adds its hash to the table). ``/admin/erase`` keeps its 0.1 answers: 401
``invalid_token``, and 503 ``erasure_disabled`` when no token at all is configured.

No endpoint returns an event's payload (design guarantee 7): dead letters are listed by id,
reason and message id only; ``explain`` answers about the event posted to it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from router.compliance import anomaly
from router.compliance.audit_log import AuditLog
from router.compliance.datamap import day_of, read_datamap
from router.compliance.erasure import Identifiers, Ids, erase
from router.compliance.inventory import read_inventory, render_markdown
from router.compliance.quarantine import read_quarantine
from router.compliance.subject_report import subject_report
from router.core.audit_records import AuditKind
from router.core.explain import consent_context, explain
from router.core.jsonscan import depth_path
from router.core.outcomes import Failure, Rejection
from router.core.schema import WireEvent, error_path, error_text
from router.core.sealing import Undecryptable
from router.core.signals import signals_from_headers
from router.edge.http import HttpError, decode_body, error_response, json_response, read_body
from router.edge.state import STATE, AppState
from router.edge.tokens import Identity, Role, TokenTable
from router.errors import AuditConflictError
from router.observability.metrics import RouterMetrics
from router.queue.items import DLQ_ROLE, ITEM_DECODER, replay_entry, sealed_for
from router.queue.keys import dlq_key, queue_key
from router.queue.streams import discard, queue_status, release

log = logging.getLogger("router.admin")


VIEW: Final = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN})
PRIVACY: Final = VIEW | {Role.AUDITOR}
OPERATE: Final = frozenset({Role.OPERATOR, Role.ADMIN})
AUDIT: Final = frozenset({Role.AUDITOR, Role.ADMIN})

MAX_BODY_BYTES: Final = 64 * 1024
MAX_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class AdminState:
    """What the admin routes need beyond ``STATE``."""

    tokens: TokenTable
    audit_key: bytes = b""
    _logs: dict[int, AuditLog] = field(default_factory=dict, compare=False, repr=False)

    def audit_log(self, state: AppState) -> AuditLog:
        """The process's audit writer: the app's (``state.audit``) when it has one, else one
        made on first use and kept (every ``AuditLog`` opens a lane of its own)."""
        if state.audit is not None:
            return state.audit.log
        found = self._logs.get(id(state.redis))
        if found is None or found.client is not state.redis:
            found = self._logs[id(state.redis)] = AuditLog(state.redis, key=self.audit_key)
        return found


ADMIN = web.AppKey("admin", AdminState)

AdminHandler = Callable[[web.Request, "Call"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Call:
    """An authorised call: who, and the audit log to write to."""

    identity: Identity
    audit: AuditLog
    state: AppState

    @property
    def actor(self) -> str:
        """How the caller appears in audit records."""
        return f"{self.identity.role.value}:{self.identity.token_id}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One row of the role table."""

    method: str
    path: str
    roles: frozenset[Role]
    handler: AdminHandler
    unauthorized: HttpError | None = None
    """The 401 answer, when it is not the default ``unauthorized`` (an older contract)."""
    disabled: HttpError | None = None
    """The answer when no token at all is configured (default: 401 like any other call)."""


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _unavailable(state: AppState, code: str, message: str) -> HttpError:
    return HttpError(503, code, message, retry_after=state.settings.retry_after_s)


def _guard(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def guarded(request: web.Request) -> web.StreamResponse:
        admin = request.app[ADMIN]
        state = request.app[STATE]
        audit = admin.audit_log(state)
        token = _bearer(request)
        identity = admin.tokens.authenticate(token) if token else None
        response: web.StreamResponse
        if identity is None and endpoint.disabled is not None and not admin.tokens.entries:
            response = error_response(endpoint.disabled)
        elif identity is None:
            response = error_response(
                endpoint.unauthorized
                or HttpError(401, "unauthorized", "send a valid `Authorization: Bearer` token")
            )
            response.headers["WWW-Authenticate"] = "Bearer"
        elif identity.role not in endpoint.roles:
            allowed = ", ".join(sorted(r.value for r in endpoint.roles))
            response = error_response(
                HttpError(403, "forbidden", f"this endpoint needs one of the roles: {allowed}")
            )
        else:
            response = await _answer(endpoint, request, Call(identity, audit, state))
        destination = request.match_info.get("destination")
        data: dict[str, Any] = {
            "endpoint": endpoint.path,
            "method": endpoint.method,
            "status": response.status,
            "role": identity.role.value if identity else None,
            "token": identity.token_id if identity else None,
        }
        if destination is not None:
            known = state.routing.destination(destination) is not None
            data["destination"] = destination if known else "(unknown)"
        try:
            await audit.append(AuditKind.ADMIN_CALL, data)
        except (RedisError, OSError, AuditConflictError):
            if response.prepared:
                raise
            message = "the call could not be audited; retry later"
            if endpoint.path == "/admin/erase" and response.status == 200:
                message += " (the erasure was applied and receipted; erasing again is safe)"
            response = error_response(_unavailable(state, "audit_unavailable", message))
        return response

    return guarded


async def _answer(endpoint: Endpoint, request: web.Request, call: Call) -> web.StreamResponse:
    """The handler's answer; never an exception: every failure is an answer with a code."""
    try:
        return await endpoint.handler(request, call)
    except HttpError as error:
        return error_response(error)
    except (RedisError, OSError) as exc:
        return error_response(
            _unavailable(
                call.state, "redis_unavailable", f"Redis is unavailable ({type(exc).__name__})"
            )
        )
    except AuditConflictError:
        return error_response(
            _unavailable(call.state, "audit_unavailable", "the audit trail is busy; retry later")
        )
    except Exception as exc:  # a bug: still an answer in the one shape, and audited
        # No traceback: an exception's message may quote the request (personal data).
        log.error(
            "admin handler failed", extra={"endpoint": endpoint.path, "error": type(exc).__name__}
        )
        return error_response(
            _unavailable(call.state, "internal_error", "unexpected error; retry later")
        )


# --- queue status --------------------------------------------------------------------------------


# --- erasure body ---


class EraseBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /admin/erase``: any identifiers, one or a list of each."""

    user_id: Ids = msgspec.field(default=None, name="userId")
    anonymous_id: Ids = msgspec.field(default=None, name="anonymousId")
    email: Ids = None


_ERASE_DECODER = msgspec.json.Decoder(EraseBody)


def parse_erase_body(body: bytes) -> Identifiers:
    """The identifiers of an erasure request; ``HttpError`` 400 when invalid or empty."""
    parsed = decode_body(_ERASE_DECODER, body)

    def listed(value: str | list[str] | None) -> list[str]:
        return [] if value is None else [value] if isinstance(value, str) else value

    identifiers = Identifiers.of(
        listed(parsed.user_id), listed(parsed.anonymous_id), listed(parsed.email)
    )
    if not identifiers.count:
        raise HttpError(
            400, "missing_identity", "give a userId, anonymousId or email", path="userId"
        )
    return identifiers


# --- handlers ------------------------------------------------------------------------------------


def _destination(call: Call, request: web.Request) -> str:
    destination = request.match_info["destination"]
    if call.state.routing.destination(destination) is None:
        raise HttpError(404, "unknown_destination", "no destination with this id is configured")
    return destination


def _limit(request: web.Request, default: int = 100) -> int:
    try:
        limit = int(request.query.get("limit", default))
    except ValueError as exc:
        raise HttpError(400, "invalid_limit", "limit must be an integer") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise HttpError(400, "invalid_limit", f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def _max_depth(call: Call) -> int:
    return call.state.routing.file.limits.max_depth


def check_depth(body: bytes, max_depth: int, *, root: str = "") -> None:
    """400 ``too_deep`` (with the path) when a body nests arrays or objects ``max_depth`` or
    more levels below ``root``'s members, the limit ingest applies to an event's fields;
    checked without recursion, before any decoder sees the body."""
    path = depth_path(body, max_depth + (1 if root else 0))
    if path is not None:
        raise HttpError(400, "too_deep", f"nesting deeper than {max_depth} levels", path=path)


_ANY_JSON = msgspec.json.Decoder()


def decode_json(body: bytes, max_depth: int, *, root: str = "") -> Any:
    """A JSON body within the depth limit (see ``check_depth``; ``None`` when empty);
    ``HttpError`` 400 otherwise."""
    if not body.strip():
        return None
    check_depth(body, max_depth, root=root)
    try:
        return _ANY_JSON.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HttpError(400, "invalid_json", "the body is not valid JSON") from exc


async def _json_body(request: web.Request, call: Call) -> Any:
    return decode_json(await read_body(request, MAX_BODY_BYTES), _max_depth(call))


async def list_destinations(request: web.Request, call: Call) -> web.StreamResponse:
    """``GET /admin/destinations``."""
    del request
    routing = call.state.routing
    status = await queue_status(call.state.redis, [d.id for d in routing.destinations])
    rows = []
    for destination in routing.destinations:
        queue = status[destination.id]
        rows.append(
            {
                "id": destination.id,
                "type": destination.type,
                "purpose": destination.config.purpose,
                "requires": list(destination.requires),
                "enabled": destination.config.enabled,
                "dry_run": destination.config.dry_run,
                "queue_length": queue.length,
                "pending": queue.pending,
                "dlq_length": queue.dlq_length,
                "lag_seconds": queue.lag_seconds,
                "held": queue.hold is not None,
                "hold": queue.hold,
            }
        )
    return json_response({"destinations": rows})


async def get_inventory(request: web.Request, call: Call) -> web.StreamResponse:
    """``GET /admin/inventory[?format=json|markdown]``."""
    kind = request.query.get("format", "json")
    if kind not in ("json", "markdown"):
        raise HttpError(400, "invalid_format", "format must be json or markdown", path="format")
    inventory = await read_inventory(call.state.redis, call.state.routing, datetime.now(UTC))
    if kind == "markdown":
        return web.Response(text=render_markdown(inventory), content_type="text/markdown")
    return json_response(inventory.to_json())


async def get_datamap(request: web.Request, call: Call) -> web.StreamResponse:
    """``GET /admin/datamap?day=``."""
    day = request.query.get("day") or day_of(datetime.now(UTC))
    try:
        parsed = date.fromisoformat(day)
    except ValueError as exc:
        raise HttpError(400, "invalid_day", "day must be YYYY-MM-DD") from exc
    return json_response(await read_datamap(call.state.redis, parsed))


async def list_anomalies(request: web.Request, call: Call) -> web.StreamResponse:
    """``GET /admin/anomalies?limit=``."""
    limit = _limit(request)
    return json_response({"anomalies": await anomaly.recent_anomalies(call.state.redis, limit)})


async def release_hold(request: web.Request, call: Call) -> web.StreamResponse:
    """``POST /admin/holds/{destination}/release``."""
    destination = _destination(call, request)
    released = await release(call.state.redis, destination, audit=call.audit, actor=call.actor)
    return json_response({"destination": destination, "released": released})


async def discard_hold(request: web.Request, call: Call) -> web.StreamResponse:
    """``POST /admin/holds/{destination}/discard``."""
    destination = _destination(call, request)
    count = await discard(call.state.redis, destination, audit=call.audit, actor=call.actor)
    return json_response({"destination": destination, "discarded": count})


async def list_dlq(request: web.Request, call: Call) -> web.StreamResponse:
    """``GET /admin/dlq/{destination}?limit=``: newest first, without payloads."""
    destination = _destination(call, request)
    entries = await call.state.redis.xrevrange(dlq_key(destination), count=_limit(request))
    rows = []
    for entry_id, fields in entries:
        row: dict[str, Any] = {
            "id": entry_id.decode(),
            "reason": Failure.parse(fields.get(b"reason", b"").decode("utf-8", "replace")).text,
            "at": fields.get(b"at", b"").decode("utf-8", "replace"),
        }
        sealed = fields.get(b"d")
        try:
            if sealed is None:  # kept sealed for the queue: it did not open there
                raise Undecryptable("kept_sealed")
            opened = call.state.sealer.open(sealed, sealed_for(DLQ_ROLE, destination, "d"))
            item = ITEM_DECODER.decode(opened)
        except Undecryptable:
            row["undecryptable"] = True
        except msgspec.DecodeError:
            row["corrupt"] = True
        else:
            row.update(
                message_id=item.delivery.message_id,
                type=item.delivery.type,
                event=item.delivery.event,
            )
        rows.append(row)
    return json_response({"destination": destination, "dead_letters": rows})


async def list_quarantine(request: web.Request, call: Call) -> web.StreamResponse:
    """``GET /admin/quarantine?limit=``: rejected events, redacted, newest first."""
    state = call.state
    entries = await read_quarantine(
        state.redis,
        _limit(request),
        now=datetime.now(UTC),
        retention_days=state.settings.quarantine_retention_days,
        sealer=state.sealer,
    )
    return json_response({"quarantine": entries})


async def replay_dlq(request: web.Request, call: Call) -> web.StreamResponse:
    """``POST /admin/dlq/{destination}/replay``: move dead letters back to the queue.

    Replayed entries re-enter the destination's stream like any other entry, so the delivery
    worker's re-check (suppression, then the current consent) applies to them before any send:
    an erasure or withdrawal since the first attempt wins.
    """
    destination = _destination(call, request)
    body = await _json_body(request, call)
    client = call.state.redis
    dlq = dlq_key(destination)
    if isinstance(body, dict) and body.get("ids") is not None:
        ids = body["ids"]
        if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise HttpError(400, "invalid_ids", "ids must be a list of dead-letter ids")
        if len(ids) > MAX_LIMIT:
            raise HttpError(400, "invalid_ids", f"at most {MAX_LIMIT} ids per call")
        pipe = client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(dlq, min=entry_id, max=entry_id)
        try:
            found = [e for page in await pipe.execute() for e in page]
        except RedisError as exc:
            raise HttpError(400, "invalid_ids", "an id is not a stream id") from exc
    else:
        found = await client.xrange(dlq, count=_limit(request, MAX_LIMIT))
    pipe = client.pipeline(transaction=True)
    replayed, kept = 0, 0
    for entry_id, fields in found:
        entry = replay_entry(call.state.sealer, destination, fields)
        if entry is None:
            kept += 1
            continue
        pipe.xadd(queue_key(destination), entry)  # type: ignore[arg-type]
        pipe.xdel(dlq, entry_id)
        replayed += 1
    if replayed:
        await pipe.execute()
    await call.audit.append(
        AuditKind.DLQ_REPLAY,
        {"destination": destination, "count": replayed, "actor": call.actor},
    )
    answer: dict[str, Any] = {"destination": destination, "replayed": replayed}
    if kept:
        answer["undecryptable"] = kept
    return json_response(answer)


async def erase_subject(request: web.Request, call: Call) -> web.StreamResponse:
    """``POST /admin/erase``: erase a person (``router.compliance.erasure``); the receipt.

    The erasure is audited twice: the ``admin_call`` of every call, and an ``erasure`` record
    naming the caller, the receipt and the subjects as keyed tokens.
    """
    body = await read_body(request, MAX_BODY_BYTES)
    check_depth(body, _max_depth(call))
    identifiers = parse_erase_body(body)
    state = call.state
    unavailable = _unavailable(
        state,
        "consent_store_unavailable",
        "the consent store or the audit trail is unavailable; retry later (erasing again is "
        "safe: an erasure may have been applied without its receipt)",
    )
    if state.consent is None:
        raise unavailable
    try:
        receipt = await erase(
            state.redis,
            state.consent,
            state.routing,
            identifiers,
            state.transport,
            audit=call.audit,
            actor=call.actor,
        )
    except (RedisError, OSError, AuditConflictError) as exc:
        raise unavailable from exc
    state.stats.add("router_erasures_total")
    return json_response({"success": True, "receipt": receipt})


async def report_subject(request: web.Request, call: Call) -> web.StreamResponse:
    """``POST /admin/subject-report``: a person's subject access report
    (``router.compliance.subject_report``); the body names them as ``/admin/erase`` does."""
    body = await read_body(request, MAX_BODY_BYTES)
    check_depth(body, _max_depth(call))
    identifiers = parse_erase_body(body)
    state = call.state
    if state.consent is None:
        raise _unavailable(state, "consent_store_unavailable", "the consent store is unavailable")
    report = await subject_report(
        state.redis,
        state.consent,
        identifiers,
        audit_key=call.audit.key,
        now=datetime.now(UTC),
    )
    return json_response(report)


async def export_audit(request: web.Request, call: Call) -> web.StreamResponse:
    """``GET /admin/audit/export``: every record as a JSON line, oldest first."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    async for line in call.audit.export():
        await response.write(line.encode())
    # No write_eof here: aiohttp ends the response after the guard has audited the call, so a
    # client that read the whole export finds its own admin_call recorded.
    return response


async def verify_audit(request: web.Request, call: Call) -> web.StreamResponse:
    """``GET /admin/audit/verify``."""
    del request
    result = await call.audit.verify()
    return json_response(
        {
            "ok": result.ok,
            "first_bad_seq": result.first_bad_seq,
            "reason": result.reason,
            "checked": result.checked,
            "lane": result.lane,
            "lanes": result.lanes,
        }
    )


async def explain_event(request: web.Request, call: Call) -> web.StreamResponse:
    """``POST /admin/explain``: per destination, deliver or skip, why, and the payload.

    The event gets ingest's limits: its size (``limits.max_event_bytes``, else 413
    ``event_too_large``), its depth (400 ``too_deep`` with the path, checked before decoding),
    then sanitizing; paths in errors start at the body (``event.properties...``).
    """
    routing = call.state.routing
    limits = routing.file.limits
    parsed = decode_json(await read_body(request, MAX_BODY_BYTES), limits.max_depth, root="event")
    if not isinstance(parsed, dict) or not isinstance(parsed.get("event"), dict):
        raise HttpError(400, "invalid_request", 'send {"event": {...}, "consent"?: {...}}')
    data = dict(parsed["event"])
    if len(msgspec.json.encode(data)) > limits.max_event_bytes:
        raise HttpError(
            413, "event_too_large", f"an event is limited to {limits.max_event_bytes} bytes"
        )
    if parsed.get("consent") is not None:
        context = data.get("context") or {}
        if not isinstance(context, dict):
            raise HttpError(400, "invalid_event", "expected `object`", path="event.context")
        data["context"] = {**context, **consent_context(parsed["consent"])}
    data.setdefault("type", "track")
    try:
        wire = msgspec.convert(data, WireEvent)
    except msgspec.ValidationError as exc:
        text = str(exc)
        path = error_path(text)
        raise HttpError(
            400, "invalid_event", error_text(text), path=f"event.{path}" if path else "event"
        ) from exc
    headers = parsed.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise HttpError(400, "invalid_request", "headers must be an object", path="headers")
    reports = explain(
        routing,
        wire,
        now=datetime.now(UTC),
        new_id=lambda: str(uuid.uuid4()),
        signals=signals_from_headers(
            ((str(k), str(v)) for k, v in (headers or {}).items()), routing.policy.geo_header
        ),
    )
    if isinstance(reports, Rejection):
        path = f"event.{reports.path}" if reports.path else "event"
        raise HttpError(400, reports.code, reports.message, path=path)
    return json_response({"destinations": reports})


ROLE_TABLE: Final[tuple[Endpoint, ...]] = (
    Endpoint("GET", "/admin/destinations", VIEW, list_destinations),
    Endpoint("GET", "/admin/datamap", PRIVACY, get_datamap),
    Endpoint("GET", "/admin/inventory", PRIVACY, get_inventory),
    Endpoint("GET", "/admin/anomalies", PRIVACY, list_anomalies),
    Endpoint("POST", "/admin/holds/{destination}/release", OPERATE, release_hold),
    Endpoint("POST", "/admin/holds/{destination}/discard", OPERATE, discard_hold),
    Endpoint("GET", "/admin/dlq/{destination}", OPERATE, list_dlq),
    Endpoint("GET", "/admin/quarantine", OPERATE, list_quarantine),
    Endpoint("POST", "/admin/dlq/{destination}/replay", OPERATE, replay_dlq),
    Endpoint("GET", "/admin/audit/export", AUDIT, export_audit),
    Endpoint("GET", "/admin/audit/verify", AUDIT, verify_audit),
    Endpoint("POST", "/admin/explain", PRIVACY, explain_event),
    Endpoint("POST", "/admin/subject-report", AUDIT, report_subject),
    Endpoint(
        "POST",
        "/admin/erase",
        OPERATE,
        erase_subject,
        unauthorized=HttpError(
            401, "invalid_token", "send Authorization: Bearer <operator or admin token>"
        ),
        disabled=HttpError(
            503,
            "erasure_disabled",
            "erasure is disabled: set ROUTER_OPERATOR_TOKEN or ROUTER_ADMIN_TOKENS to enable it",
        ),
    ),
)


def add_admin_routes(app: web.Application, *, tokens: TokenTable, audit_key: bytes) -> None:
    """Register ``/admin/*`` with the process's token table and audit key (both from
    ``Settings``); without tokens every call answers 401. ``app[STATE]`` must be set before
    the first request."""
    app[ADMIN] = AdminState(tokens=tokens, audit_key=audit_key)
    for endpoint in ROLE_TABLE:
        app.router.add_route(endpoint.method, endpoint.path, _guard(endpoint))


async def refresh_queue_lag(
    client: aioredis.Redis, destination_ids: list[str], metrics: RouterMetrics
) -> None:
    """Sample every destination's queue lag into the ``router_queue_lag_seconds`` gauge (call
    from the ``/metrics`` handler before rendering, and every few seconds for OTLP)."""
    for destination, status in (await queue_status(client, destination_ids)).items():
        metrics.set_queue_lag(destination, status.lag_seconds)
