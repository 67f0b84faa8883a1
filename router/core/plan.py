"""The plan step: ``(event, consent, destinations) -> decisions``. Pure.

For each destination, in order: enabled, not suppressed, listed in ``events``, not switched off
in the event's ``integrations`` object, consent granted for every required category; then the
event is minimized to the destination's allowlist and passed through the PII safety net
(``destinations.dlp``): card numbers are always redacted, other personal data unless the field
is declared as that kind of identifier. This is what ``router explain`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from consent.model import ConsentState
from consent.policy import ConsentPolicy, evaluate
from destinations.base import ConsentFacts, Delivery
from destinations.dlp import scan_payload
from router.config import CompiledDestination
from router.core.outcomes import Decision, Deliver, Skip, SkipReason
from router.core.sanitize import Event


def consent_facts(state: ConsentState, policy: ConsentPolicy) -> ConsentFacts:
    """What connectors may know of the consent: categories and opt-out flags, no strings."""

    def google(kind: str, default: str) -> bool | None:
        category = policy.google.get(kind, default)
        if category in state.denied_by:
            return False
        return True if category in state.granted else None

    return ConsentFacts(
        granted=tuple(sorted(state.granted)),
        denied=tuple(sorted(state.denied_by)),
        gpc=state.gpc,
        us_opt_out=state.us_opt_out,
        ad_user_data=google("ad_user_data", "advertising"),
        ad_personalization=google("ad_personalization", "personalization"),
    )


def integrations_allow(integrations: Any, destination: CompiledDestination) -> bool:
    """Segment's ``integrations`` object can only remove a destination, never add one."""
    if not isinstance(integrations, Mapping):
        return True
    for key in (destination.id, destination.type):
        if key in integrations:
            return integrations[key] is not False
    return integrations.get("All", True) is not False


def plan(
    event: Event,
    consent: ConsentState,
    destinations: Sequence[CompiledDestination],
    policy: ConsentPolicy,
    *,
    suppressed: bool = False,
) -> list[Decision]:
    """One decision per destination, in configuration order."""
    facts = consent_facts(consent, policy)
    integrations = event.data.get("integrations")
    decisions: list[Decision] = []
    for destination in destinations:
        decisions.append(
            _decide(
                event,
                consent,
                destination,
                facts=facts,
                integrations=integrations,
                suppressed=suppressed,
                tcf_purposes=policy.tcf,
            )
        )
    return decisions


def _decide(
    event: Event,
    consent: ConsentState,
    destination: CompiledDestination,
    *,
    facts: ConsentFacts,
    integrations: Any,
    suppressed: bool,
    tcf_purposes: Mapping[str, tuple[int, ...]],
) -> Decision:
    if not destination.config.enabled:
        return Skip(destination, SkipReason.DESTINATION_DISABLED)
    if suppressed:
        return Skip(destination, SkipReason.SUPPRESSED, "the subject asked for erasure")
    if not destination.wants(event.type, event.name):
        return Skip(destination, SkipReason.EVENT_NOT_LISTED)
    if not integrations_allow(integrations, destination):
        return Skip(destination, SkipReason.INTEGRATIONS_DISABLED, "integrations object")
    verdict = evaluate(
        consent, destination.requires, destination.config.tcf_vendor_id, tcf_purposes
    )
    if not verdict.allowed:
        assert verdict.reason is not None
        detail = f"category {verdict.category}" if verdict.category else ""
        return Skip(destination, SkipReason.denied(verdict.reason), detail)
    allowlist = destination.allowlist
    payload, found = scan_payload(
        allowlist.apply(event.data), destination.identifiers, allowlist.unscanned_paths
    )
    delivery = Delivery(
        message_id=event.message_id,
        type=event.type.value,
        timestamp=event.timestamp,
        payload=payload,
        event=event.name,
        consent=facts,
    )
    return Deliver(destination, delivery, tuple(found))
