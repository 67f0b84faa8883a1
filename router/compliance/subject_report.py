"""The subject access report: everything the router holds and did about one person.

``router subject-report --user-id U [--anonymous-id A] [--email E] [--json]`` and
``POST /admin/subject-report`` (role ``auditor`` or ``admin``) answer, for one person:

- ``consent``: the stored consent (merged as the router reads it: a denial on any id wins),
  each id's record and its recorded history (newest first), and whether the person is
  suppressed (erased);
- ``received``: every routing decision that let data about them leave for a destination:
  when, the destination, the field paths sent, removed and transformed, and the consent
  snapshot it was decided under (signal sources and the consent's time);
- ``withheld``: every decision that kept it back, with the reason (``category_denied``,
  ``gpc_opt_out``, ``suppressed``...);
- ``consent_writes`` and ``erasures``: the consent choices stored and the erasures done;
- ``summary``: per destination, counts, first and last time, the field paths sent, the
  reasons of what was withheld;
- ``audit``: how much of the trail was read, which records the index named that the trail no
  longer holds (trimmed), records whose content does not match their hash, and the oldest
  record still held (nothing older can be reported: the audit's retention bounds the report).

Records are found through the subject index (``router.compliance.subject_index``), so the
cost follows the person's records, not the trail's size. Subjects appear as the audit trail's
keyed tokens; no raw identifier is stored or printed. Decisions are those made at ingest
(``stage``): an event queued for a destination may still be withheld by the delivery
worker's re-check (a withdrawal or erasure meanwhile), which is counted in
``router_events_skipped_total{stage="delivery"}`` but not audited per event.

``report_from`` is pure (records in, report out); ``subject_report`` reads Redis.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeGuard

import redis.asyncio as aioredis

from consent.ids import subject_key
from consent.model import StoredConsent
from consent.records import ConsentRecord, merge_records
from consent.store import ConsentStore
from router.compliance.audit_chain import AuditRecord, chain_hash
from router.compliance.audit_log import STREAM, record_of
from router.compliance.erasure import Identifiers
from router.compliance.subject_index import fetch_records, indexed_ids
from router.compliance.subject_tokens import tokens_in
from router.queue.keys import optout_index_key, subject_index_key
from router.queue.streams import suppressed_among

DECISION_KINDS: Final = frozenset({"decision", "decisions"})


@dataclass(frozen=True, slots=True)
class SubjectRecords:
    """The audit records naming a person, oldest first, and what the index named in vain."""

    records: list[tuple[str, AuditRecord]]
    missing: int = 0
    """Index entries whose record is no longer in the trail (trimmed), now removed."""


async def subject_records(
    client: aioredis.Redis,
    tokens: Sequence[str],
    *,
    stream: str = STREAM,
    after_ms: int | None = None,
) -> SubjectRecords:
    """The audit records naming any of ``tokens`` (at or after ``after_ms``)."""
    keys = [subject_index_key(stream, t) for t in tokens]
    ids = await indexed_ids(client, keys, after_ms=after_ms)
    found, missing = await fetch_records(client, stream, ids, keys)
    return SubjectRecords([(i, record_of(f)) for i, f in found], len(missing))


OPT_OUT_LOOKBACK: Final = 20
"""How many of the newest opt-out records of each id ``opt_outs_honoured`` reads."""


async def opt_outs_honoured(
    client: aioredis.Redis, tokens: Sequence[str], *, stream: str = STREAM
) -> dict[str, dict[str, Any]]:
    """Per opt-out reason (``gpc_opt_out``, ``us_opt_out``), the newest record where it was
    honoured for the subject: ``{"at", "destinations"}`` (the destinations of that record's
    time). Reads at most ``OPT_OUT_LOOKBACK`` records per id: cheap enough for a public
    endpoint."""
    keys = [optout_index_key(stream, t) for t in tokens]
    ids = await indexed_ids(client, keys, newest=OPT_OUT_LOOKBACK)
    found, _ = await fetch_records(client, stream, ids, keys)
    honoured: dict[str, dict[str, Any]] = {}
    for _, fields in found:  # oldest first: the newest record of each reason wins
        record = record_of(fields)
        reason = str(record.data.get("reason"))
        destination = str(record.data.get("destination"))
        current = honoured.get(reason)
        if current is not None and current["at"] == record.at:
            current["destinations"] = sorted({*current["destinations"], destination})
        else:
            honoured[reason] = {"at": record.at, "destinations": [destination]}
    return honoured


def decisions_of(
    record: AuditRecord, tokens: frozenset[str]
) -> Iterable[tuple[Mapping[str, Any], str, str | None]]:
    """The decisions of a ``decision``/``decisions`` record about the subjects ``tokens``:
    (the shared data, the event token, the consent time)."""
    data = record.data
    if record.kind == "decision":
        if tokens.intersection(tokens_in(data.get("subjects"))):
            consent = data.get("consent")
            yield (
                data,
                str(data.get("event")),
                _text(consent.get("at")) if _is_map(consent) else None,
            )
        return
    events = data.get("events")
    for event in events if isinstance(events, list) else ():
        if _is_map(event) and tokens.intersection(tokens_in(event.get("subjects"))):
            yield data, str(event.get("event")), _text(event.get("consent_at"))


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: Any) -> list[str] | None:
    """A list of strings as stored, or None (absent or not a list of strings)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _decision(
    record: AuditRecord, data: Mapping[str, Any], event: str, consent_at: Any
) -> dict[str, Any]:
    consent = data.get("consent")
    sources = _texts(consent.get("sources")) if _is_map(consent) else None
    out: dict[str, Any] = {
        "at": record.at,
        "destination": str(data.get("destination")),
        "stage": _text(data.get("stage")),
        "event": event,
        "reason": str(data.get("reason")),
        "consent": {"sources": sources or [], "at": consent_at},
    }
    if data.get("decision") == "deliver":
        out["sent"] = _texts(data.get("sent"))  # None: from before ``sent`` was audited
        out["removed"] = _texts(data.get("removed")) or []
        out["transformed"] = _texts(data.get("transformed")) or []
    return out


@dataclass(slots=True)
class _Summary:
    received: int = 0
    first: str | None = None
    last: str | None = None
    fields: set[str] = field(default_factory=set)
    withheld: Counter[str] = field(default_factory=Counter)

    def seen(self, at: str) -> None:
        self.first = at if self.first is None else min(self.first, at)
        self.last = at if self.last is None else max(self.last, at)

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "first": self.first,
            "last": self.last,
            "fields": sorted(self.fields),
            "withheld": dict(sorted(self.withheld.items())),
        }


def report_from(
    records: Iterable[tuple[str, AuditRecord]], tokens: Sequence[str]
) -> dict[str, Any]:
    """The audit part of a report: decisions, consent writes and erasures about ``tokens``."""
    wanted = frozenset(tokens)
    received: list[dict[str, Any]] = []
    withheld: list[dict[str, Any]] = []
    writes: list[dict[str, Any]] = []
    erasures: list[dict[str, Any]] = []
    summary: dict[str, _Summary] = {}
    altered: list[dict[str, Any]] = []
    count = 0
    for entry_id, record in records:
        count += 1
        if record.hash != chain_hash(record):
            altered.append({"id": entry_id, "lane": record.lane, "seq": record.seq})
        if record.kind in DECISION_KINDS:
            for data, event, consent_at in decisions_of(record, wanted):
                item = _decision(record, data, event, consent_at)
                per = summary.setdefault(item["destination"], _Summary())
                if data.get("decision") == "deliver":
                    received.append(item)
                    per.received += 1
                    per.seen(record.at)
                    per.fields.update(item["sent"] or ())
                else:
                    withheld.append(item)
                    per.withheld[item["reason"]] += 1
        elif record.kind == "consent_written":
            write = {"recorded_at": record.at} | _pick(record.data, CONSENT_WRITE_FIELDS)
            if "refused" in record.data:
                write["refused"] = record.data["refused"]
            writes.append(write)
        elif record.kind == "erasure":
            erasures.append({"at": record.at} | _pick(record.data, ERASURE_FIELDS))
    return {
        "received": received,
        "withheld": withheld,
        "consent_writes": writes,
        "erasures": erasures,
        "summary": {d: s.to_json() for d, s in sorted(summary.items())},
        "records": count,
        "altered": altered,
    }


CONSENT_WRITE_FIELDS: Final = ("at", "route", "source", "source_id", "granted", "denied")
ERASURE_FIELDS: Final = ("receipt", "actor", "suppressed", "removed", "destinations")


def _pick(data: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: data.get(k) for k in keys}


def iso(moment: datetime) -> str:
    """A time as the consent answers show it: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_ms(value: Any) -> str | None:
    try:
        return iso(datetime.fromtimestamp(int(value) / 1000, UTC))
    except (TypeError, ValueError):
        return None


def consent_json(consent: StoredConsent | ConsentRecord | None) -> dict[str, Any] | None:
    """Stored consent as ``GET /v1/consent/status`` and the report show it: categories,
    source, the consent's ``timestamp`` (and a record's ``expiresAt``); None when absent."""
    if consent is None:
        return None
    out: dict[str, Any] = {
        "granted": sorted(consent.granted),
        "denied": sorted(consent.denied),
        "source": consent.source,
        "timestamp": iso(consent.updated_at),
    }
    if isinstance(consent, ConsentRecord):
        out["expiresAt"] = iso(consent.expires_at)
    return out


def labelled_hashes(identifiers: Identifiers, secret: bytes = b"") -> list[tuple[str, str]]:
    """(``userId`` | ``anonymousId`` | ``email``, hashed id) for each id given: how reports
    name an id without printing it (keyed by ``ROUTER_SUBJECT_KEY``, as stored)."""
    out: list[tuple[str, str]] = []
    for label, values in (
        ("userId", identifiers.user_ids),
        ("anonymousId", identifiers.anonymous_ids),
        ("email", identifiers.emails),
    ):
        out += [(label, subject_key(v, secret)) for v in values]
    return out


async def stored_consent(
    client: aioredis.Redis, store: ConsentStore, identifiers: Identifiers
) -> dict[str, Any]:
    """The stored consent of a person: merged, per id with its history, and suppression."""
    labelled = labelled_hashes(identifiers, store.subject_secret)
    hashes = list(dict.fromkeys(h for _, h in labelled))
    records = await store.lookup(hashes)
    suppressed = identifiers.hashes(store.subject_secret)
    flags = await suppressed_among(client, suppressed)
    merged = merge_records(records.values())
    per_id: list[dict[str, Any]] = []
    for label, hashed in labelled:
        history = await store.history(hashed)
        per_id.append(
            {
                "id": label,
                "record": consent_json(records.get(hashed)),
                "history": [
                    {
                        "granted": [c for c in entry.get("granted", "").split(",") if c],
                        "denied": [c for c in entry.get("denied", "").split(",") if c],
                        "source": entry.get("source"),
                        "timestamp": _iso_ms(entry.get("updated_at_ms")),
                        "receivedAt": _iso_ms(entry.get("received_at_ms")),
                    }
                    for entry in history
                ],
            }
        )
    return {
        "current": consent_json(merged),
        "ids": per_id,
        "suppressed": bool(flags),
    }


async def oldest_record_at(client: aioredis.Redis, stream: str = STREAM) -> str | None:
    """When the oldest record still in the trail was written (the report's horizon)."""
    first = await client.xrange(stream, count=1)
    return record_of(first[0][1]).at if first else None


async def subject_report(
    client: aioredis.Redis,
    store: ConsentStore,
    identifiers: Identifiers,
    *,
    audit_key: bytes,
    now: datetime,
    stream: str = STREAM,
) -> dict[str, Any]:
    """The whole report of one person (see the module docstring)."""
    tokens = identifiers.tokens(audit_key)
    found = await subject_records(client, tokens, stream=stream)
    audit = report_from(found.records, tokens)
    return {
        "generated_at": now.astimezone(UTC).isoformat(timespec="milliseconds"),
        "identifiers": identifiers.count,
        "subjects": tokens,
        "consent": await stored_consent(client, store, identifiers),
        **{k: audit[k] for k in ("summary", "received", "withheld", "consent_writes", "erasures")},
        "audit": {
            "records": audit["records"],
            "trimmed": found.missing,
            "altered": audit["altered"],
            "oldest_record_at": await oldest_record_at(client, stream),
        },
    }


def render_text(report: Mapping[str, Any]) -> str:
    """The report for a terminal: consent, then per destination what left and what did not."""
    lines = [f"subject report ({report['identifiers']} identifier(s)), {report['generated_at']}"]
    consent = report["consent"]
    current = consent["current"]
    if current is None:
        lines.append("stored consent: none")
    else:
        lines.append(
            f"stored consent: granted {', '.join(current['granted']) or '-'}; denied "
            f"{', '.join(current['denied']) or '-'} (source {current['source']}, "
            f"{current['timestamp']})"
        )
    for entry in consent["ids"]:
        lines.append(f"  {entry['id']}: {len(entry['history'])} recorded change(s)")
    lines.append(f"suppressed (erased): {'yes' if consent['suppressed'] else 'no'}")
    if not report["summary"]:
        lines.append("no routing decision about this person in the audit trail")
    for destination, per in report["summary"].items():
        lines.append(
            f"{destination}: received {per['received']} event(s)"
            + (f" from {per['first']} to {per['last']}" if per["received"] else "")
        )
        if per["fields"]:
            lines.append(f"  fields: {', '.join(per['fields'])}")
        for reason, count in per["withheld"].items():
            lines.append(f"  withheld {count}: {reason}")
    lines.append(f"consent writes: {len(report['consent_writes'])}")
    lines.append(f"erasures: {len(report['erasures'])}")
    audit = report["audit"]
    lines.append(
        f"audit: {audit['records']} record(s) read, {audit['trimmed']} trimmed, "
        f"{len(audit['altered'])} altered; oldest record held: {audit['oldest_record_at']}"
    )
    return "\n".join(lines) + "\n"


def parse_after(text: str) -> datetime:
    """``--after``: an ISO 8601 time (``2026-12-01T10:00:00Z``, an offset, or none for UTC) or
    a day (``2026-12-01``, its midnight UTC); ``ValueError`` with the reason otherwise."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 time such as 2026-12-01T10:00:00Z, got {text!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def audit_query(
    client: aioredis.Redis,
    tokens: Sequence[str],
    *,
    after: datetime,
    destination: str | None = None,
    stream: str = STREAM,
) -> dict[str, Any]:
    """``router audit query``: the decisions about ``tokens`` recorded at or after ``after``
    (for ``destination``, or every one): ``left`` (deliveries) and ``withheld``.
    ``complete`` is false when the trail no longer reaches back to ``after`` (records after
    it were trimmed): an empty ``left`` then proves less."""
    after_ms = int(after.timestamp() * 1000)
    found = await subject_records(client, tokens, stream=stream, after_ms=after_ms)
    audit = report_from(found.records, tokens)

    def wanted(item: Mapping[str, Any]) -> bool:
        return destination is None or item["destination"] == destination

    oldest = await oldest_record_at(client, stream)
    never_trimmed = not await client.exists(f"{stream}:anchors", f"{stream}:anchor")
    return {
        "destination": destination,
        "after": after.isoformat(timespec="milliseconds"),
        "subjects": list(tokens),
        "left": [i for i in audit["received"] if wanted(i)],
        "withheld": [i for i in audit["withheld"] if wanted(i)],
        "records": audit["records"],
        "trimmed": found.missing,
        "oldest_record_at": oldest,
        "complete": never_trimmed or oldest is None or parse_after(oldest) <= after,
    }
