"""The normalized consent record and the bounded reason codes.

Every signal (CMP category maps, TCF, GPP, Consent Mode, GPC, stored state) is reduced to one
``ConsentState``: which canonical categories are granted, which are denied and by what. A denial
from any signal wins over a grant from another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consent.tcf import TCString


class DenyReason(StrEnum):
    """Why a destination's required consent is not granted (bounded: safe as a metric label)."""

    NO_CONSENT = "no_consent"
    CATEGORY_DENIED = "category_denied"
    VENDOR_DENIED = "vendor_denied"
    GPC_OPT_OUT = "gpc_opt_out"
    US_OPT_OUT = "us_opt_out"
    CONSENT_EXPIRED = "consent_expired"
    CONSENT_UNPARSEABLE = "consent_unparseable"
    CONSENT_WITHDRAWN = "consent_withdrawn"


class Signal(StrEnum):
    """Where a consent fact came from."""

    SEGMENT = "segment"
    RUDDERSTACK = "rudderstack"
    ONETRUST = "onetrust"
    TCF = "tcf"
    GPP = "gpp"
    US_PRIVACY = "us_privacy"
    CONSENT_MODE = "consent_mode"
    GPC = "gpc"
    STORED = "stored"
    POLICY = "policy"


@dataclass(frozen=True, slots=True)
class ConsentState:
    """One event's consent, normalized onto the canonical categories.

    ``denied_by`` says, for each denied category, which reason explains it (a GPC opt-out, a US
    opt-out, or an explicit denial). ``unparseable`` lists the signals that were present but
    malformed: they make every category fail closed.
    """

    granted: frozenset[str] = frozenset()
    denied_by: dict[str, DenyReason] = field(default_factory=dict)
    signals: tuple[Signal, ...] = ()
    unparseable: tuple[Signal, ...] = ()
    gpc: bool = False
    us_opt_out: bool = False
    region: str | None = None
    collected_at: datetime | None = None
    expired: bool = False
    tcf: TCString | None = None
    """The decoded TC string, for per-vendor checks (``None``: no TCF signal)."""

    @property
    def denied(self) -> frozenset[str]:
        """Categories denied by some signal."""
        return frozenset(self.denied_by)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A consent decision for one destination: allowed, or the reason it is not."""

    allowed: bool
    reason: DenyReason | None = None
    category: str | None = None


ALLOWED = Verdict(allowed=True)


@dataclass(frozen=True, slots=True)
class StoredConsent:
    """A subject's consent as stored (consent API or consent events): newest wins."""

    granted: frozenset[str]
    denied: frozenset[str]
    source: str
    updated_at: datetime
