"""One vocabulary of outcomes: skip reasons include consent's, dead-letter failures round-trip."""

from __future__ import annotations

import pytest

from consent.model import DenyReason
from router.core.outcomes import Failure, SkipReason


@pytest.mark.parametrize("reason", list(DenyReason))
def test_every_consent_deny_reason_is_a_skip_reason_with_the_same_value(
    reason: DenyReason,
) -> None:
    """A consent refusal is counted and audited under consent's own code."""
    assert SkipReason.denied(reason).value == reason.value
    assert SkipReason[reason.name].value == reason.value


def test_skip_reasons_are_the_routers_four_plus_consents() -> None:
    """No second list of consent reasons grows apart from consent's enum."""
    own = {r.value for r in SkipReason} - {r.value for r in DenyReason}
    assert own == {
        "destination_disabled",
        "suppressed",
        "event_not_listed",
        "integrations_disabled",
    }


@pytest.mark.parametrize(
    ("stored", "failure"),
    [
        ("max_attempts:http_503", Failure("max_attempts", "http_503")),
        ("dropped:too_old", Failure("dropped", "too_old")),
        ("http_400", Failure("http_400")),
        ("corrupt_entry", Failure("corrupt_entry")),
        ("max_attempts:ga4_a:b", Failure("max_attempts", "ga4_a:b")),
    ],
)
def test_dead_letters_in_the_stored_string_form_read_as_failures(
    stored: str, failure: Failure
) -> None:
    """Dead letters already in Redis (``reason`` or ``reason:detail``) still read, and a
    failure is stored in exactly that form again."""
    assert Failure.parse(stored) == failure
    assert failure.text == stored
