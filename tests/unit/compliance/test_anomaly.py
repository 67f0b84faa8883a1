"""The anomaly detectors' pure core: hour-of-day baseline, fallback, factor and floor."""

from __future__ import annotations

from datetime import UTC, datetime

from router.compliance.anomaly import (
    Anomaly,
    AnomalyKind,
    MonitorSettings,
    SubjectKind,
    baseline,
    baseline_hours,
    hour_of,
    volume_alarm,
    volume_threshold,
)

SETTINGS = MonitorSettings(volume_floor=100, volume_factor=3.0, baseline_days=7)
NOW = hour_of(datetime(2026, 11, 22, 14, tzinfo=UTC))


def _daily(per_hour: dict[int, int], days: int) -> dict[int, int]:
    """Counts for ``days`` past days, ``per_hour[h]`` at hour of day ``h``."""
    start = NOW - NOW % 24
    counts: dict[int, int] = {}
    for day in range(1, days + 1):
        for hour, count in per_hour.items():
            counts[start - 24 * day + hour] = count
    return counts


def test_baseline_is_the_mean_of_the_same_hour_on_past_days() -> None:
    """The baseline of 14:00 is the mean of 14:00 over the last days, not of other hours."""
    counts = _daily({14: 600, 3: 10}, days=7)
    counts[NOW - 24] = 800
    assert baseline(counts, NOW, NOW - 30 * 24, SETTINGS) == (600 * 6 + 800) / 7


def test_hour_of_day_decides_the_threshold() -> None:
    """2,000 events alarm at 03:00 (quiet hour) but not at 14:00 (busy hour)."""
    counts = _daily({14: 1000, 3: 50}, days=7)
    since = NOW - 30 * 24
    night = NOW - 14 + 3
    assert not volume_alarm(2000, baseline(counts, NOW, since, SETTINGS), SETTINGS)
    assert volume_alarm(2000, baseline(counts, night, since, SETTINGS), SETTINGS)


def test_baseline_counts_silent_hours_as_zero_since_first_seen() -> None:
    """Hours without a counter since the subject was first seen weigh in as zero."""
    counts = {NOW - 24: 700}
    assert baseline(counts, NOW, NOW - 7 * 24, SETTINGS) == 100


def test_short_history_falls_back_to_recent_hours() -> None:
    """With fewer same-hour days than required, the recent hours' mean is used."""
    since = NOW - 30
    counts = {NOW - 1: 40, NOW - 2: 20, NOW - 24: 999}
    expected = (40 + 20 + 999) / 24
    assert baseline(counts, NOW, since, SETTINGS) == expected


def test_no_history_means_no_alarm() -> None:
    """A subject seen for the first time this hour has no baseline and never alarms."""
    assert baseline({}, NOW, NOW, SETTINGS) is None
    assert baseline({}, NOW, None, SETTINGS) is None
    assert not volume_alarm(10**9, None, SETTINGS)


def test_floor_keeps_tiny_volumes_quiet() -> None:
    """Ten times a tiny baseline stays below the floor, so it does not alarm."""
    settings = MonitorSettings()
    assert volume_threshold(2.0, settings) == 1000
    assert not volume_alarm(900, 2.0, settings)
    assert volume_alarm(1001, 2.0, settings)


def test_factor_applies_above_the_floor() -> None:
    """Above the floor, the count must exceed factor times the baseline."""
    settings = MonitorSettings()
    assert not volume_alarm(5000, 500.0, settings)
    assert volume_alarm(5001, 500.0, settings)


def test_baseline_hours_cover_same_hours_and_recent_hours() -> None:
    """The hours read from Redis: each past day's same hour and the recent window."""
    hours = baseline_hours(NOW, SETTINGS)
    assert NOW - 24 * 7 in hours
    assert NOW - 1 in hours
    assert NOW not in hours
    assert len(hours) == 7 + 24 - 1  # NOW - 24 is in both


def test_anomaly_json_has_no_values() -> None:
    """The stored form is kind, subject, detail and time."""
    at = datetime(2026, 11, 22, 14, 5, tzinfo=UTC)
    anomaly = Anomaly(AnomalyKind.NEW_PII, SubjectKind.DESTINATION, "ga4", {"pii": "email"}, at)
    assert anomaly.to_json() == {
        "kind": "new_pii",
        "subject_kind": "destination",
        "subject": "ga4",
        "detail": {"pii": "email"},
        "at": "2026-11-22T14:05:00+00:00",
    }
