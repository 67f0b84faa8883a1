"""consent.records: merging a person's records, building and encoding a record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consent.model import StoredConsent
from consent.records import ConsentRecord, UnreadableRecordError, merge_records
from consent.store import subject_key
from router.queue.keys import subject_hash

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(granted: set[str], denied: set[str], at: datetime, source: str = "api") -> ConsentRecord:
    """A record updated at ``at``, received then, valid for 395 days."""
    votes = dict.fromkeys(granted, True) | dict.fromkeys(denied, False)
    return ConsentRecord.build(
        votes, source=source, updated_at=at, received_at=at, max_age_days=395
    )


def test_no_record_merges_to_none() -> None:
    """Nothing stored for any id: no stored consent at all."""
    assert merge_records([None, None]) is None
    assert merge_records([]) is None


def test_a_denial_on_one_id_wins_over_a_grant_on_another() -> None:
    """userId grants analytics, anonymousId denies it: analytics is denied."""
    user = record({"analytics", "functional"}, set(), T0 + timedelta(hours=1))
    anonymous = record(set(), {"analytics"}, T0, source="segment_event")
    merged = merge_records([user, None, anonymous])
    assert merged == StoredConsent(
        granted=frozenset({"functional"}),
        denied=frozenset({"analytics"}),
        source="api",
        updated_at=T0 + timedelta(hours=1),
    )


def test_the_newest_record_gives_timestamp_and_source() -> None:
    """The merged record carries the newest timestamp and that record's source."""
    older = record({"analytics"}, set(), T0, source="api")
    newer = record({"advertising"}, set(), T0 + timedelta(days=2), source="segment_event")
    merged = merge_records([older, newer])
    assert merged is not None
    assert (merged.source, merged.updated_at) == ("segment_event", T0 + timedelta(days=2))
    assert merged.granted == {"analytics", "advertising"}


def test_a_timestamp_from_the_future_is_clamped_to_receipt() -> None:
    """A consent cannot be newer than when it reached us (it would pin the record)."""
    built = ConsentRecord.build(
        {"analytics": True},
        source="api",
        updated_at=T0 + timedelta(days=30),
        received_at=T0,
        max_age_days=10,
    )
    assert built.updated_at == T0
    assert built.expires_at == T0 + timedelta(days=10)


def test_a_record_survives_encoding_to_millisecond_precision() -> None:
    """encode then decode gives the same record (timestamps kept to the millisecond)."""
    original = record({"analytics"}, {"advertising"}, T0 + timedelta(microseconds=123000))
    assert ConsentRecord.decode(original.encode()) == original


def test_an_unreadable_record_grants_nothing() -> None:
    """A corrupt value in Redis is refused by decode; what stands for it grants nothing."""
    for raw in (b"not json", b'{"granted": ["analytics"]}', b"[]"):
        with pytest.raises(UnreadableRecordError):
            ConsentRecord.decode(raw)
    standin = ConsentRecord.unreadable(T0)
    assert standin.granted == frozenset()
    assert standin.source == "unreadable"
    assert standin.expires_at > T0


def test_subject_hashing_is_shared_with_the_queue() -> None:
    """The store and the queue hash ids the same way: stripped SHA-256 hex."""
    assert subject_key(" user-1 ") == subject_key("user-1") == subject_hash("user-1")
    assert len(subject_key("user-1")) == 64
    assert "user-1" not in subject_key("user-1")


def test_one_record_merges_to_itself_with_grants_it_also_denies_removed() -> None:
    """A single record (the common case) merges as the general fold does: a category both
    granted and denied is denied."""
    only = ConsentRecord(
        granted=frozenset({"analytics", "advertising"}),
        denied=frozenset({"advertising"}),
        source="api",
        updated_at=T0,
        received_at=T0,
        expires_at=T0 + timedelta(days=1),
    )
    expected = StoredConsent(frozenset({"analytics"}), frozenset({"advertising"}), "api", T0)
    assert merge_records([None, only]) == expected
    assert merge_records([only, only]) == expected


def test_an_unreadable_record_names_its_cause() -> None:
    """The decode error is the cause (as ``raise ... from``), in the compiled build too."""
    for raw, cause in ((b"not json", ValueError), (b"[]", TypeError), (b"{}", KeyError)):
        with pytest.raises(UnreadableRecordError) as refused:
            ConsentRecord.decode(raw)
        assert isinstance(refused.value.__cause__, cause)
        assert refused.value.__suppress_context__
