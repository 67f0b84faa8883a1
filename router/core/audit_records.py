"""What the router writes to the audit trail about one request, as values. Pure.

``decision_entries``: per event and destination, deliver or skip, the reason, the sent, removed
and transformed field paths (keys normalized) and the consent snapshot's sources and time;
``decision_notes``: the same facts as the planner hands them to the audit writer, each
decision's shared part (``SharedDecision``, memoized) apart from its event's part, so the
writer groups them into ``decisions`` records without taking records apart;
``consent_written``: a stored consent choice. Subject and event ids appear only as
``subject_token``s, HMAC-SHA256 under the audit key. ``router.compliance.audit_log`` chains
and stores them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True, eq=False)
class SharedDecision:
    """What the ``decision`` records of one destination, outcome, reason, field paths and
    consent sources share: every field but the event's (``event``, ``subjects`` and the consent
    snapshot's ``at``). The audit writer groups decisions by ``key`` into ``decisions`` records
    (``router.compliance.audit_log.AuditWriter``). Shared between events: nobody may change
    ``data``."""

    key: tuple[Any, ...]
    """Everything ``data`` holds, hashable: decisions with equal keys go in one group."""
    data: dict[str, Any]
    """``stage``, ``destination``, ``consent`` (``{"sources"}``), ``decision``, ``reason``,
    ``sent`` (deliveries only), ``removed``, ``transformed``."""

    def record(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The ``decision`` record of one event: the shared fields with ``event``'s (a
        ``decision_notes`` event part: ``event``, ``subjects``, ``consent_at``)."""
        record = {**self.data, "event": event["event"], "subjects": event["subjects"]}
        record["consent"] = {"sources": self.data["consent"]["sources"], "at": event["consent_at"]}
        return record


DecisionNote = tuple[SharedDecision, dict[str, Any]]
"""One decision of one event: its shared part, and the event's part (``event``, ``subjects``,
``consent_at``; one dict per event, shared by its decisions: nobody may change it)."""

_SHARED: Final[dict[tuple[Any, ...], SharedDecision]] = {}
"""Shared parts by what decides them (bounded: then it starts again)."""
_MAX_SHARED: Final = 8192


def _shared(
    memo_key: tuple[Any, ...],
    stage: str,
    destination_id: str,
    *,
    reason: str,
    sources: list[str],
    paths: tuple[list[str], list[str], list[str]] | None,
) -> SharedDecision:
    """The shared part of a delivery (``paths``: sent, removed, transformed) or a skip,
    remembered under ``memo_key``."""
    data: dict[str, Any] = {
        "stage": stage,
        "destination": destination_id,
        "consent": {"sources": sources},
        "decision": "skip" if paths is None else "deliver",
        "reason": reason,
    }
    if paths is None:
        data |= {"removed": [], "transformed": []}
    else:
        data |= {"sent": paths[0], "removed": paths[1], "transformed": paths[2]}
    key = (
        stage,
        destination_id,
        data["decision"],
        reason,
        tuple(data.get("sent", ())),
        tuple(data["removed"]),
        tuple(data["transformed"]),
        tuple(sources),
    )
    if len(_SHARED) >= _MAX_SHARED:
        _SHARED.clear()
    shared = _SHARED[memo_key] = SharedDecision(key, data)
    return shared


def decision_notes(
    event: Event,
    consent: ConsentState,
    decisions: Sequence[Decision],
    *,
    key: bytes,
    stage: str = "ingest",
    event_paths: frozenset[str] | None = None,
) -> list[DecisionNote]:
    """What the audit trail records of an event's decisions, with no personal data: per
    decision, its ``SharedDecision`` (memoized: the same few recur) and the event's part, the
    event and its subjects as keyed tokens and the consent snapshot's time. ``event_paths``:
    ``field_paths(event.data)`` when the caller computed it already."""
    consent_at = consent.collected_at
    part = {
        "event": subject_token(event.message_id, key),
        "subjects": _subject_tokens(event.subject_ids, key),
        "consent_at": _iso(consent_at) if consent_at else None,
    }
    signals = consent.signals
    all_paths = event_paths
    notes: list[DecisionNote] = []
    for decision in decisions:
        destination = decision.destination
        if isinstance(decision, Deliver):
            if all_paths is None:
                all_paths = field_paths(event.data)
            allowlist = destination.allowlist
            sent = sent_paths(allowlist, all_paths, decision.delivery.payload)
            reason = "consent_granted" if destination.requires else "no_consent_required"
            memo_key: tuple[Any, ...] = (
                stage,
                destination.id,
                reason,
                signals,
                all_paths,
                sent,
                allowlist.transformed_paths,
            )
            shared = _SHARED.get(memo_key)
            if shared is None:
                listed, removed = sent_and_removed(all_paths, decision.delivery.payload, sent=sent)
                transformed = _configured_paths(allowlist.transformed_paths)
                shared = _shared(
                    memo_key,
                    stage,
                    destination.id,
                    reason=reason,
                    sources=_sources(signals),
                    paths=(listed, removed, transformed),
                )
        else:
            memo_key = (stage, destination.id, decision.reason, signals)
            shared = _SHARED.get(memo_key) or _shared(
                memo_key,
                stage,
                destination.id,
                reason=decision.reason.value,
                sources=_sources(signals),
                paths=None,
            )
        notes.append((shared, part))
    return notes


def decision_entries(
    event: Event,
    consent: ConsentState,
    decisions: Sequence[Decision],
    *,
    key: bytes,
    stage: str = "ingest",
    event_paths: frozenset[str] | None = None,
) -> list[tuple[AuditKind, dict[str, Any]]]:
    """One ``decision`` record per destination, with no personal data (``decision_notes``,
    each note written out as its record).

    Records the destination, deliver or skip, the reason, the field paths sent (``sent``, on
    a delivery), removed and transformed (keys normalized), the consent snapshot's sources and
    time; the event and its subjects appear as keyed tokens only.
    """
    notes = decision_notes(event, consent, decisions, key=key, stage=stage, event_paths=event_paths)
    return written_out(notes)


def written_out(notes: Iterable[DecisionNote]) -> list[tuple[AuditKind, dict[str, Any]]]:
    """``decision_notes``' notes as ``decision`` records, one per event and destination."""
    return [(AuditKind.DECISION, shared.record(part)) for shared, part in notes]


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
