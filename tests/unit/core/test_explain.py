"""How `router explain --consent JSON` reads its argument (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from router.core.explain import consent_context


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
