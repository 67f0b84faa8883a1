"""Signal extractors: one per consent dialect, each reading an event's ``context``.

An extractor returns ``None`` when its signal is absent, a ``SignalReading`` of category votes
when present, and raises a ``DecodeError`` when present but malformed (the resolver turns that
into ``consent_unparseable``: fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consent.errors import CMPFormatError
from consent.model import DenyReason, Signal
from consent.policy import ConsentPolicy

if TYPE_CHECKING:
    from consent.tcf import TCString


@dataclass(slots=True)
class SignalReading:
    """What one signal says: category votes (True grant, False deny) and opt-out flags."""

    signal: Signal
    votes: dict[str, bool] = field(default_factory=dict)
    deny_reason: DenyReason = DenyReason.CATEGORY_DENIED
    gpc: bool = False
    us_opt_out: bool = False
    tcf: TCString | None = None
    cmp: bool = True
    """True for a CMP choice (it replaces the ``missing`` policy); False for opt-outs only."""

    def vote(self, category: str | None, granted: bool) -> None:
        """Record a vote; a denial is never overwritten by a grant from the same signal."""
        if category is None:
            return
        self.votes[category] = self.votes.get(category, True) and granted


Extractor = Callable[[Mapping[str, Any], ConsentPolicy], SignalReading | None]


def _consent_object(context: Mapping[str, Any]) -> Mapping[str, Any] | None:
    consent = context.get("consent")
    if type(consent) is dict:  # no ABC check (Python code) for the usual case
        return consent
    return consent if isinstance(consent, Mapping) else None


def read_segment(context: Mapping[str, Any], policy: ConsentPolicy) -> SignalReading | None:
    """Segment (and Jitsu): ``context.consent.categoryPreferences = {id: bool}``."""
    consent = _consent_object(context)
    if consent is None or "categoryPreferences" not in consent:
        return None
    preferences = consent["categoryPreferences"]
    if not isinstance(preferences, Mapping):
        raise CMPFormatError("bad_format", "categoryPreferences must be an object")
    reading = SignalReading(Signal.SEGMENT)
    for cmp_id, value in preferences.items():
        if not isinstance(value, bool):
            raise CMPFormatError("bad_value", "categoryPreferences values must be booleans")
        reading.vote(policy.category_of(cmp_id), value)
    return reading


def _id_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise CMPFormatError("bad_format", f"{name} must be a list of strings")
    return [item for item in value if item.strip()]


def read_rudderstack(context: Mapping[str, Any], policy: ConsentPolicy) -> SignalReading | None:
    """RudderStack: ``context.consentManagement`` allowed ids grant, denied ids deny."""
    management = context.get("consentManagement")
    if management is None:
        return None
    if not isinstance(management, Mapping):
        raise CMPFormatError("bad_format", "consentManagement must be an object")
    reading = SignalReading(Signal.RUDDERSTACK)
    for cmp_id in _id_list(management.get("allowedConsentIds"), "allowedConsentIds"):
        reading.vote(policy.category_of(cmp_id), True)
    for cmp_id in _id_list(management.get("deniedConsentIds"), "deniedConsentIds"):
        reading.vote(policy.category_of(cmp_id), False)
    return reading


def read_gpc_flag(context: Mapping[str, Any], policy: ConsentPolicy) -> SignalReading | None:
    """``context.consent.gpc: true`` (an SDK copying ``navigator.globalPrivacyControl``)."""
    consent = _consent_object(context)
    if consent is None or consent.get("gpc") is not True:
        return None
    return gpc_reading(policy)


def gpc_reading(policy: ConsentPolicy) -> SignalReading:
    """Global Privacy Control: an opt-out of sale/sharing, denying ``gpc_denies``."""
    reading = SignalReading(Signal.GPC, deny_reason=DenyReason.GPC_OPT_OUT, gpc=True, cmp=False)
    if policy.honor_gpc:
        for category in policy.gpc_denies:
            reading.vote(category, False)
    return reading
