"""``router explain`` shows match readiness: per destination, the match keys an event carries
and the identifiers left out with their reason (issue 11, item 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.cli import main

MATCH_YAML = """
sources:
  - id: web
    write_key: match-write-key
consent:
  mappings:
    ids: {C0004: advertising, C0002: analytics}
destinations:
  - id: meta
    type: meta_capi
    requires: [advertising]
    fields: [userId, anonymousId, context.traits.email, context.traits.phone,
             context.page.url, context.userAgent, properties.revenue, properties.currency]
    settings: {pixel_id: "1234567890", access_token: "meta-token"}
  - id: ga4
    type: ga4
    requires: [analytics]
    fields: [userId, anonymousId, context.traits.email, context.traits.phone,
             properties.revenue, properties.currency]
    settings: {measurement_id: G-TEST123, api_secret: ga4-secret}
"""

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "messageId": "msg-match-1",
    "userId": "user-1",
    "anonymousId": "123.456",
    "properties": {"revenue": 25, "currency": "euro"},
    "context": {
        "page": {"url": "https://shop.example/thanks"},
        "userAgent": "Mozilla/5.0",
        "traits": {"email": "jane@example.com", "phone": "(650) 555-1212"},
    },
}


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    config = tmp_path / "match.yaml"
    config.write_text(MATCH_YAML)
    event = tmp_path / "event.json"
    event.write_text(json.dumps(EVENT))
    consent = '{"C0004": true, "C0002": true}'
    return ["--config", str(config), "--event", str(event), "--consent", consent]


def test_explain_json_lists_match_keys_and_omitted_identifiers(
    files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Meta: the euro Purchase is not sent (missing_required); GA4: sent with email and
    external id, the phone (no country code) and the value (invalid currency) left out."""
    assert main(["explain", *files, "--json"]) == 0
    reports = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    meta = reports["meta"]
    assert meta["decision"] == "deliver"
    assert [d["reason"] for d in meta["dropped"]] == ["missing_required"]
    assert meta["requests"] == []
    ga4 = reports["ga4"]
    assert ga4["match_keys"] == ["browser_id", "email", "external_id"]
    assert sorted((o["field"], o["reason"]) for o in ga4["omitted"]) == [
        ("phone", "no_country_code"),
        ("value", "invalid_currency"),
    ]


def test_explain_text_prints_match_keys_and_omissions(
    files: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The text output says what will match, what was left out and why, and what is not sent."""
    assert main(["explain", *files]) == 0
    out = capsys.readouterr().out
    assert "  not sent: missing_required" in out
    assert "  match keys: browser_id, email, external_id" in out
    assert "phone (no_country_code)" in out
    assert "value (invalid_currency)" in out
    assert "6505551212" not in out  # no normalized phone is printed
