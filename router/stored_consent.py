"""The router's use of the consent store: the consent API body, the re-check.

- ``parse_consent_body``: ``POST /v1/consent`` bodies, validated once, ids hashed.
- ``consent_recheck``: the delivery worker's hook: a stored withdrawal newer than the event
  skips the send with ``consent_withdrawn``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple

import msgspec

from consent.ids import normalize_id, subject_key
from consent.model import StoredConsent
from consent.policy import ConsentPolicy, withdrawn
from consent.records import ConsentRecord, merge_records
from consent.store import ConsentStore
from router.core.outcomes import SkipReason
from router.core.schema import error_path, error_text
from router.http import HttpError
from router.worker import Recheck, RecheckItem

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


_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")


def invalid_field(error: msgspec.ValidationError) -> HttpError:
    """A 400 ``invalid_field`` with the field's path (a missing or unknown field's name too)."""
    text = str(error)
    path = error_path(text)
    named = _NAMED_FIELD.search(text)
    if named is not None:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return HttpError(400, "invalid_field", error_text(text), path=path or None)


class ConsentRequest(NamedTuple):
    """A valid ``POST /v1/consent``: hashed subjects, the record, and the ids as given (for
    the audit trail's keyed tokens; never stored)."""

    subjects: list[str]
    record: ConsentRecord
    ids: list[str]


def parse_consent_body(
    body: bytes, policy: ConsentPolicy, received_at: datetime, subject_secret: bytes = b""
) -> ConsentRequest:
    """Hashed subject ids and the record to store; ``HttpError`` 400 when invalid."""
    try:
        parsed = _BODY_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid_field(exc) from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HttpError(400, "invalid_json", "the body is not valid JSON") from exc
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
    return ConsentRequest([subject_key(i, subject_secret) for i in unique], record, unique)


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


def consent_recheck(store: ConsentStore) -> Recheck:
    """The delivery re-check: a stored withdrawal newer than the event wins.

    "Newer" is compared with the earlier of the event's own time and its acceptance: a denial
    recorded after either was not known to the ingest decision (which already applied every
    stored denial newer than the event time), so it wins now.
    """

    async def recheck(items: Sequence[RecheckItem]) -> list[SkipReason | None]:
        subjects = {h for item in items if item.requires for h in item.subjects}
        records = await store.lookup(subjects) if subjects else {}
        reasons: list[SkipReason | None] = [None] * len(items)
        if not any(records.values()):
            return reasons  # no stored record: nothing can have been withdrawn
        # A batch holds many events of the same few people: merge their records once.
        merged: dict[tuple[str, ...], StoredConsent | None] = {}
        for index, item in enumerate(items):
            if item.accepted_at is None or not item.subjects or not item.requires:
                continue
            key = item.subjects
            if key in merged:
                stored = merged[key]
            else:
                stored = merged[key] = merge_records(records.get(h) for h in key)
            if stored is None:
                continue
            since = min(item.accepted_at, item.delivery.timestamp)
            if withdrawn(stored, item.requires, since):
                reasons[index] = SkipReason.CONSENT_WITHDRAWN
        return reasons

    return recheck
