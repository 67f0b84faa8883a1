"""The audit trail's pure core: canonical JSON, chain hashes, seals, verification.

No I/O, no clock: ``router.compliance.audit_log`` stores what this computes (the layout of the
stream and why it has lanes is described there). ``verify_records`` and ``parse_record`` check
an export offline.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import msgspec

_native: ModuleType | None
try:  # the native check, when pip could build it (setup.py); else the pure one below
    import router.core._speedups as _native
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None

GENESIS: Final = "0" * 64
LEGACY_LANE: Final = 0
"""The single chain written before lanes existed."""
WITNESS_WINDOW: Final = 100_000
"""How many of the newest records' hashes verification keeps to check witnesses against (a
witness further back is checked by position only)."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of a lane."""

    seq: int
    at: str
    kind: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str = ""
    lane: int = LEGACY_LANE
    witness: Mapping[str, Any] | None = None
    """``{"lane", "seq", "hash"}`` of another lane's record seen before this one."""

    def to_json(self) -> dict[str, Any]:
        """The record as exported (``lane`` and ``witness`` only when set)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "data": dict(self.data),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }
        if self.lane != LEGACY_LANE:
            out["lane"] = self.lane
        if self.witness is not None:
            out["witness"] = dict(self.witness)
        return out


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where a chain starts: the seq and hash of the record before the first one checked."""

    seq: int
    hash: str


GENESIS_ANCHOR: Final = Anchor(0, GENESIS)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``ok``, or the first bad record's lane, seq and why."""

    ok: bool
    first_bad_seq: int | None = None
    reason: str = ""
    checked: int = 0
    lane: int | None = None
    """The lane of ``first_bad_seq`` (0: the chain from before lanes)."""
    lanes: int = 0
    """How many lanes were checked."""


PLAIN_DEPTH: Final = 32
"""How deep ``plain_json`` looks (deeper values take the ``json`` module's path)."""
_SORTED: Final = msgspec.json.Encoder(order="sorted")


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, ASCII only, no NaN: what ``json.dumps`` writes
    with ``sort_keys``, compact separators, ``ensure_ascii`` and ``allow_nan=False``.

    A plain value (``plain_json``: no floats, no string outside ASCII or with DEL, exact JSON
    types) is written by msgspec, whose bytes are then the same (its escapes of control
    characters are json's, lowercase ``\\u00XX``) at a twentieth of the cost: a ``decisions``
    record of 500 events took 3.7 ms. Anything else is written by ``json`` itself (floats:
    msgspec writes ``1e16`` where json writes ``1e+16``; DEL and non-ASCII: msgspec does not
    escape them)."""
    if plain_json(value):
        return _SORTED.encode(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def canonical_with(fields: Mapping[str, Any], name: str, items_json: Sequence[bytes]) -> bytes:
    """``canonical({**fields, name: items})`` from each item's ``canonical`` bytes: the same
    bytes (both of ``canonical``'s writers write a member as ``"key":value`` in the keys'
    order, whatever its neighbours), without walking the items again. The audit writer encodes
    a decision's event part once, when it is made, for every ``decisions`` record it joins
    (walking them again at the flush, out of the CPU's caches, was 5 % of a batch's CPU)."""
    if name in fields:
        raise ValueError(f"{name!r} is one of the fields")
    lower = {k: v for k, v in fields.items() if k < name}
    upper = {k: v for k, v in fields.items() if k > name}
    members = [canonical(lower)[1:-1]] if lower else []
    members.append(canonical(name) + b":[" + b",".join(items_json) + b"]")
    if upper:
        members.append(canonical(upper)[1:-1])
    return b"{" + b",".join(members) + b"}"


def plain_json(value: Any, max_depth: int = PLAIN_DEPTH) -> bool:
    """Whether ``value`` holds only exact dicts with string keys, lists, tuples, ints, bools,
    None and strings of ASCII without DEL, at most ``max_depth`` containers deep. Native when
    ``router.core._speedups`` is built (the same answers as ``pure_plain_json``)."""
    if _native is not None:
        plain: bool = _native.plain_json(value, max_depth)
        return plain
    return pure_plain_json(value, max_depth)


def pure_plain_json(value: Any, max_depth: int = PLAIN_DEPTH) -> bool:
    """``plain_json`` in Python."""
    kind = type(value)
    if kind is str:
        return value.isascii() and "\x7f" not in value
    if kind is int or kind is bool or value is None:
        return True
    if max_depth <= 0:
        return False
    if kind is dict:
        return all(
            type(k) is str and pure_plain_json(k, 0) and pure_plain_json(v, max_depth - 1)
            for k, v in value.items()
        )
    if kind is list or kind is tuple:
        return all(pure_plain_json(v, max_depth - 1) for v in value)
    return False


def chain_hash(record: AuditRecord) -> str:
    """SHA-256 hex over the canonical JSON of (seq, at, kind, data, prev_hash), plus ``lane``
    and ``witness`` when set (lane 0 records hash exactly as before lanes existed)."""
    body: dict[str, Any] = {
        "seq": record.seq,
        "at": record.at,
        "kind": record.kind,
        "data": record.data,
        "prev_hash": record.prev_hash,
    }
    if record.lane != LEGACY_LANE:
        body["lane"] = record.lane
    if record.witness is not None:
        body["witness"] = record.witness
    return hashlib.sha256(canonical(body)).hexdigest()


def sealed_hash(
    seq: int,
    at: str,
    kind: str,
    data_json: bytes,
    prev_hash: str,
    *,
    lane: int = LEGACY_LANE,
    witness_json: str | None = None,
) -> str:
    """``chain_hash`` with the record's data (and witness) already in canonical JSON: the same
    bytes, written out in the keys' sorted order, so the data is encoded only once (and not
    copied: a ``decisions`` record's JSON is a hundred kilobytes)."""
    lane_part = f'"lane":{int(lane)},' if lane != LEGACY_LANE else ""
    witness_part = f',"witness":{witness_json}' if witness_json is not None else ""
    digest = hashlib.sha256(f'{{"at":{json.dumps(at)},"data":'.encode())
    digest.update(data_json)
    digest.update(
        f',"kind":{json.dumps(kind)},{lane_part}'
        f'"prev_hash":{json.dumps(prev_hash)},"seq":{int(seq)}{witness_part}}}'.encode()
    )
    return digest.hexdigest()


def seal(
    seq: int,
    at: str,
    kind: str,
    data: Mapping[str, Any],
    prev_hash: str,
    *,
    lane: int = LEGACY_LANE,
    witness: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """A record with its hash."""
    unsealed = AuditRecord(seq, at, str(kind), data, prev_hash, "", lane, witness)
    return AuditRecord(seq, at, str(kind), data, prev_hash, chain_hash(unsealed), lane, witness)


def chain(
    head: Anchor,
    entries: Sequence[tuple[str, str, Mapping[str, Any]]],
    *,
    lane: int = LEGACY_LANE,
    witness: Mapping[str, Any] | None = None,
) -> list[AuditRecord]:
    """Seal ``(at, kind, data)`` entries one after the other onto ``head`` (the first one
    carrying ``witness``)."""
    records: list[AuditRecord] = []
    seq, prev = head.seq, head.hash
    for at, kind, data in entries:
        seq += 1
        record = seal(seq, at, kind, data, prev, lane=lane, witness=witness)
        witness = None
        records.append(record)
        prev = record.hash
    return records


def record_name(lane: int | None, seq: int) -> str:
    """How reasons name a record: ``record 4`` (lane 0), ``lane 2 record 4``."""
    return f"record {seq}" if not lane else f"lane {lane} record {seq}"


class ChainVerifier:
    """Checks one lane's records one at a time (so a long stream is verified page by page)."""

    def __init__(self, anchor: Anchor | None = GENESIS_ANCHOR, lane: int = LEGACY_LANE) -> None:
        self._last = anchor
        self.lane = lane
        self.checked = 0
        self.result: VerifyResult | None = None

    @property
    def last(self) -> Anchor | None:
        """The last record checked (or the anchor)."""
        return self._last

    def feed(self, record: AuditRecord) -> VerifyResult | None:
        """Check the next record; the failure (also kept in ``result``) or None."""
        if self.result is not None:
            return self.result
        last = self._last
        name = functools.partial(record_name, self.lane)
        if record.hash != chain_hash(record):
            return self._fail(
                record.seq, f"{name(record.seq)}: its content does not match its hash"
            )
        if last is not None:
            if record.seq != last.seq + 1:
                return self._fail(
                    last.seq + 1,
                    f"{name(last.seq + 1)} is missing (found {record.seq} after {last.seq})",
                )
            if record.prev_hash != last.hash:
                if last.seq == 0:
                    return self._fail(record.seq, f"{name(record.seq)}: broken link to the anchor")
                # The record is sealed correctly, so the one before it was changed and resealed.
                return self._fail(
                    last.seq,
                    f"{name(last.seq)} was changed: its hash is not record {record.seq}'s "
                    "prev_hash",
                )
        self._last = Anchor(record.seq, record.hash)
        self.checked += 1
        return None

    def finish(self, head: Anchor | None = None) -> VerifyResult:
        """The verdict once every record up to ``head`` (the stored last one) was fed."""
        if self.result is not None:
            return self.result
        last = self._last
        if head is not None and head.seq > 0:
            if last is None or last.seq < head.seq:
                expected = (last.seq if last is not None else 0) + 1
                return self._fail(
                    expected,
                    f"{record_name(self.lane, expected)} to {head.seq} are missing "
                    f"(head: {head.seq})",
                )
            if last.seq == head.seq and last.hash != head.hash:
                return self._fail(
                    last.seq,
                    f"{record_name(self.lane, last.seq)} was changed: it does not match the head",
                )
        return VerifyResult(ok=True, checked=self.checked, lanes=1)

    def _fail(self, seq: int, reason: str) -> VerifyResult:
        self.result = VerifyResult(
            ok=False, first_bad_seq=seq, reason=reason, checked=self.checked, lane=self.lane
        )
        return self.result


class TrailVerifier:
    """Checks the records of every lane, interleaved as the stream holds them, and the
    witnesses that link the lanes.

    ``anchors``: where each lane starts (a lane not listed starts at ``default``; None trusts
    each lane's first link, for a partial export). ``heads``: each lane's stored last record
    (``None`` for lane 0 when it has no head); given, records past a lane's head (appended
    after the heads were read) are left for the next run, and a lane not in ``heads`` is
    invalid unless its number is above ``lanes`` (opened after the heads were read).
    ``expect``: without ``heads``, the last record expected (of every lane, or per lane).
    """

    def __init__(
        self,
        anchors: Mapping[int, Anchor] | None = None,
        *,
        default: Anchor | None = GENESIS_ANCHOR,
        heads: Mapping[int, Anchor | None] | None = None,
        lanes: int | None = None,
        expect: Anchor | Mapping[int, Anchor] | None = None,
    ) -> None:
        self._expect = expect
        self._anchors = dict(anchors or {})
        self._default = default
        self._heads = heads
        self._lanes = lanes
        self._chains: dict[int, ChainVerifier] = {}
        self._recent: dict[tuple[int, int], str] = {}
        self.result: VerifyResult | None = None
        self.later: dict[int, AuditRecord] = {}
        """The first record of each lane above ``lanes``: the caller checks that those lanes
        exist now (else the records are forged)."""

    def _chain(self, lane: int) -> ChainVerifier:
        found = self._chains.get(lane)
        if found is None:
            anchor = self._anchors.get(lane, self._default)
            found = self._chains[lane] = ChainVerifier(anchor, lane)
        return found

    @property
    def checked(self) -> int:
        """Records checked so far, every lane."""
        return sum(c.checked for c in self._chains.values())

    def feed(self, record: AuditRecord) -> VerifyResult | None:
        """Check the next record of the stream; the failure (also kept in ``result``) or None."""
        if self.result is not None:
            return self.result
        lane = record.lane
        heads = self._heads
        if heads is not None:
            if lane not in heads:
                if self._lanes is not None and lane > self._lanes:
                    self.later.setdefault(lane, record)
                    return None  # a lane opened after the heads were read
                return self._fail(record, f"{record_name(lane, record.seq)}: its lane is unknown")
            head = heads[lane]
            if head is not None and record.seq > head.seq:
                return None  # appended after the heads were read
        failed = self._chain(lane).feed(record)
        if failed is not None:
            self.result = failed
            return failed
        if record.witness is not None:
            failed = self._check_witness(record, record.witness)
            if failed is not None:
                return failed
        self._recent[(lane, record.seq)] = record.hash
        if len(self._recent) > WITNESS_WINDOW:
            del self._recent[next(iter(self._recent))]
        return None

    def _check_witness(
        self, record: AuditRecord, witness: Mapping[str, Any]
    ) -> VerifyResult | None:
        name = record_name(record.lane, record.seq)
        try:
            lane, seq, digest = int(witness["lane"]), int(witness["seq"]), str(witness["hash"])
        except (KeyError, TypeError, ValueError):
            return self._fail(record, f"{name}: its witness is malformed")
        seen = self._recent.get((lane, seq))
        if seen is not None:
            if seen != digest:
                return self._fail(
                    record, f"{name} witnessed {record_name(lane, seq)} with another hash"
                )
            return None
        anchor = self._anchors.get(lane, self._default)
        if anchor is not None and seq <= anchor.seq:
            if seq == anchor.seq and anchor.hash != digest:
                return self._fail(
                    record, f"{name} witnessed {record_name(lane, seq)} with another hash"
                )
            return None  # trimmed
        verified = self._chains.get(lane)
        last = verified.last if verified is not None else anchor
        if last is None or last.seq < seq:
            if self._heads is None and anchor is None:
                return None  # a partial export that does not hold that lane's start
            return self._fail(
                record, f"{name} witnessed {record_name(lane, seq)}, which is missing"
            )
        return None  # further back than the window: its position was checked

    def finish(self) -> VerifyResult:
        """The verdict once every record was fed: each lane reaches its head."""
        if self.result is not None:
            return self.result
        if self._heads is not None:
            for lane in sorted(self._heads):
                self._chain(lane)
            if self._lanes is not None:
                for lane in range(1, self._lanes + 1):
                    if lane not in self._heads:
                        self.result = VerifyResult(
                            ok=False,
                            first_bad_seq=0,
                            reason=f"lane {lane} is missing (lanes 1 to {self._lanes} exist)",
                            checked=self.checked,
                            lane=lane,
                        )
                        return self.result
        for lane in sorted(self._chains):
            verdict = self._chains[lane].finish(self._head_of(lane))
            if not verdict.ok:
                self.result = verdict
                return verdict
        return VerifyResult(ok=True, checked=self.checked, lanes=len(self._chains))

    def _head_of(self, lane: int) -> Anchor | None:
        if self._heads is not None:
            return self._heads.get(lane)
        if isinstance(self._expect, Mapping):
            return self._expect.get(lane)
        return self._expect

    def refuse(self, record: AuditRecord, reason: str) -> VerifyResult:
        """Fail on ``record`` for a reason found outside the verifier."""
        return self._fail(record, reason)

    def _fail(self, record: AuditRecord, reason: str) -> VerifyResult:
        self.result = VerifyResult(
            ok=False,
            first_bad_seq=record.seq,
            reason=reason,
            checked=self.checked,
            lane=record.lane,
        )
        return self.result


def verify_records(
    records: Iterable[AuditRecord],
    anchor: Anchor | Mapping[int, Anchor] | None = GENESIS_ANCHOR,
    *,
    head: Anchor | Mapping[int, Anchor] | None = None,
) -> VerifyResult:
    """Verify exported records, every lane. ``anchor``: genesis by default, one anchor for
    every lane, or a lane -> anchor map; None trusts each lane's first link (for a partial
    export); ``head``: the expected last record (of every lane, or per lane)."""
    anchors: Mapping[int, Anchor] | None = None
    default: Anchor | None = GENESIS_ANCHOR
    if isinstance(anchor, Mapping):
        anchors = anchor
    else:
        default = anchor
    verifier = TrailVerifier(anchors, default=default, expect=head)
    for record in records:
        failed = verifier.feed(record)
        if failed is not None:
            return failed
    return verifier.finish()


def parse_record(line: str | bytes) -> AuditRecord:
    """A record from one exported JSON line."""
    value = json.loads(line)
    witness = value.get("witness")
    return AuditRecord(
        seq=int(value["seq"]),
        at=str(value["at"]),
        kind=str(value["kind"]),
        data=value["data"],
        prev_hash=str(value["prev_hash"]),
        hash=str(value["hash"]),
        lane=int(value.get("lane", LEGACY_LANE)),
        witness=witness if isinstance(witness, dict) else None,
    )
