"""The record of processing's pure core and the routing keys it reads (``legal_basis``,
``retention``, ``recipient``): validation with paths, categories, flags, Markdown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.compliance.inventory import (
    Flag,
    build_inventory,
    category_of,
    kind_of,
    render_markdown,
)
from router.errors import ConfigError
from router.routing import parse_routing

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def routing_text(extra: str = "", fields: str = "[messageId, event]") -> str:
    return f"""
sources: [{{id: web, write_key: k}}]
destinations:
  - id: hook
    type: webhook
    requires: [analytics]
    fields: {fields}
    settings: {{url: "https://hooks.example.com/in", secret: {SECRET}}}
{extra}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_routing(text, env={})
    return caught.value.problems


def test_legal_basis_and_retention_are_validated_with_their_paths() -> None:
    """A legal basis outside GDPR art. 6(1) and a retention that is not a duration are errors
    at their paths; 'consent' as the basis of a destination needing no consent is refused."""
    found = problems(routing_text("    legal_basis: because\n    retention: forever"))
    assert found[0].startswith("destinations[0].legal_basis: Input should be 'consent', ")
    assert found[1] == (
        "destinations[0].retention: expected a duration such as '30 days', '13 months' or "
        "'2 years' (or 'session' / 'none'), as the recipient states it"
    )
    text = routing_text("    legal_basis: consent").replace("[analytics]", "[]")
    assert problems(text) == [
        "destinations[0].legal_basis: 'consent' needs the consent categories in `requires` "
        "(`requires: []` sends without consent)"
    ]
    routing = parse_routing(
        routing_text("    legal_basis: legitimate_interests\n    retention: 26 months"), env={}
    )
    config = routing.destinations[0].config
    assert (config.legal_basis, config.retention) == ("legitimate_interests", "26 months")


@given(st.text(max_size=20))
def test_any_retention_text_is_accepted_or_refused_at_its_path(value: str) -> None:
    """Whatever the text, the routing file either validates or names destinations[0].retention."""
    text = routing_text(f"    retention: {json.dumps(value)}")
    problems: list[str] = []
    try:
        routing = parse_routing(text, env={})
    except ConfigError as error:
        problems = error.problems
    if problems:
        assert all(p.startswith(("destinations[0].retention", "(root)")) for p in problems)
    else:
        assert routing.destinations[0].config.retention == value


@pytest.mark.parametrize(
    ("path", "category"),
    [
        ("traits.email", "Contact details"),
        ("context.traits.phone", "Contact details"),
        ("context.ip", "IP address"),
        ("userId", "Online identifiers"),
        ("context.userAgent", "Device and browser information"),
        ("context.page.url", "Browsing activity"),
        ("properties.products[].product_id", "Purchase information"),
        ("messageId", "Event metadata"),
        ("properties.flavour", "Other event properties"),
    ],
)
def test_field_paths_fall_into_privacy_notice_categories(path: str, category: str) -> None:
    """Each sent path is named by the category a privacy notice lists."""
    assert category_of(path) == category


def test_kinds_by_field_name() -> None:
    """Email, phone and IP fields are personal data by their name."""
    assert [kind_of(p) for p in ("traits.email", "context.ip", "properties.sku")] == [
        "email",
        "ip",
        None,
    ]


def day(events: int, fields: list[str], pii: list[str] | None = None) -> dict[str, Any]:
    return {
        "day": "2026-12-01",
        "destinations": {
            "hook": {"fields": fields, "pii": pii or [], "events": events, "bytes": 10}
        },
    }


def test_idle_only_when_nothing_left_within_the_window() -> None:
    """No data map rows and no delivery for 30 days: idle; a delivery 2 days ago: not idle;
    one 40 days ago: idle again."""
    routing = parse_routing(routing_text(), env={})
    assert build_inventory(routing, [], {}, NOW).recipients[0].flags[0] is Flag.IDLE
    recent = {"hook": NOW - timedelta(days=2)}
    assert Flag.IDLE not in build_inventory(routing, [], recent, NOW).recipients[0].flags
    old = {"hook": NOW - timedelta(days=40)}
    assert Flag.IDLE in build_inventory(routing, [], old, NOW).recipients[0].flags


def test_days_add_up_and_allowlist_rules_match_nested_paths() -> None:
    """Events add up over days; an allowlisted object counts as used when a path under it was
    sent; a kind the data map recorded but the destination does not declare is flagged."""
    routing = parse_routing(
        routing_text(fields="[messageId, event, properties.products, properties.coupon]"), env={}
    )
    days = [
        day(2, ["messageId", "properties.products[].sku"]),
        day(3, ["event"], pii=["phone"]),
    ]
    row = build_inventory(routing, days, {}, NOW).recipients[0]
    assert row.events_sent == 5
    assert row.unused_fields == ["properties.coupon"]
    assert row.undeclared_personal_data == ["phone"]
    assert row.flags == [
        Flag.UNUSED_FIELDS,
        Flag.UNDECLARED_PERSONAL_DATA,
        Flag.NO_LEGAL_BASIS,
        Flag.NO_RETENTION,
    ]


def test_markdown_names_connector_hashing_and_recipients() -> None:
    """A platform connector names its company and the identifiers it hashes itself."""
    text = """
sources: [{id: web, write_key: k}]
destinations:
  - id: meta
    type: meta_capi
    legal_basis: consent
    retention: 2 years
    requires: [advertising]
    fields: [messageId, event, traits.email, context.ip]
    settings: {pixel_id: "123456", access_token: tok}
"""
    routing = parse_routing(text, env={})
    inventory = build_inventory(
        routing,
        [
            {
                "day": "x",
                "destinations": {"meta": day(1, ["traits.email", "event"])["destinations"]["hook"]},
            }
        ],
        {},
        NOW,
    )
    row = inventory.recipients[0]
    assert row.recipient == "Meta (Conversions API)"
    assert [(p.path, p.protection, p.by) for p in row.protected_fields] == [
        ("traits.email", "hashed", "connector")
    ]
    assert row.personal_data == ["email"]
    assert row.undeclared_personal_data == []  # the connector declares contact identifiers
    markdown = render_markdown(inventory)
    assert "| Meta (Conversions API) |" in markdown
    assert "(pseudonymised: traits.email)" in markdown
    assert "| advertising | 2 years |" in markdown
