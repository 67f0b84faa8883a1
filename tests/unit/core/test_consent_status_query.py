"""The parsers of the privacy endpoints and commands: ``GET /v1/consent/status``'s query and
``router audit query --after``, on any input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from consent.ids import normalize_id
from router.compliance.subject_report import parse_after
from router.core.consent_input import MAX_ID_CHARS, StatusQuery, parse_status_query
from router.core.outcomes import RejectCode, Rejection

NAMES = st.sampled_from(["userId", "anonymousId", "writeKey", "_", "userid"])


@given(st.lists(st.tuples(NAMES, st.text(max_size=300)), max_size=6))
def test_status_query_is_a_query_or_a_rejection_with_a_path(items: list[tuple[str, str]]) -> None:
    """Any parameters: normalized ids of at most MAX_ID_CHARS, or a coded rejection naming
    the parameter; never an exception."""
    result = parse_status_query(items)
    if isinstance(result, Rejection):
        assert result.code in (RejectCode.MISSING_IDENTITY, RejectCode.INVALID_ID)
        assert result.path in ("userId", "anonymousId")
        assert result.message
        return
    assert result.ids
    for value in result.ids:
        assert value == normalize_id(value)
        assert 0 < len(value) <= MAX_ID_CHARS
    given_user = [v for k, v in items if k == "userId"]
    assert result.user_id == (normalize_id(given_user[0]) or None if given_user else None)


def test_status_query_examples() -> None:
    """Both ids, writeKey ignored, a decomposed accent composed, a repeated id refused."""
    assert parse_status_query(
        [("userId", " jose\u0301 "), ("anonymousId", "a-1"), ("writeKey", "k")]
    ) == StatusQuery("jos\u00e9", "a-1")
    twice = parse_status_query([("anonymousId", "a"), ("anonymousId", "b")])
    assert isinstance(twice, Rejection)
    assert (twice.code, twice.path) == (RejectCode.INVALID_ID, "anonymousId")
    none = parse_status_query([("userId", "\x00 ")])
    assert isinstance(none, Rejection)
    assert none.code == RejectCode.MISSING_IDENTITY


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]
        ),
    )
)
def test_after_reads_every_iso_time_back_as_the_same_instant(moment: datetime) -> None:
    """An ISO 8601 time with an offset (or Z) is the same instant, in UTC."""
    parsed = parse_after(moment.isoformat())
    assert parsed == moment
    assert parsed.tzinfo == UTC
    assert parse_after(moment.astimezone(UTC).isoformat().replace("+00:00", "Z")) == moment


@given(st.text(max_size=40))
def test_after_refuses_non_times_with_a_reason(text: str) -> None:
    """Anything else: a ValueError naming the expected form, never another exception."""
    outcome: datetime | str
    try:
        outcome = parse_after(text)
    except ValueError as exc:
        outcome = str(exc)
    if isinstance(outcome, str):
        assert "ISO 8601" in outcome
    else:
        assert outcome.tzinfo == UTC


def test_after_without_offset_is_utc() -> None:
    """A day or a naive time is read as UTC."""
    assert parse_after("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_after("2026-12-01T10:00:00") == datetime(2026, 12, 1, 10, tzinfo=UTC)
