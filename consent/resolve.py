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
from typing import Any

from consent.errors import DecodeError
from consent.model import ConsentState, DenyReason, Signal
from consent.policy import ConsentPolicy, Missing
from consent.signals import EXTRACTORS, Extractor, SignalReading, gpc_reading


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
) -> ConsentState:
    """Merge signal readings into one state; denials win, absence falls to the policy."""
    granted: set[str] = set()
    denied_by: dict[str, DenyReason] = {}
    vendor_consents: frozenset[int] | None = None
    for reading in readings:
        for category, vote in reading.votes.items():
            if vote:
                granted.add(category)
            elif category not in denied_by:
                denied_by[category] = reading.deny_reason
        if reading.vendor_consents is not None:
            vendor_consents = reading.vendor_consents
    no_choice = not any(r.cmp for r in readings) and not unparseable
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
        vendor_consents=vendor_consents,
    )


def resolve_consent(
    context: Mapping[str, Any],
    request: RequestSignals,
    policy: ConsentPolicy,
    extractors: Sequence[tuple[Signal, Extractor]] = EXTRACTORS,
) -> ConsentState:
    """Every signal of an event and its request, merged under the policy."""
    readings: list[SignalReading] = []
    unparseable: list[Signal] = []
    for signal, extract in extractors:
        try:
            reading = extract(context, policy)
        except DecodeError:
            unparseable.append(signal)
            continue
        if reading is not None:
            readings.append(reading)
    if request.gpc and not any(r.gpc for r in readings):
        readings.append(gpc_reading(policy))
    return merge(readings, unparseable, policy, region_of(context, request))
