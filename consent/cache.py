"""The consent store's bookkeeping per lookup: its cache, its reads in flight, its keys. Pure.

``consent.store`` (the I/O edge) calls these for every subject of every request: a batch of
100 new people is 200 cache misses, 400 keys and 200 records to remember, which cost 8 % of a
distinct-people batch's CPU as interpreted Python. Here they are compiled in the compiled
build (``scripts/build-compiled.sh``); the store itself is not (its listener's cancellation
differs under mypyc).

The cache maps a hashed subject to ``(its record or None, whether it is suppressed)``, the most
recently used last; ``reading`` counts the reads of a subject in flight, and ``dirty`` names
the subjects invalidated while one was (their reply is not cached).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from consent.records import ConsentRecord

Entry = tuple[ConsentRecord | None, bool]
"""A cached subject: its record (None: it has none) and whether it is suppressed."""

Read = tuple[bytes | None, int]
"""A subject's raw record and its suppression flag, as read from Redis."""


def record_key(subject: str) -> str:
    """The record of a hashed subject."""
    return f"rt:consent:{{{subject}}}"


def suppressed_key(prefix: str, subject: str) -> str:
    """The erasure mark of a hashed subject (``prefix``: ``rt:suppressed``)."""
    return f"{prefix}:{{{subject}}}"


def take_cached(
    cache: OrderedDict[str, Entry],
    subjects: Iterable[str],
    now: datetime,
    found: dict[str, ConsentRecord | None],
    suppressed: set[str],
) -> list[str]:
    """Put the cached records of ``subjects`` (each once) in ``found`` and the suppressed ones
    in ``suppressed``; the misses, in order. An expired record leaves the cache (a miss)."""
    misses: list[str] = []
    for subject in dict.fromkeys(subjects):
        hit = cache.get(subject)
        if hit is not None:
            record = hit[0]
            if record is not None and record.expires_at <= now:
                del cache[subject]
                hit = None
        if hit is None:
            misses.append(subject)
            continue
        cache.move_to_end(subject)
        found[subject] = hit[0]
        if hit[1]:
            suppressed.add(subject)
    return misses


def begin_reads(reading: dict[str, int], subjects: Sequence[str]) -> None:
    """Count a read of each of ``subjects`` in flight."""
    for subject in subjects:
        reading[subject] = reading.get(subject, 0) + 1


def end_reads(reading: dict[str, int], dirty: set[str], subjects: Sequence[str]) -> set[str]:
    """End those reads; the subjects not invalidated while they were in flight (``dirty``,
    forgotten once no read of the subject is left)."""
    fresh = {s for s in subjects if s not in dirty}
    for subject in subjects:
        left = reading[subject] - 1
        if left:
            reading[subject] = left
        else:
            del reading[subject]
            dirty.discard(subject)
    return fresh


def read_keys(subjects: Sequence[str], marks: str | None) -> list[str]:
    """The keys one read of ``subjects`` gets: their records, then their erasure marks (under
    the prefix ``marks``; none when it is None)."""
    keys = [record_key(s) for s in subjects]
    if marks is not None:
        keys += [suppressed_key(marks, s) for s in subjects]
    return keys


def split_replies(
    subjects: Sequence[str], replies: Sequence[bytes | None], marked: bool
) -> dict[str, Read]:
    """``read_keys``' replies per subject: (its raw record, 1 if its erasure mark is set)."""
    count = len(subjects)
    out: dict[str, Read] = {}
    for i in range(count):
        out[subjects[i]] = (replies[i], int(marked and replies[count + i] is not None))
    return out


def remember(
    cache: OrderedDict[str, Entry],
    misses: Sequence[str],
    read: dict[str, Read],
    now: datetime,
    *,
    decode: Callable[[bytes, datetime], ConsentRecord],
    found: dict[str, ConsentRecord | None],
    suppressed: set[str],
    keep: set[str],
) -> None:
    """Put what was read for ``misses`` in ``found`` and ``suppressed`` (a record expired by
    ``now`` counts as none), and cache the subjects in ``keep``, the most recently used."""
    for subject in misses:
        raw, flag = read[subject]
        record = None if raw is None else decode(raw, now)
        if record is not None and record.expires_at <= now:
            record = None
        found[subject] = record
        if flag:
            suppressed.add(subject)
        if subject in keep:
            if subject in cache:
                cache.move_to_end(subject)
            cache[subject] = (record, bool(flag))


def evict(cache: OrderedDict[str, Entry], size: int) -> None:
    """Forget the least recently used entries beyond ``size``."""
    for _ in range(len(cache) - size):
        cache.popitem(last=False)
