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

The body is validated once (``parse_consent_body``): ids normalized and hashed, categories
mapped, ``source`` and ``timestamp`` checked; every problem is a 400 with a stable code and path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from consent.ids import normalize_id, subject_key
from consent.policy import ConsentPolicy
from consent.records import ConsentRecord
from router.core.audit_records import consent_written
from router.core.jsonscan import depth_path
from router.edge.http import HttpError, basic_auth_key, decode_body, json_response, read_body
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


# --- the body ---


SOURCE_API = "api"
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")

Id = Annotated[str, msgspec.Meta(max_length=512)]


class ConsentBody(msgspec.Struct, frozen=True):
    """``POST /v1/consent``: whose consent, the category choices, when, from where."""

    categories: dict[Annotated[str, msgspec.Meta(max_length=128)], bool]
    user_id: Id | int | None = msgspec.field(default=None, name="userId")
    anonymous_id: Id | int | None = msgspec.field(default=None, name="anonymousId")
    timestamp: str | None = None
    source: str | None = None
    write_key: str | None = msgspec.field(default=None, name="writeKey")


_BODY_DECODER = msgspec.json.Decoder(ConsentBody)
_KEY_DECODER = msgspec.json.Decoder(dict[str, Any])


def body_write_key(body: bytes) -> str | None:
    """The ``writeKey`` member of a body, if any (for authentication before validation)."""
    try:
        key = _KEY_DECODER.decode(body).get("writeKey")
    except (msgspec.DecodeError, RecursionError):
        return None
    return key if isinstance(key, str) else None


class ConsentRequest(NamedTuple):
    """A valid ``POST /v1/consent``: hashed subjects, the record, and the ids as given (for
    the audit trail's keyed tokens; never stored)."""

    subjects: list[str]
    record: ConsentRecord
    ids: list[str]


def parse_consent_body(body: bytes, policy: ConsentPolicy, received_at: datetime) -> ConsentRequest:
    """Hashed subject ids and the record to store; ``HttpError`` 400 when invalid."""
    parsed = decode_body(_BODY_DECODER, body)
    ids = [normalize_id(str(i)) for i in (parsed.user_id, parsed.anonymous_id) if i is not None]
    ids = [i for i in ids if i]
    if not ids:
        raise HttpError(400, "missing_identity", "userId or anonymousId is required", path="userId")
    votes: dict[str, bool] = {}
    for cmp_id, granted in parsed.categories.items():
        category = policy.category_of(cmp_id)
        if category is not None:
            votes[category] = votes.get(category, True) and granted
    if not votes:
        raise HttpError(
            400,
            "unknown_categories",
            "no key of `categories` is a configured category or category id",
            path="categories",
        )
    source = SOURCE_API if parsed.source is None else parsed.source
    if not _SOURCE.match(source):
        raise HttpError(400, "invalid_source", "source: up to 32 of a-z 0-9 _ . -", path="source")
    updated_at = received_at if parsed.timestamp is None else _timestamp(parsed.timestamp)
    record = ConsentRecord.build(
        votes,
        source=source,
        updated_at=updated_at,
        received_at=received_at,
        max_age_days=policy.max_age_days,
    )
    if record.expires_at <= received_at:
        raise HttpError(
            400,
            "consent_expired",
            f"the timestamp is older than max_age_days ({policy.max_age_days})",
            path="timestamp",
        )
    unique = list(dict.fromkeys(ids))
    return ConsentRequest([subject_key(i) for i in unique], record, unique)


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise HttpError(
            400, "invalid_timestamp", "expected an ISO 8601 timestamp", path="timestamp"
        ) from exc
