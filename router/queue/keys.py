"""Every Redis key and stream name the router uses, listed once (all under ``rt:``).

Queues (``router.queue``):

Braces are Redis Cluster hash tags, written literally: keys used together in one command,
script or MULTI/EXEC share one, so they live in one slot (``router.queue.backend``).

- ``rt:q:{<destination>}``     the destination's queue (consumer group ``delivery``); with
                               ``delivery.partitions: N`` also ``rt:q:{<destination>/1}`` ...
                               ``rt:q:{<destination>/N-1}``
- ``rt:dlq:{<destination>}``   dead letters, with the reason (one per partition, same tag)
- ``rt:outbox:{<destination>}`` encoded requests of a ``dry_run`` destination (bounded)
- ``rt:quarantine``            rejected input events, redacted: code, path, field types, hashed
                               subjects (bounded in count and age; ``router.compliance.quarantine``)
- ``rt:suppressed:{<sha256>}`` present when the subject was erased (``suppressed_key``)

Consent (``consent.store``, which may not import the router: its names are re-exported here):

- ``rt:consent:{<sha256>}``     stored consent of a hashed subject
- ``rt:consent-log:{<sha256>}`` its change history
- ``rt:consent:changed``       the pub/sub channel of changes

Compliance:

- ``rt:{audit}``               the audit trail (``router.compliance.audit_log``; its lane heads,
                               anchors and witness are ``rt:{audit}:heads``, ``:anchors``,
                               ``:last``, ``:head``, ``:anchor``, derived from the stream name)
- ``rt:audit:subject:{token}`` the subject index: ids of the audit records naming a subject's
                               keyed token (``router.compliance.subject_index``)
- ``rt:audit:optout:{token}``  ids of the records that withheld data for the subject's GPC or
                               US opt-out
- ``rt:erasures``              erasure receipts
- ``rt:anomalies``             detected anomalies
- ``rt:hold:{destination}``    a held destination (its workers stop reading)
- ``rt:vol:{kind}:{id}:{YYYYMMDD}`` / ``:since``  hourly volume counters and first hour seen
- ``rt:fields:{source}`` / ``:since``             field paths seen from a source
- ``rt:pii:{destination}``     personal-data kinds seen reaching a destination
- ``rt:dm:{day}:destinations`` and ``rt:dm:{day}:{destination}:{part}``  the data map
- ``rt:dm:last``               each destination's last delivery (the record of processing)
- ``rt:agg:{{destination}}:...``  an aggregate destination's windows, contribution ledgers,
                               budget and pending releases (``aggregate_key``; the list is in
                               ``router.compliance.aggregates``)

What rests in a destination's queue is only what that destination may receive (the minimized
payload), plus hashed subject ids for the re-checks at delivery.
"""

from __future__ import annotations

import re
from typing import Final, Literal

from consent.cache import record_key as consent_key
from consent.cache import suppressed_key
from consent.ids import subject_key
from consent.store import CHANNEL as CONSENT_CHANNEL
from consent.store import history_key as consent_history_key

__all__ = [
    "ANOMALIES",
    "AUDIT",
    "CONSENT_CHANNEL",
    "DATAMAP_LAST",
    "DLQ_MAXLEN",
    "ERASURES",
    "GROUP",
    "OUTBOX_MAXLEN",
    "QUARANTINE",
    "QUARANTINE_MAXLEN",
    "SUPPRESSED",
    "AuditPart",
    "aggregate_key",
    "audit_key",
    "consent_history_key",
    "consent_key",
    "datamap_day_key",
    "datamap_key",
    "dead_letter_id",
    "dlq_key",
    "fields_key",
    "hold_key",
    "optout_index_key",
    "outbox_key",
    "parse_dead_letter_id",
    "pii_key",
    "queue_key",
    "subject_hash",
    "subject_index_key",
    "suppressed_key",
    "volume_key",
]

GROUP: Final = "delivery"
"""The consumer group of every destination queue."""
QUARANTINE: Final = "rt:quarantine"
SUPPRESSED: Final = "rt:suppressed"
"""Prefix of the per-subject erasure marks (``consent.store.suppressed_key``)."""
AUDIT: Final = "rt:{audit}"
"""The audit records; its other keys add a suffix, so all share the hash tag ``{audit}``."""
ERASURES: Final = "rt:erasures"
ANOMALIES: Final = "rt:anomalies"
DATAMAP_LAST: Final = "rt:dm:last"

QUARANTINE_MAXLEN: Final = 100_000
OUTBOX_MAXLEN: Final = 1_000
DLQ_MAXLEN: Final = 1_000_000


def _tag(destination_id: str, partition: int) -> str:
    # Partition 0 keeps the destination's own tag; ``/`` cannot occur in a destination id.
    return destination_id if partition == 0 else f"{destination_id}/{partition}"


def queue_key(destination_id: str, partition: int = 0) -> str:
    """The destination's delivery stream (one of its ``delivery.partitions``)."""
    return f"rt:q:{{{_tag(destination_id, partition)}}}"


def dlq_key(destination_id: str, partition: int = 0) -> str:
    """The dead letters of a partition of the destination's queue (same hash tag, so the
    worker's settle stays in one slot)."""
    return f"rt:dlq:{{{_tag(destination_id, partition)}}}"


def outbox_key(destination_id: str) -> str:
    """The dry-run outbox of a destination."""
    return f"rt:outbox:{{{destination_id}}}"


def dead_letter_id(partition: int, entry_id: str) -> str:
    """A dead letter's id as the operator API shows it: the stream id in partition 0 (as
    before partitions), ``<partition>/<stream id>`` in the others."""
    return entry_id if partition == 0 else f"{partition}/{entry_id}"


def parse_dead_letter_id(value: str, partitions: int) -> tuple[int, str] | None:
    """``(partition, stream id)`` of an id from ``dead_letter_id``; None when malformed."""
    head, sep, tail = value.partition("/")
    if not sep:
        head, tail = "0", value
    if not head.isdigit() or int(head) >= partitions or not _STREAM_ID.fullmatch(tail):
        return None
    return int(head), tail


_STREAM_ID = re.compile(r"\d+-\d+")


def aggregate_key(destination: str, part: str, window: int | str | None = None) -> str:
    """A key of an aggregate destination (all in one hash slot: ``{destination}``), of one
    window when ``window`` (its start in Unix seconds, or ``*`` in a SCAN pattern) is given."""
    middle = f":{window}" if window is not None else ""
    return f"rt:agg:{{{destination}}}{middle}:{part}"


AuditPart = Literal["head", "anchor", "lanes", "heads", "anchors", "last"]


def audit_key(stream: str, part: AuditPart) -> str:
    """A key beside the audit stream: lane 0's ``head`` and last trimmed record (``anchor``),
    the last lane handed out (``lanes``), each lane's last record (``heads``) and last trimmed
    record (``anchors``), the newest record of any lane (``last``)."""
    return f"{stream}:{part}"


def subject_index_key(stream: str, token: str) -> str:
    """The sorted set of the audit records naming a subject token (score: the id's ms)."""
    return f"{stream}:subject:{token}"


def optout_index_key(stream: str, token: str) -> str:
    """The sorted set of the audit records that honoured an opt-out of a subject token."""
    return f"{stream}:optout:{token}"


def hold_key(destination: str) -> str:
    """The hold flag of a destination."""
    return f"rt:hold:{destination}"


def volume_key(kind: str, subject: str, day: str) -> str:
    """Hourly event counts of a destination or source on one day (``YYYYMMDD``); with
    ``day="since"``, the first hour it was counted."""
    return f"rt:vol:{kind}:{subject}:{day}"


def fields_key(source: str) -> str:
    """The field paths seen from a source (its ``:since`` key is derived from it)."""
    return f"rt:fields:{source}"


def pii_key(destination: str) -> str:
    """The personal-data kinds seen reaching a destination."""
    return f"rt:pii:{destination}"


def datamap_key(day: str, destination: str, part: str) -> str:
    """One part (``fields``, ``pii``, ``counts``, ``match``) of a destination's data map."""
    return f"rt:dm:{day}:{destination}:{part}"


def datamap_day_key(day: str) -> str:
    """The destinations that received anything on that day."""
    return f"rt:dm:{day}:destinations"


def subject_hash(identifier: str, secret: bytes = b"") -> str:
    """How a subject id is stored in Redis: HMAC-SHA256 hex of the normalized id under
    ``ROUTER_SUBJECT_KEY`` (``consent.ids.subject_key``)."""
    return subject_key(identifier, secret)
