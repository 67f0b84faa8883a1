"""Resolve an event's consent: every signal merged into one ``ConsentState``. Pure.

Merging rules (design.md section 5):
- a category is granted when some signal grants it and no signal denies it (a denial wins);
- a malformed signal makes the whole state unparseable (fail closed);
- when no CMP signal is present, the region's ``missing`` policy decides: ``deny`` grants
  nothing, ``allow`` grants every category (opt-out regimes); opt-out signals (GPC) still deny.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from consent.errors import DecodeError
from consent.iab import read_consent_mode, read_gpp, read_onetrust, read_tcf, read_us_privacy
from consent.model import ConsentState, DenyReason, Signal, StoredConsent
from consent.policy import ConsentPolicy, Missing
from consent.signals import (
    Extractor,
    SignalReading,
    gpc_reading,
    read_gpc_flag,
    read_rudderstack,
    read_segment,
)


@dataclass(frozen=True, slots=True)
class Reader:
    """One signal's extractor and the keys whose presence means the signal may be there."""

    signal: Signal
    extract: Extractor
    consent_keys: frozenset[str] = frozenset()
    """Keys of ``context.consent`` that carry the signal."""
    context_keys: frozenset[str] = frozenset()
    """Keys of ``context`` itself that carry it."""


READERS: tuple[Reader, ...] = (
    Reader(Signal.SEGMENT, read_segment, frozenset({"categoryPreferences"})),
    Reader(Signal.RUDDERSTACK, read_rudderstack, context_keys=frozenset({"consentManagement"})),
    Reader(
        Signal.ONETRUST,
        read_onetrust,
        frozenset(
            {"oneTrust", "onetrust", "onetrustGroups", "OptanonConsent", "OnetrustActiveGroups"}
        ),
    ),
    Reader(
        Signal.TCF,
        read_tcf,
        frozenset({"tcString", "tcfString", "gdpr_consent"}),
        frozenset({"gdpr_consent"}),
    ),
    Reader(Signal.GPP, read_gpp, frozenset({"gppString", "gpp"})),
    Reader(
        Signal.US_PRIVACY,
        read_us_privacy,
        frozenset({"usPrivacy", "us_privacy", "uspString"}),
        frozenset({"us_privacy"}),
    ),
    Reader(
        Signal.CONSENT_MODE,
        read_consent_mode,
        frozenset({"googleConsentMode", "consentMode", "gcm"}),
    ),
    Reader(Signal.GPC, read_gpc_flag, frozenset({"gpc"})),
)
"""Every in-event signal, in the order their readings are merged. A reader runs only when one
of its keys is present, so an event without consent fields costs almost nothing."""


_CONSENT_KEYS = frozenset().union(*(r.consent_keys for r in READERS))
_CONTEXT_KEYS = frozenset().union(*(r.context_keys for r in READERS))


def carries_signals(context: Mapping[str, Any]) -> bool:
    """Whether an event's context holds any key a reader of ``READERS`` looks at. Without one,
    the event's consent depends only on its stored record, its region and its request."""
    if not _CONTEXT_KEYS.isdisjoint(context):
        return True
    consent = context.get("consent")
    return isinstance(consent, dict) and not _CONSENT_KEYS.isdisjoint(consent)


@dataclass(frozen=True, slots=True)
class RequestSignals:
    """Consent facts carried by the HTTP request rather than the event."""

    gpc: bool = False
    region: str | None = None


def region_of(context: Mapping[str, Any], request: RequestSignals) -> str | None:
    """The country code from ``context.location.country``, else the request's geo header."""
    location = context.get("location")
    if isinstance(location, Mapping):
        country = location.get("country")
        if isinstance(country, str) and country.strip():
            return country.strip().upper()
    return request.region.upper() if request.region else None


def merge(
    readings: Sequence[SignalReading],
    unparseable: Sequence[Signal],
    policy: ConsentPolicy,
    region: str | None,
    *,
    expired: bool = False,
) -> ConsentState:
    """Merge signal readings into one state; denials win, absence falls to the policy."""
    granted: set[str] = set()
    denied_by: dict[str, DenyReason] = {}
    tcf = None
    for reading in readings:
        for category, vote in reading.votes.items():
            if vote:
                granted.add(category)
            elif category not in denied_by:
                denied_by[category] = reading.deny_reason
        if reading.tcf is not None:
            tcf = reading.tcf
    no_choice = not any(r.cmp for r in readings) and not unparseable and not expired
    if no_choice and policy.missing_for(region) is Missing.ALLOW:
        granted.update(policy.categories)
    granted.difference_update(denied_by)
    return ConsentState(
        granted=frozenset(granted),
        denied_by=denied_by,
        signals=tuple(r.signal for r in readings),
        unparseable=tuple(unparseable),
        gpc=any(r.gpc for r in readings),
        us_opt_out=any(r.us_opt_out for r in readings),
        region=region,
        expired=expired,
        tcf=tcf,
    )


def resolve_consent(
    context: Mapping[str, Any],
    request: RequestSignals,
    policy: ConsentPolicy,
    readers: Sequence[Reader] = READERS,
    *,
    stored: StoredConsent | None = None,
    event_time: datetime | None = None,
    now: datetime | None = None,
) -> ConsentState:
    """Every signal of an event and its request, merged under the policy.

    Stored consent (``stored``) is used when the event carries no CMP choice; when the event
    does carry one, only a stored withdrawal newer than the event counts, and it wins. A stored
    record older than ``max_age_days`` is expired: without another choice, nothing is granted
    (``consent_expired``).
    """
    readings: list[SignalReading] = []
    unparseable: list[Signal] = []
    consent = context.get("consent")
    consent_keys = consent.keys() if isinstance(consent, dict) else frozenset()
    for reader in readers:
        if reader.consent_keys.isdisjoint(consent_keys) and reader.context_keys.isdisjoint(context):
            continue
        try:
            reading = reader.extract(context, policy)
        except DecodeError:
            unparseable.append(reader.signal)
            continue
        if reading is not None:
            readings.append(reading)
    if request.gpc and not any(r.gpc for r in readings):
        readings.append(gpc_reading(policy))
    expired = False
    if stored is not None:
        has_choice = any(r.cmp for r in readings) or bool(unparseable)
        limit = timedelta(days=policy.max_age_days)
        if now is not None and stored.updated_at < now - limit:
            expired = not has_choice
        elif not has_choice:
            readings.append(stored_reading(stored))
        elif event_time is not None and stored.updated_at > event_time:
            readings.append(withdrawal_reading(stored))
    return merge(readings, unparseable, policy, region_of(context, request), expired=expired)


def stored_reading(stored: StoredConsent) -> SignalReading:
    """A stored record as a CMP choice."""
    reading = SignalReading(Signal.STORED)
    for category in stored.granted:
        reading.vote(category, True)
    for category in stored.denied:
        reading.vote(category, False)
    return reading


def withdrawal_reading(stored: StoredConsent) -> SignalReading:
    """Only the denials of a stored record newer than the event: they win."""
    reading = SignalReading(Signal.STORED, deny_reason=DenyReason.CONSENT_WITHDRAWN)
    for category in stored.denied:
        reading.vote(category, False)
    return reading
