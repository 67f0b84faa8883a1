"""The audit writer's decision groups: decisions that differ only in their event, kept
together until the flush writes each group as ``decisions`` records. Pure.

``group_decisions`` runs for every decision the planner makes (three per event with three
destinations); ``DecisionGroup.records``, ``interleaved`` and ``merged_groups`` once per
flush. ``router.compliance.audit_log.AuditWriter`` holds the groups and does the I/O. Compiled
in the compiled build (``scripts/build-compiled.sh``): as interpreted Python the per-decision
bookkeeping was about 3 % of a distinct-people batch's CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from router.compliance.audit_chain import canonical, canonical_with
from router.compliance.subject_tokens import add_tokens
from router.core.audit_records import AuditKind, DecisionNote, SharedDecision

MAX_EVENTS_PER_RECORD: Final = 500

Prepared = tuple[bytes, list[str] | None]
"""What an append would otherwise compute from a record's data, known already: its
``canonical`` JSON and the subject tokens it names (``named_tokens``; None: not known)."""

Buffered = tuple[str, Mapping[str, Any], datetime, Prepared | None]
"""A record waiting for the writer's flush: kind, data, time, and its JSON and subject tokens
when they are known already (``decisions`` records)."""


def now_text(moment: datetime) -> str:
    """A record's time as written: UTC, ISO 8601 to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


class DecisionGroup:
    """The decisions of one ``SharedDecision`` since the last flush."""

    shared: dict[str, Any]
    """A ``SharedDecision``'s data (shared: nobody may change it)."""
    first: datetime
    last: datetime
    events: list[dict[str, Any]]
    """The decisions' event parts (``decision_notes``), in order."""
    encoded: list[bytes]
    """Each event part's ``canonical`` JSON, made when it arrived."""
    tokens: list[dict[str, None]] | None
    """The subject tokens of each record to be (``MAX_EVENTS_PER_RECORD`` events each), in
    order, collected as the events arrived; None after a merge (found in the records then)."""

    def __init__(self, shared: dict[str, Any], first: datetime, last: datetime) -> None:
        self.shared = shared
        self.first = first
        self.last = last
        self.events = []
        self.encoded = []
        self.tokens = []

    def add(self, event: dict[str, Any], encoded: bytes) -> None:
        """One more decision: its event part and the part's JSON."""
        tokens = self.tokens
        if tokens is not None:
            if len(self.events) % MAX_EVENTS_PER_RECORD == 0:
                tokens.append({})
            add_tokens(tokens[-1], event.get("subjects"))
        self.events.append(event)
        self.encoded.append(encoded)

    def records(self) -> list[Buffered]:
        """``decisions`` records of at most ``MAX_EVENTS_PER_RECORD`` events each, with their
        JSON (put together from the parts') and subject tokens."""
        out: list[Buffered] = []
        window = {"from": now_text(self.first), "to": now_text(self.last)}
        for number, start in enumerate(range(0, len(self.events), MAX_EVENTS_PER_RECORD)):
            end = start + MAX_EVENTS_PER_RECORD
            events = self.events[start:end]
            fields = {**self.shared, **window, "count": len(events)}
            data_json = canonical_with(fields, "events", self.encoded[start:end])
            subjects = None if self.tokens is None else list(self.tokens[number])
            data = {**fields, "events": events}
            out.append((AuditKind.DECISIONS.value, data, self.last, (data_json, subjects)))
        return out


def group_decisions(
    groups: dict[SharedDecision, DecisionGroup],
    notes: Iterable[DecisionNote],
    moment: datetime,
    room: int,
) -> tuple[int, int]:
    """Add ``decision_notes``' decisions to ``groups`` (by their shared part), at most
    ``room`` of them: (how many were added, how many did not fit)."""
    added = dropped = 0
    part: dict[str, Any] | None = None
    encoded = b""
    for shared, event in notes:
        if added >= room:
            dropped += 1
            continue
        group = groups.get(shared)  # by identity (a C-level hash): see merged_groups
        if group is None:
            group = groups[shared] = DecisionGroup(shared.data, moment, moment)
        group.last = moment
        if event is not part:  # an event's destinations share its part: encoded once
            part, encoded = event, canonical(event)
        group.add(event, encoded)
        added += 1
    return added, dropped


def interleaved(rows: Sequence[list[Buffered]]) -> list[Buffered]:
    """The records of each group (one row per group), the first of every row, then the
    second...: the destinations' records of the same events (a request's events go to every
    destination's group in the same order) come next to each other, for the subject index."""
    out: list[Buffered] = []
    for column in range(max((len(row) for row in rows), default=0)):
        out += [row[column] for row in rows if column < len(row)]
    return out


def merged_groups(groups: Mapping[SharedDecision, DecisionGroup]) -> list[DecisionGroup]:
    """The groups of one flush, those of equal shared parts as one. ``group_decisions``
    groups by the ``SharedDecision`` object (hashing its key, a tuple of every path, cost more
    than the rest of a decision's bookkeeping); equal ones are distinct objects only after
    ``decision_notes``' memo started again, and are merged here, once per flush."""
    merged: dict[tuple[Any, ...], DecisionGroup] = {}
    for shared, group in groups.items():
        known = merged.setdefault(shared.key, group)
        if known is not group:
            known.tokens = None  # its records' tokens are no longer those collected
            known.events += group.events
            known.encoded += group.encoded
            known.first = min(known.first, group.first)
            known.last = max(known.last, group.last)
    return list(merged.values())


def flush_records(groups: Mapping[SharedDecision, DecisionGroup]) -> list[Buffered]:
    """A flush's ``decisions`` records: the merged groups, oldest first, interleaved."""
    ordered = sorted(merged_groups(groups), key=lambda g: g.first)
    return interleaved([g.records() for g in ordered])
