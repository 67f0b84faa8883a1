"""Erasure: forget a person's stored consent, refuse their events, ask destinations to delete.

``erase`` (used by ``POST /admin/erase`` and ``router erase``):

1. normalizes every identifier exactly as ingest does (``consent.ids.normalize_id``) and hashes
   it (user ids, anonymous ids, emails as given and lower-cased);
2. in one Redis transaction adds the hashes to ``rt:suppressed`` (checked at ingest and again by
   the delivery worker, so queued events of the person reach no destination), deletes their
   consent records and histories, and publishes the hashes so every process evicts its cache;
   then deletes the person's quarantined (rejected) events, found by their hashed subjects, and
   their entries in aggregate destinations' contribution ledgers;
3. sends each destination's deletion request (``Connector.deletion_request``, pure) through
   the process's transport, unless the platform has no deletion API or the destination is
   ``dry_run``, with the ids as that destination received them (tokenized when its allowlist
   tokenizes them), and reads the answer with ``Connector.interpret_deletion``;
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
from typing import Annotated, Any

import msgspec
import redis.asyncio as aioredis

from consent.ids import normalize_id, subject_key
from consent.store import ConsentStore
from destinations.aggregate import AggregateSettings
from destinations.base import Connector, DeletionSkipped
from destinations.errors import TransportError
from destinations.transport import Transport
from router.compliance.aggregates import AggregateStore
from router.compliance.audit_log import AuditLog
from router.compliance.quarantine import erase_quarantined
from router.core.audit_records import AuditKind, subject_token
from router.queue.keys import ERASURES
from router.routing import CompiledDestination, Routing

log = logging.getLogger("router.erasure")

ERASURES_MAXLEN = 100_000
MAX_IDS = 100
DELETION_TIMEOUT_S = 30.0
DELETION_ID_FIELDS: dict[str, tuple[str, ...]] = {"amplitude": ("userId",)}
"""Which ids a platform's deletion API takes (default: user ids and anonymous ids)."""


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

    def tokens(self, key: bytes) -> list[str]:
        """The subjects as the audit trail names them (keyed tokens; an email also
        lower-cased), sorted."""
        every = {*self.user_ids, *self.anonymous_ids, *self.emails}
        every |= {email.lower() for email in self.emails}
        return sorted({subject_token(i, key) for i in every})

    def hashes(self, secret: bytes = b"") -> list[str]:
        """The hashed subjects to suppress (an email also lower-cased), keyed by ``secret``."""
        values = [*self.user_ids, *self.anonymous_ids]
        for email in self.emails:
            values += [email, email.lower()]
        return list(dict.fromkeys(subject_key(v, secret) for v in values))


Id = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Ids = Id | Annotated[list[Id], msgspec.Meta(max_length=MAX_IDS)] | None


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


async def request_deletion(
    connector: Connector[Any], ids: Sequence[str], transport: Transport, *, dry_run: bool = False
) -> dict[str, Any]:
    """Send the connector's deletion request for ``ids``; a receipt without the ids: ``status``
    ``scheduled``, ``retry`` (rate limit, 5xx, no answer), ``failed`` or ``skipped``."""
    receipt: dict[str, Any] = {"destination": connector.destination_id, "type": connector.type_name}
    request = connector.deletion_request(ids)
    if request is None:
        return receipt | {"status": "skipped", "reason": "no_deletion_api"}
    if dry_run:
        return receipt | {"status": "skipped", "reason": "dry_run"}
    receipt["ids"] = len(ids)
    if isinstance(request, DeletionSkipped):
        return receipt | {"status": "skipped", "reason": request.reason}
    try:
        response = await transport.send(request, DELETION_TIMEOUT_S)
    except TransportError as exc:
        return receipt | {"status": "retry", "reason": exc.reason}
    receipt["http_status"] = response.status
    return receipt | connector.interpret_deletion(response)


async def erase(
    client: aioredis.Redis,
    store: ConsentStore,
    routing: Routing,
    identifiers: Identifiers,
    transport: Transport,
    *,
    audit: AuditLog | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Erase a person everywhere we can; the receipt (no raw identifiers). ``actor``: who
    asked, as the audit trail names them (``operator:<token id>``, ``cli``)."""
    hashes = identifiers.hashes(store.subject_secret)
    erased = await store.erase(hashes)
    quarantined = await erase_quarantined(client, hashes)
    ledgers = 0
    for destination in routing.destinations:
        settings = destination.connector.settings
        if isinstance(settings, AggregateSettings):
            ledgers += await AggregateStore(client, destination.id, settings).forget(hashes)
    destinations = await asyncio.gather(
        *(
            request_deletion(
                d.connector,
                _destination_ids(d, identifiers),
                transport,
                dry_run=d.config.dry_run,
            )
            for d in routing.destinations
        )
    )
    receipt: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "identifiers": identifiers.count,
        "subjects": hashes,
        "removed": {
            "consent_records": erased.consent_records,
            "history_entries": erased.history_entries,
            "quarantined": quarantined,
            "aggregate_contributions": ledgers,
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
    return {
        "receipt": receipt["id"],
        "actor": actor,
        "identifiers": identifiers.count,
        "subjects": identifiers.tokens(audit.key),
        "suppressed": receipt["suppressed"],
        "removed": receipt["removed"],
        "destinations": [
            {k: d[k] for k in ("destination", "status", "reason") if k in d}
            for d in receipt["destinations"]
        ],
    }
