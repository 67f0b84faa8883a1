"""`router explain`: how it reads `--consent JSON`, and that it agrees with the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from consent.resolve import RequestSignals, resolve_consent
from router.core.audit_records import decision_entries
from router.core.explain import consent_context, explain
from router.core.plan import plan
from router.core.sanitize import Event, sanitize
from router.core.schema import WireEvent
from tests.conftest import routing_from


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"C0002": True}, {"consent": {"categoryPreferences": {"C0002": True}}}),
        ({"analytics": False}, {"consent": {"categoryPreferences": {"analytics": False}}}),
        ({"gpc": True}, {"consent": {"gpc": True}}),
        ({"tcString": "CP"}, {"consent": {"tcString": "CP"}}),
        ({"categoryPreferences": {"a": True}}, {"consent": {"categoryPreferences": {"a": True}}}),
        (
            {"consentManagement": {"allowedConsentIds": ["x"]}},
            {"consentManagement": {"allowedConsentIds": ["x"]}},
        ),
        ({"consent": {"usPrivacy": "1YYN"}}, {"consent": {"usPrivacy": "1YYN"}}),
    ],
)
def test_consent_argument_forms(given: dict[str, Any], expected: dict[str, Any]) -> None:
    """A category map, a consent object or whole context fields are all understood."""
    assert consent_context(given) == expected


def test_explain_and_the_audit_trail_name_the_same_removed_fields() -> None:
    """``router explain`` and the audit's decision record list the same removed paths (an empty
    array at its own path, value-like keys as ``*``): one walker, one convention."""
    routing = routing_from()
    now = datetime(2026, 11, 22, 10, tzinfo=UTC)
    body = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "messageId": "m-1",
        "properties": {
            "order_id": "o-1",
            "tags": [],
            "products": [{"product_id": "p", "sku": "s"}],
            "jane@example.com": 1,
            "empty": {},
        },
    }
    wire = msgspec.convert(body, WireEvent)
    reports = explain(routing, wire, now=now, new_id=lambda: "id", signals=RequestSignals())
    assert isinstance(reports, list)
    explained = {r["id"]: r["removed"] for r in reports if r["decision"] == "deliver"}
    assert explained["ops-hook"]
    event = sanitize(wire, route_type=None, received_at=now, new_id=lambda: "id")
    assert isinstance(event, Event)
    consent = resolve_consent(event.data.get("context") or {}, RequestSignals(), routing.policy)
    decisions = plan(event, consent, routing.destinations, routing.policy)
    audited = {
        d["destination"]: d["removed"]
        for _, d in decision_entries(event, consent, decisions, key=b"k")
        if d["decision"] == "deliver"
    }
    assert audited == explained
    assert "properties.tags" in explained["ops-hook"]
    assert "properties.*" in explained["ops-hook"]
