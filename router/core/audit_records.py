"""What the router writes to the audit trail about one request, as values. Pure.

``decision_entries``: per event and destination, deliver or skip, the reason, the sent, removed
and transformed field paths (keys normalized) and the consent snapshot's sources and time;
``consent_written``: a stored consent choice. Subject and event ids appear only as
``subject_token``s, HMAC-SHA256 under the audit key. ``router.compliance.audit_log`` chains
and stores them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from consent.ids import hmac_key, normalize_id
from consent.model import ConsentState, Signal
from consent.records import ConsentRecord
from router.core.outcomes import Decision, Deliver
from router.core.paths import field_paths, safe_path, sent_and_removed, sent_paths
from router.core.sanitize import Event

MAX_PATHS: Final = 100
"""At most this many configured paths per record."""


class AuditKind(StrEnum):
    """What a record is about (bounded)."""

    CONFIG_LOADED = "config_loaded"
    CONFIG_CHANGED = "config_changed"
    CONSENT_WRITTEN = "consent_written"
    ERASURE = "erasure"
    HOLD = "hold"
    RELEASE = "release"
    DISCARD = "discard"
    DLQ_REPLAY = "dlq_replay"
    DECISION = "decision"
    DECISIONS = "decisions"
    ADMIN_CALL = "admin_call"
    ANOMALY = "anomaly"
    AGGREGATE_RELEASE = "aggregate_release"
    AGGREGATE_REFUSED = "aggregate_refused"


def subject_token(identifier: str, key: bytes) -> str:
    """How a subject id appears in the audit trail: HMAC-SHA256 under the audit key (its
    first 32 hex digits), of the id in the one canonical form the consent store and erasure
    also hash (``consent.ids.normalize_id``), so every spelling of one id has one token."""
    return hmac_key(key).hex(normalize_id(identifier), 16)


@functools.lru_cache(maxsize=8192)
def _subject_tokens(identifiers: tuple[str, ...], key: bytes) -> list[str]:
    """Sorted tokens of an event's subjects: the same few subjects recur event after event.
    The list is shared between records: nobody may change it."""
    return sorted(subject_token(i, key) for i in identifiers)


@functools.lru_cache(maxsize=256)
def _sources(signals: tuple[Signal, ...]) -> list[str]:
    """The names of a consent snapshot's signals, sorted (the same few tuples recur). Shared
    between records: nobody may change it."""
    return sorted({s.value for s in signals})


@functools.lru_cache(maxsize=256)
def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _paths(paths: Iterable[str]) -> list[str]:
    return sorted({safe_path(p) for p in paths})[:MAX_PATHS]


@functools.lru_cache(maxsize=1024)
def _configured_paths(paths: frozenset[str]) -> list[str]:
    """``_paths`` of a destination's configured paths (the same few sets, every event).
    Shared between records: nobody may change it."""
    return _paths(paths)


def decision_entries(
    event: Event,
    consent: ConsentState,
    decisions: Sequence[Decision],
    *,
    key: bytes,
    stage: str = "ingest",
    event_paths: frozenset[str] | None = None,
) -> list[tuple[AuditKind, dict[str, Any]]]:
    """One ``decision`` record per destination, with no personal data.

    Records the destination, deliver or skip, the reason, the field paths sent (``sent``, on
    a delivery), removed and transformed (keys normalized), the consent snapshot's sources and
    time; the event and its subjects appear as keyed tokens only. ``event_paths``:
    ``field_paths(event.data)`` when the caller computed it already.
    """
    event_data = event.data
    event_token = subject_token(event.message_id, key)
    subjects = _subject_tokens(event.subject_ids, key)
    consent_at = consent.collected_at
    snapshot = {
        "sources": _sources(consent.signals),
        "at": _iso(consent_at) if consent_at else None,
    }
    all_paths = event_paths
    entries: list[tuple[AuditKind, dict[str, Any]]] = []
    kind = AuditKind.DECISION
    # Each record is one dict literal (built at its final size) in the order of its keys; the
    # consent snapshot and the path lists are shared between records: nobody may change them.
    for decision in decisions:
        destination = decision.destination
        if isinstance(decision, Deliver):
            if all_paths is None:
                all_paths = field_paths(event_data)
            payload = decision.delivery.payload
            sent, removed = sent_and_removed(
                all_paths, payload, sent=sent_paths(destination.allowlist, all_paths, payload)
            )
            data: dict[str, Any] = {
                "stage": stage,
                "destination": destination.id,
                "event": event_token,
                "subjects": subjects,
                "consent": snapshot,
                "decision": "deliver",
                "reason": "consent_granted" if destination.requires else "no_consent_required",
                "sent": sent,
                "removed": removed,
                "transformed": _configured_paths(destination.allowlist.transformed_paths),
            }
        else:
            data = {
                "stage": stage,
                "destination": destination.id,
                "event": event_token,
                "subjects": subjects,
                "consent": snapshot,
                "decision": "skip",
                "reason": decision.reason.value,
                "removed": [],
                "transformed": [],
            }
        entries.append((kind, data))
    return entries


def consent_written(
    record: ConsentRecord,
    subject_ids: Sequence[str],
    route: str,
    key: bytes,
    *,
    source_id: str | None = None,
    refused: frozenset[str] = frozenset(),
) -> tuple[AuditKind, dict[str, Any]]:
    """The ``consent_written`` audit record of a choice (subjects as keyed tokens): which
    source's write key sent it, and the grants refused because that source may not grant."""
    data: dict[str, Any] = {
        "route": route,
        "source": record.source,
        "source_id": source_id,
        "subjects": sorted({subject_token(i, key) for i in subject_ids}),
        "granted": sorted(record.granted),
        "denied": sorted(record.denied),
        "at": record.updated_at.astimezone(UTC).isoformat(),
    }
    if refused:
        data["refused"] = sorted(refused)
    return AuditKind.CONSENT_WRITTEN, data
