"""A subject's stored consent record, and how a person's records merge. Pure.

``ConsentRecord`` is what ``consent.store`` keeps per hashed subject id: the granted and denied
categories, the source of the choice (``api``, ``segment_event``...), the consent's own
timestamp, when it reached us and when it expires (``max_age_days`` after the timestamp).
``merge_records`` folds a person's records (user id, anonymous id) into the ``StoredConsent``
the resolver reads: a denial on any id wins, the newest timestamp counts. ``narrow`` is what a
write from a source that may not grant consent does to a stored record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from consent.model import StoredConsent


def millis(moment: datetime) -> int:
    """Epoch milliseconds: how the store's script compares timestamps."""
    return int(moment.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class UnreadableRecordError(ValueError):
    """A stored consent value that is not a record (corrupt or written by something else)."""


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One subject's stored consent."""

    granted: frozenset[str]
    denied: frozenset[str]
    source: str
    updated_at: datetime
    """The consent's own timestamp (the CMP choice), never later than ``received_at``."""
    received_at: datetime
    expires_at: datetime

    @classmethod
    def build(
        cls,
        votes: dict[str, bool],
        *,
        source: str,
        updated_at: datetime,
        received_at: datetime,
        max_age_days: int,
    ) -> ConsentRecord:
        """A record from category votes; a timestamp from the future is clamped to receipt."""
        updated = min(updated_at, received_at)
        return cls(
            granted=frozenset(c for c, v in votes.items() if v),
            denied=frozenset(c for c, v in votes.items() if not v),
            source=source,
            updated_at=updated,
            received_at=received_at,
            expires_at=updated + timedelta(days=max_age_days),
        )

    def consent(self) -> StoredConsent:
        """What the resolver reads."""
        return StoredConsent(self.granted, self.denied, self.source, self.updated_at)

    def encode(self) -> str:
        """The JSON stored under the record key."""
        return json.dumps(
            {
                "granted": sorted(self.granted),
                "denied": sorted(self.denied),
                "source": self.source,
                "updated_at_ms": millis(self.updated_at),
                "received_at_ms": millis(self.received_at),
                "expires_at_ms": millis(self.expires_at),
            },
            separators=(",", ":"),
        )

    @classmethod
    def unreadable(cls, now: datetime) -> ConsentRecord:
        """What a corrupt stored value stands for: a record that grants nothing (fail closed)."""
        return cls(frozenset(), frozenset(), "unreadable", now, now, now + timedelta(days=1))

    @classmethod
    def decode(cls, raw: bytes | str) -> ConsentRecord:
        """A stored record; :class:`UnreadableRecordError` when the value is corrupt."""
        try:
            data = json.loads(raw)
            return cls(
                granted=frozenset(str(c) for c in data["granted"]),
                denied=frozenset(str(c) for c in data["denied"]),
                source=str(data["source"]),
                updated_at=_at(int(data["updated_at_ms"])),
                received_at=_at(int(data["received_at_ms"])),
                expires_at=_at(int(data["expires_at_ms"])),
            )
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            # ``raise ... from exc`` spelled out: mypyc (the compiled build) drops the cause of
            # ``raise ... from``; setting ``__cause__`` also suppresses the context, as it does.
            error = UnreadableRecordError()
            error.__cause__ = exc
            raise error  # noqa: B904 - the cause is set above


def merge_records(records: Iterable[ConsentRecord | None]) -> StoredConsent | None:
    """A person's records (user id, anonymous id) as one: a denial wins, newest timestamp."""
    present = [r for r in records if r is not None]
    if not present:
        return None
    if len(present) == 1:  # one id known (or the same record): nothing to fold
        only = present[0]
        return StoredConsent(only.granted - only.denied, only.denied, only.source, only.updated_at)
    denied = frozenset().union(*(r.denied for r in present))
    granted = frozenset().union(*(r.granted for r in present)) - denied
    newest = max(present, key=lambda r: r.updated_at)
    return StoredConsent(granted, denied, newest.source, newest.updated_at)


def narrow(
    current: ConsentRecord | None, write: ConsentRecord
) -> tuple[ConsentRecord | None, frozenset[str]]:
    """A write from a source that may only withdraw: the record to store and the refused grants.

    The stored record keeps what ``current`` grants, minus the write's denials, and denies what
    either denies; a grant ``current`` does not already hold is refused (returned, not stored);
    a write that adds no denial stores nothing (``None``). ``consent.store`` applies the same
    rule atomically in Redis; this is the pure statement of it.
    """
    granted = frozenset() if current is None else current.granted - current.denied
    denied = frozenset() if current is None else current.denied
    refused = write.granted - granted
    if write.denied <= denied:
        return None, refused
    record = ConsentRecord(
        granted=granted - write.denied,
        denied=denied | write.denied,
        source=write.source,
        updated_at=write.updated_at,
        received_at=write.received_at,
        expires_at=write.expires_at,
    )
    return record, refused
