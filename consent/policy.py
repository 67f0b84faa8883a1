"""Consent policy: the routing file's ``consent`` block, and the per-destination decision.

``evaluate(state, requires)`` is the fail-closed rule of design.md section 2: a destination gets
an event only if every category it requires is granted and none is denied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from consent.model import ALLOWED, ConsentState, DenyReason, StoredConsent, Verdict
from consent.tcf import vendor_allowed

DEFAULT_CATEGORIES = ("necessary", "functional", "analytics", "advertising", "personalization")


class Missing(StrEnum):
    """What to do when an event has no consent signal and no stored state."""

    DENY = "deny"
    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class ConsentPolicy:
    """Everything the resolver needs from the routing file (built by the router, validated)."""

    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    missing: Missing = Missing.DENY
    regions: Mapping[str, Missing] = field(default_factory=dict)
    honor_gpc: bool = True
    gpc_denies: tuple[str, ...] = ("advertising",)
    us_opt_out_denies: tuple[str, ...] = ("advertising",)
    max_age_days: int = 395
    ids: Mapping[str, str] = field(default_factory=dict)
    """CMP category ids (OneTrust groups, Segment/RudderStack ids) -> canonical category."""
    tcf: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Canonical category -> the TCF purposes that must all be consented."""
    google: Mapping[str, str] = field(default_factory=dict)
    """Consent Mode type -> canonical category."""
    geo_header: str | None = None

    def missing_for(self, region: str | None) -> Missing:
        """The ``missing`` policy in force for a region (country code, upper case)."""
        if region and region in self.regions:
            return self.regions[region]
        return self.missing

    def category_of(self, cmp_id: str) -> str | None:
        """The canonical category of a CMP id, or of a canonical name in any case."""
        mapped = self.ids.get(cmp_id)
        if mapped is not None:
            return mapped
        lowered = cmp_id.strip().lower()
        if lowered in self.categories:
            return lowered
        upper = cmp_id.strip().upper()
        return self.ids.get(upper)


def evaluate(
    state: ConsentState,
    requires: Iterable[str],
    vendor_id: int | None = None,
    tcf_purposes: Mapping[str, tuple[int, ...]] | None = None,
) -> Verdict:
    """Fail closed: every required category granted, none denied; else the first reason.

    With a ``vendor_id`` and a TC string on the event, that TCF vendor must have consent for
    the purposes of the required categories (``tcf_purposes``), publisher restrictions included.
    """
    required = tuple(requires)
    if not required:
        return ALLOWED
    if state.unparseable:
        return Verdict(False, DenyReason.CONSENT_UNPARSEABLE)
    if state.expired:
        return Verdict(False, DenyReason.CONSENT_EXPIRED)
    for category in required:
        reason = state.denied_by.get(category)
        if reason is not None:
            return Verdict(False, reason, category)
    for category in required:
        if category not in state.granted:
            return Verdict(False, DenyReason.NO_CONSENT, category)
    if vendor_id is not None and state.tcf is not None:
        purposes = {p for c in required for p in (tcf_purposes or {}).get(c, ())}
        if not vendor_allowed(state.tcf, vendor_id, purposes):
            return Verdict(False, DenyReason.VENDOR_DENIED)
    return ALLOWED


def withdrawn(stored: StoredConsent | None, requires: Iterable[str], since: datetime) -> bool:
    """Whether a stored record newer than ``since`` denies one of ``requires`` (delivery check)."""
    if stored is None or stored.updated_at <= since:
        return False
    return any(category in stored.denied for category in requires)
