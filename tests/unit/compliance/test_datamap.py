"""The data map: declared kinds of the paths sent, and the table people read."""

from __future__ import annotations

from router.compliance.datamap import declared_kinds, render_table


def test_declared_kinds_of_sent_paths() -> None:
    """Only the declared paths that were sent count."""
    declarations = {"traits.email": "email", "traits.phone": "phone"}
    assert declared_kinds({"traits.email", "event"}, declarations) == {"email"}


def test_table_lists_destinations_counts_kinds_and_paths() -> None:
    """The table has one line per destination, then its field paths."""
    datamap = {
        "day": "2026-11-22",
        "destinations": {
            "ga4": {"fields": ["event", "userId"], "pii": ["email"], "events": 3, "bytes": 120}
        },
    }
    text = render_table(datamap)
    assert "ga4" in text
    assert "email" in text
    assert "    userId" in text
    assert "(nothing sent)" in render_table({"day": "2026-11-22", "destinations": {}})


def test_table_shows_match_keys_and_omitted_identifiers() -> None:
    """Match readiness: counts per match key, then what was left out and why."""
    datamap = {
        "day": "2026-11-22",
        "destinations": {
            "meta": {
                "fields": ["event"],
                "pii": ["email"],
                "events": 5,
                "bytes": 500,
                "match": {"email": 5, "phone": 2, "omitted:phone:no_country_code": 3},
            }
        },
    }
    text = render_table(datamap)
    assert "    match keys: email 5, phone 2" in text
    assert "    omitted: phone:no_country_code 3" in text
