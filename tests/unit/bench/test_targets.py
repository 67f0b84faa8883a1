"""``make bench``'s targets: the audit row says whether the writer kept every decision."""

from __future__ import annotations

from bench.report import targets


def _audit_rows(dropped: int | None) -> list[tuple[str, str, str]]:
    rows = targets([], [], None, None, 64, audit_dropped=dropped)
    return [row for row in rows if row[0].startswith("audit")]


def test_the_audit_row_is_met_only_when_no_decision_was_dropped() -> None:
    assert _audit_rows(0) == [
        ("audit: a decision per event, none dropped under load", "0 dropped", "MET")
    ]
    [(_, measured, verdict)] = _audit_rows(26_400)
    assert (measured, verdict) == ("26,400 dropped", "NOT MET")
    assert _audit_rows(None) == []  # not read: no row
