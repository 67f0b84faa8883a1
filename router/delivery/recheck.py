"""The re-checks just before sending: a withdrawal or erasure that happened while the event
waited wins over the decision made at ingest.

For a batch: suppression first (erased subjects, one ``SMISMEMBER``), then the optional consent
re-check (``consent_recheck``: one store lookup) for what suppression left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

import redis.asyncio as aioredis

from consent.model import StoredConsent
from consent.policy import withdrawn
from consent.records import merge_records
from consent.store import ConsentStore
from router.core.outcomes import SkipReason
from router.queue.streams import suppressed_among


class _Timed(Protocol):
    @property
    def timestamp(self) -> datetime: ...


class RecheckItem(Protocol):
    """What a re-check reads of a queued delivery (``QueueItem`` and ``QueuedItem`` both are):
    the hashed subjects, the categories it requires, when it was accepted, the event time."""

    @property
    def subjects(self) -> tuple[str, ...]: ...

    @property
    def requires(self) -> tuple[str, ...]: ...

    @property
    def accepted_at(self) -> datetime | None: ...

    @property
    def delivery(self) -> _Timed: ...


Recheck = Callable[[Sequence[RecheckItem]], Awaitable[list[SkipReason | None]]]
"""For a batch of items, a skip reason each (``consent_withdrawn``...) or ``None`` to send."""


async def recheck_batch(
    client: aioredis.Redis, items: Sequence[RecheckItem], consent: Recheck | None
) -> list[SkipReason | None]:
    """Suppression, then the consent re-check, for the whole batch: one round trip each."""
    if not items:
        return []
    hashes = sorted({h for item in items for h in item.subjects})
    erased = await suppressed_among(client, hashes)
    reasons: list[SkipReason | None] = (
        [SkipReason.SUPPRESSED if erased.intersection(item.subjects) else None for item in items]
        if erased
        else [None] * len(items)
    )
    if consent is not None:
        pending = [i for i, reason in enumerate(reasons) if reason is None]
        if pending:
            later = await consent([items[i] for i in pending])
            for i, reason in zip(pending, later, strict=True):
                reasons[i] = reason
    return reasons


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
