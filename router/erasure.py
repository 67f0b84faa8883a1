"""Erasure: forget a person's stored consent, refuse their events, ask destinations to delete.

``erase`` (used by ``POST /admin/erase`` and ``router erase``):

1. normalizes every identifier exactly as ingest does (``consent.ids.normalize_id``) and hashes
   it (user ids, anonymous ids, emails as given and lower-cased);
2. in one Redis transaction adds the hashes to ``rt:suppressed`` (checked at ingest and again by
   the delivery worker, so queued events of the person reach no destination), deletes their
   consent records and histories, and publishes the hashes so every process evicts its cache;
   then deletes the person's quarantined (rejected) events, found by their hashed subjects;
3. forwards a deletion request to each destination with a deletion API (``delete_subject``),
   unless the destination is ``dry_run``, with the ids as that destination received them
   (tokenized when its allowlist tokenizes them);
4. returns a receipt, also appended to ``rt:erasures``: counts, hashes and per-destination
   statuses, never a raw identifier;
5. appends an ``erasure`` record to the audit trail (when given one): who asked, the receipt's
   id and counts, per-destination statuses, and the subjects as the audit trail's keyed tokens
   (the same tokens its decision records carry), so an auditor holding the key can show that
   nothing was sent for them afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol, runtime_checkable

import aiohttp
import msgspec
import redis.asyncio as aioredis

from consent.ids import normalize_id, subject_key
from consent.store import ConsentStore
from router.audit import AuditLog
from router.config import CompiledDestination, Routing
from router.core.audit_records import AuditKind
from router.http import HttpError
from router.quarantine import erase_quarantined
from router.stored_consent import invalid_field

log = logging.getLogger("router.erasure")

ERASURES = "rt:erasures"
ERASURES_MAXLEN = 100_000
MAX_IDS = 100
DELETION_ID_FIELDS: dict[str, tuple[str, ...]] = {"amplitude": ("userId",)}
"""Which ids a platform's deletion API takes (default: user ids and anonymous ids)."""


@runtime_checkable
class SubjectDeleter(Protocol):
    """A connector with a deletion API (Amplitude, Mixpanel...)."""

    async def delete_subject(
        self, session: aiohttp.ClientSession, ids: Sequence[str], /
    ) -> dict[str, Any]:
        """Ask the platform to delete these ids; a receipt without them."""
        ...


@dataclass(frozen=True, slots=True)
class Identifiers:
    """Everything a person may be known by."""

    user_ids: tuple[str, ...] = ()
    anonymous_ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        user_ids: Sequence[str] = (),
        anonymous_ids: Sequence[str] = (),
        emails: Sequence[str] = (),
    ) -> Identifiers:
        """Normalized as ingest normalizes ids (``consent.ids.normalize_id``), non-empty,
        without duplicates."""

        def clean(values: Sequence[str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(n for n in map(normalize_id, values) if n))

        return cls(clean(user_ids), clean(anonymous_ids), clean(emails))

    @property
    def count(self) -> int:
        """How many distinct identifiers were given."""
        return len({*self.user_ids, *self.anonymous_ids, *self.emails})

    def hashes(self) -> list[str]:
        """The hashed subjects to suppress (an email also lower-cased)."""
        values = [*self.user_ids, *self.anonymous_ids]
        for email in self.emails:
            values += [email, email.lower()]
        return list(dict.fromkeys(subject_key(v) for v in values))


Id = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Ids = Id | Annotated[list[Id], msgspec.Meta(max_length=MAX_IDS)] | None


class EraseBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /admin/erase``: any identifiers, one or a list of each."""

    user_id: Ids = msgspec.field(default=None, name="userId")
    anonymous_id: Ids = msgspec.field(default=None, name="anonymousId")
    email: Ids = None


_ERASE_DECODER = msgspec.json.Decoder(EraseBody)


def parse_erase_body(body: bytes) -> Identifiers:
    """The identifiers of an erasure request; ``HttpError`` 400 when invalid or empty."""
    try:
        parsed = _ERASE_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid_field(exc) from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HttpError(400, "invalid_json", "the body is not valid JSON") from exc

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


def _destination_ids(destination: CompiledDestination, identifiers: Identifiers) -> list[str]:
    """The ids as this destination received them (after its allowlist and transforms)."""
    fields = DELETION_ID_FIELDS.get(destination.type, ("userId", "anonymousId"))
    values = {"userId": identifiers.user_ids, "anonymousId": identifiers.anonymous_ids}
    ids: list[str] = []
    for name in fields:
        for value in values[name]:
            sent = destination.allowlist.apply({name: value}).get(name)
            if isinstance(sent, str) and sent:
                ids.append(sent)
    return list(dict.fromkeys(ids))


async def _forward(
    destination: CompiledDestination, identifiers: Identifiers, session: aiohttp.ClientSession
) -> dict[str, Any]:
    base: dict[str, Any] = {"destination": destination.id, "type": destination.type}
    connector = destination.connector
    if not isinstance(connector, SubjectDeleter):
        return base | {"status": "skipped", "reason": "no_deletion_api"}
    if destination.config.dry_run:
        return base | {"status": "skipped", "reason": "dry_run"}
    try:
        receipt = await connector.delete_subject(
            session, _destination_ids(destination, identifiers)
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return base | {"status": "retry", "reason": type(exc).__name__}
    return base | receipt


async def erase(
    client: aioredis.Redis,
    store: ConsentStore,
    routing: Routing,
    identifiers: Identifiers,
    session: aiohttp.ClientSession | None = None,
    *,
    audit: AuditLog | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Erase a person everywhere we can; the receipt (no raw identifiers). ``actor``: who
    asked, as the audit trail names them (``operator:<token id>``, ``cli``)."""
    hashes = identifiers.hashes()
    erased = await store.erase(hashes)
    quarantined = await erase_quarantined(client, hashes)
    owned = session is None
    http = aiohttp.ClientSession() if session is None else session
    try:
        destinations = await asyncio.gather(
            *(_forward(d, identifiers, http) for d in routing.destinations)
        )
    finally:
        if owned:
            await http.close()
    receipt: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "identifiers": identifiers.count,
        "subjects": hashes,
        "removed": {
            "consent_records": erased.consent_records,
            "history_entries": erased.history_entries,
            "quarantined": quarantined,
        },
        "suppressed": len(hashes),
        "destinations": list(destinations),
    }
    await client.xadd(
        ERASURES,
        {"receipt": msgspec.json.encode(receipt)},
        maxlen=ERASURES_MAXLEN,
        approximate=True,
    )
    if audit is not None:
        await audit.append(AuditKind.ERASURE, erasure_record(receipt, identifiers, audit, actor))
    log.info("erasure done", extra={"count": identifiers.count})
    return receipt


def erasure_record(
    receipt: dict[str, Any], identifiers: Identifiers, audit: AuditLog, actor: str | None
) -> dict[str, Any]:
    """The audit trail's ``erasure`` record: counts, bounded statuses, keyed subject tokens."""
    every = {*identifiers.user_ids, *identifiers.anonymous_ids, *identifiers.emails}
    every |= {email.lower() for email in identifiers.emails}
    return {
        "receipt": receipt["id"],
        "actor": actor,
        "identifiers": identifiers.count,
        "subjects": sorted({audit.token(i) for i in every}),
        "suppressed": receipt["suppressed"],
        "removed": receipt["removed"],
        "destinations": [
            {k: d[k] for k in ("destination", "status", "reason") if k in d}
            for d in receipt["destinations"]
        ],
    }
