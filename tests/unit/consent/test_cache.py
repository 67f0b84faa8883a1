"""The consent store's per-lookup bookkeeping (``consent.cache``), without Redis."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consent import cache as c
from consent.records import ConsentRecord

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def _record(expires_in: timedelta = timedelta(days=1)) -> ConsentRecord:
    return ConsentRecord(frozenset({"C1"}), frozenset(), "api", NOW, NOW, NOW + expires_in)


def _decode(raw: bytes, now: datetime) -> ConsentRecord:
    return ConsentRecord.decode(raw)


def test_cached_subjects_are_found_once_each_and_become_the_most_recently_used() -> None:
    kept, absent = _record(), None
    cache: OrderedDict[str, c.Entry] = OrderedDict(
        [("a", (kept, False)), ("b", (absent, True)), ("z", (kept, False))]
    )
    found: dict[str, ConsentRecord | None] = {}
    suppressed: set[str] = set()
    misses = c.take_cached(cache, ["b", "x", "a", "b", "x"], NOW, found, suppressed)
    assert misses == ["x"]
    assert found == {"b": None, "a": kept}  # a known absence is a hit too
    assert suppressed == {"b"}
    assert list(cache) == ["z", "b", "a"]


def test_an_expired_record_leaves_the_cache_and_is_read_again() -> None:
    cache: OrderedDict[str, c.Entry] = OrderedDict(
        [("old", (_record(timedelta(0)), False)), ("new", (_record(), False))]
    )
    found: dict[str, ConsentRecord | None] = {}
    assert c.take_cached(cache, ["old", "new"], NOW, found, set()) == ["old"]
    assert list(cache) == ["new"]
    assert list(found) == ["new"]


def test_a_subject_invalidated_during_its_read_is_not_fresh_until_no_read_is_left() -> None:
    reading: dict[str, int] = {}
    dirty: set[str] = set()
    c.begin_reads(reading, ["a", "b"])
    c.begin_reads(reading, ["a"])
    dirty.add("a")  # invalidated while two reads of it are in flight
    assert c.end_reads(reading, dirty, ["a", "b"]) == {"b"}
    assert reading == {"a": 1}
    assert dirty == {"a"}  # the other read must not cache it either
    assert c.end_reads(reading, dirty, ["a"]) == set()
    assert reading == {}
    assert dirty == set()


def test_keys_and_replies_with_and_without_erasure_marks() -> None:
    assert c.read_keys(["h1", "h2"], None) == ["rt:consent:{h1}", "rt:consent:{h2}"]
    keys = c.read_keys(["h1", "h2"], "rt:suppressed")
    assert keys == [
        "rt:consent:{h1}",
        "rt:consent:{h2}",
        "rt:suppressed:{h1}",
        "rt:suppressed:{h2}",
    ]
    replies = [b"r1", None, None, b"1"]
    assert c.split_replies(["h1", "h2"], replies, True) == {"h1": (b"r1", 0), "h2": (None, 1)}
    assert c.split_replies(["h1", "h2"], [b"r1", None], False) == {
        "h1": (b"r1", 0),
        "h2": (None, 0),
    }


def test_what_was_read_is_found_and_only_the_kept_subjects_are_cached() -> None:
    stored = _record().encode().encode()
    expired = _record(timedelta(0)).encode().encode()
    cache: OrderedDict[str, c.Entry] = OrderedDict([("b", (None, False)), ("y", (None, False))])
    read = {"a": (stored, 0), "b": (None, 1), "e": (expired, 0), "d": (stored, 0)}
    found: dict[str, ConsentRecord | None] = {}
    suppressed: set[str] = set()
    c.remember(
        cache,
        ["a", "b", "e", "d"],
        read,
        NOW,
        decode=_decode,
        found=found,
        suppressed=suppressed,
        keep={"a", "b", "e"},
    )
    assert found == {"a": _record(), "b": None, "e": None, "d": _record()}
    assert suppressed == {"b"}
    assert cache == OrderedDict(
        [("y", (None, False)), ("a", (_record(), False)), ("b", (None, True)), ("e", (None, False))]
    )  # "d" was invalidated meanwhile: not kept
    c.evict(cache, 2)
    assert list(cache) == ["b", "e"]


@given(
    st.lists(
        st.tuples(st.lists(st.sampled_from("abcdef"), max_size=5), st.integers(1, 4)),
        max_size=30,
    )
)
def test_the_cache_is_a_bounded_lru_of_what_was_looked_up(
    lookups: list[tuple[list[str], int]],
) -> None:
    """Against a model: after each lookup (everything read is kept), the cache holds the
    ``size`` most recently looked-up subjects, the most recent last, and a subject is read
    from Redis exactly when the cache did not hold it."""
    cache: OrderedDict[str, c.Entry] = OrderedDict()
    model: list[str] = []
    for subjects, size in lookups:
        found: dict[str, ConsentRecord | None] = {}
        misses = c.take_cached(cache, subjects, NOW, found, set())
        assert misses == [s for s in dict.fromkeys(subjects) if s not in model]
        read: dict[str, c.Read] = dict.fromkeys(misses, (None, 0))
        c.remember(
            cache,
            misses,
            read,
            NOW,
            decode=_decode,
            found=found,
            suppressed=set(),
            keep=set(misses),
        )
        assert set(found) == set(subjects)
        hits = [s for s in dict.fromkeys(subjects) if s not in misses]
        model = [s for s in model if s not in subjects] + hits + misses
        model = model[max(0, len(model) - size) :]
        c.evict(cache, size)
        assert list(cache) == model
