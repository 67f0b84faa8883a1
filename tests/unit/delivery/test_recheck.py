"""The delivery re-check of stored consent, per batch (a store answering from a dict)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import cast

from consent.records import ConsentRecord
from consent.store import ConsentStore
from destinations.base import Delivery
from router.delivery.recheck import consent_recheck
from router.queue.items import QueueItem

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class _Store:
    def __init__(self, records: dict[str, ConsentRecord]) -> None:
        self.records = records
        self.asked: list[set[str]] = []

    async def lookup(self, subjects: Iterable[str]) -> dict[str, ConsentRecord | None]:
        wanted = set(subjects)
        self.asked.append(wanted)
        return {s: self.records.get(s) for s in wanted}


def _record(denied: set[str], at: datetime) -> ConsentRecord:
    votes = {"analytics": True, "necessary": True} | dict.fromkeys(denied, False)
    return ConsentRecord.build(votes, source="api", updated_at=at, received_at=at, max_age_days=395)


def _item(
    subjects: tuple[str, ...], requires: tuple[str, ...], at: datetime, accepted: bool = True
) -> QueueItem:
    delivery = Delivery(message_id="m", type="track", timestamp=at, payload={})
    return QueueItem(
        delivery=delivery,
        subjects=subjects,
        requires=requires,
        accepted_at=at if accepted else None,
    )


async def test_a_withdrawal_newer_than_the_event_skips_it_for_each_person_of_the_batch() -> None:
    """Per event: the merged records of its subjects; a denial on any of them newer than the
    event wins; older denials, other categories, no requirement or no record: sent."""
    store = _Store(
        {
            "u1": _record({"advertising"}, T0 + timedelta(minutes=5)),  # withdrew later
            "a1": _record(set(), T0 - timedelta(days=1)),
            "u2": _record({"advertising"}, T0 - timedelta(days=1)),  # denied before
            "a3": _record({"analytics"}, T0 + timedelta(minutes=1)),
        }
    )
    recheck = consent_recheck(cast(ConsentStore, store))
    items = [
        _item(("u1", "a1"), ("advertising",), T0),
        _item(("u1", "a1"), ("analytics",), T0),
        _item(("u2",), ("advertising",), T0),
        _item(("u1", "a1"), ("advertising",), T0 + timedelta(minutes=10)),
        _item(("u9", "a3"), ("analytics",), T0),
        _item(("u9", "a3"), ("analytics", "advertising"), T0),
        _item(("nobody",), ("analytics",), T0),
        _item(("u1", "a1"), (), T0),
        _item(("u1", "a1"), ("advertising",), T0, accepted=False),
        _item(("u1", "a1"), ("advertising",), T0),
    ]
    reasons = await recheck(items)
    withdrawn = "consent_withdrawn"
    assert reasons == [
        withdrawn,
        None,
        None,
        None,
        withdrawn,
        withdrawn,
        None,
        None,
        None,
        withdrawn,
    ]
    assert len(store.asked) == 1  # one lookup for the batch


async def test_no_stored_record_sends_everything() -> None:
    """Nobody has a record: nothing was withdrawn."""
    store = _Store({})
    recheck = consent_recheck(cast(ConsentStore, store))
    items = [_item(("u1",), ("analytics",), T0), _item(("u2",), ("advertising",), T0)]
    assert await recheck(items) == [None, None]
    assert await recheck([]) == []
