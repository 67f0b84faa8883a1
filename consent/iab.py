"""Readers for IAB strings, Google Consent Mode and OneTrust, on top of the pure decoders.

Where each signal is read from the event's ``context``:

- TCF v2: ``context.consent.tcString`` (also ``tcfString``, ``gdpr_consent``), or
  ``context.gdpr_consent``; skipped when ``gdprApplies`` is explicitly false. A category is
  granted when every TCF purpose mapped to it is consented, denied otherwise.
- GPP: ``context.consent.gppString`` (also ``gpp``) with optional ``gppSid`` / ``gpp_sid``.
  A US opt-out (sale, sharing, targeted ads) denies ``us_opt_out_denies``; its GPC flag counts
  as GPC; an embedded tcfeuv2 section is read like a TC string.
- US Privacy: ``context.consent.usPrivacy`` (also ``us_privacy``), or ``context.us_privacy``.
- Consent Mode: ``context.consent.googleConsentMode`` mapped through ``mappings.google``.
- OneTrust: ``context.consent.oneTrust`` / ``onetrustGroups`` / ``OptanonConsent`` /
  ``OnetrustActiveGroups`` (cookie value, ``C0001:1,...`` list or ``,C0001,`` active groups),
  ids mapped through ``mappings.ids``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from consent.errors import CMPFormatError, GPPStringError
from consent.gcm import decode_consent_mode
from consent.gpp import GPPString, decode_gpp_sid, decode_gpp_string, us_opt_outs
from consent.gpp_sections import TcfEuV2Section
from consent.model import DenyReason, Signal
from consent.onetrust import decode_onetrust_groups
from consent.policy import ConsentPolicy
from consent.signals import SignalReading
from consent.tcf import TCString, decode_tc_string, purposes_consented
from consent.usp import decode_us_privacy

# The same person's strings arrive again and again: decode each distinct string once. The
# decoders are pure and their results immutable, so sharing them is safe; invalid strings raise
# and are not cached.
_decode_tc = functools.lru_cache(maxsize=4096)(decode_tc_string)
_decode_gpp = functools.lru_cache(maxsize=4096)(decode_gpp_string)


def _first(mapping: Mapping[str, Any] | None, names: Iterable[str]) -> Any:
    if mapping is None:
        return None
    for name in names:
        value = mapping.get(name)
        if value is not None and value != "":
            return value
    return None


def _consent(context: Mapping[str, Any]) -> Mapping[str, Any] | None:
    consent = context.get("consent")
    if type(consent) is dict:  # no ABC check (Python code) for the usual case
        return consent
    return consent if isinstance(consent, Mapping) else None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CMPFormatError("bad_format", f"{what} must be a string")
    return value


def tcf_reading(tc: TCString, policy: ConsentPolicy, signal: Signal = Signal.TCF) -> SignalReading:
    """Category votes of a decoded TC string under the ``mappings.tcf`` table."""
    reading = SignalReading(signal, tcf=tc)
    for category, purposes in policy.tcf.items():
        if purposes:
            reading.vote(category, purposes_consented(tc, purposes))
    return reading


def read_tcf(context: Mapping[str, Any], policy: ConsentPolicy) -> SignalReading | None:
    """IAB TCF v2.2/v2.3 TC string."""
    consent = _consent(context)
    value = _first(consent, ("tcString", "tcfString", "gdpr_consent")) or context.get(
        "gdpr_consent"
    )
    if value is None:
        return None
    applies = _first(consent, ("gdprApplies", "gdpr"))
    if applies is False or applies == 0:
        return None
    return tcf_reading(_decode_tc(_text(value, "tcString")), policy)


def _gpp_sid(consent: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    value = _first(consent, ("gppSid", "gpp_sid", "applicableSections"))
    if value is None:
        return None
    if isinstance(value, str):
        return decode_gpp_sid(value)
    if isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return tuple(v for v in value if v > 0)
    raise GPPStringError("bad_sid", "gppSid must be a list of section ids or a string")


def _opt_out_reading(signal: Signal, policy: ConsentPolicy) -> SignalReading:
    reading = SignalReading(signal, deny_reason=DenyReason.US_OPT_OUT, us_opt_out=True, cmp=False)
    for category in policy.us_opt_out_denies:
        reading.vote(category, False)
    return reading


def read_gpp(context: Mapping[str, Any], policy: ConsentPolicy) -> SignalReading | None:
    """IAB GPP: US opt-outs, its GPC sub-section, and an embedded TC string."""
    consent = _consent(context)
    value = _first(consent, ("gppString", "gpp"))
    if value is None:
        return None
    gpp = _decode_gpp(_text(value, "gppString"))
    sid = _gpp_sid(consent)
    applicable = set(gpp.applicable_section_ids(sid))
    tcf = _embedded_tcf(gpp, applicable)
    if tcf is not None:
        reading = tcf_reading(tcf, policy, Signal.GPP)
    else:
        reading = SignalReading(Signal.GPP, cmp=False)
    outs = us_opt_outs(gpp, sid)
    if outs.any_opt_out or outs.undecoded:
        opted = _opt_out_reading(Signal.GPP, policy)
        for category, vote in opted.votes.items():
            if category not in reading.votes or not vote:
                reading.votes[category] = vote
        reading.deny_reason = DenyReason.US_OPT_OUT if tcf is None else reading.deny_reason
        reading.us_opt_out = True
    if outs.gpc:
        reading.gpc = True
    return reading


def _embedded_tcf(gpp: GPPString, applicable: set[int]) -> TCString | None:
    section = gpp.section(2)
    if not isinstance(section, TcfEuV2Section) or (applicable and 2 not in applicable):
        return None
    return _decode_tc(section.tc_string)


def read_us_privacy(context: Mapping[str, Any], policy: ConsentPolicy) -> SignalReading | None:
    """IAB US Privacy string (``1YYN``): an opt-out of sale denies ``us_opt_out_denies``."""
    value = _first(_consent(context), ("usPrivacy", "us_privacy", "uspString")) or context.get(
        "us_privacy"
    )
    if value is None:
        return None
    usp = decode_us_privacy(_text(value, "usPrivacy"))
    if usp.opted_out_of_sale:
        return _opt_out_reading(Signal.US_PRIVACY, policy)
    return SignalReading(Signal.US_PRIVACY, cmp=False)


def read_consent_mode(context: Mapping[str, Any], policy: ConsentPolicy) -> SignalReading | None:
    """Google Consent Mode types mapped through ``mappings.google``."""
    value = _first(_consent(context), ("googleConsentMode", "consentMode", "gcm"))
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise CMPFormatError("bad_format", "googleConsentMode must be an object")
    mode = decode_consent_mode(value)
    reading = SignalReading(Signal.CONSENT_MODE)
    for consent_type, category in policy.google.items():
        status = mode.status(consent_type)
        if status is not None:
            reading.vote(category, status)
    return reading


def read_onetrust(context: Mapping[str, Any], policy: ConsentPolicy) -> SignalReading | None:
    """OneTrust groups (cookie, flag list or active groups) mapped through ``mappings.ids``."""
    value = _first(
        _consent(context),
        ("oneTrust", "onetrust", "onetrustGroups", "OptanonConsent", "OnetrustActiveGroups"),
    )
    if value is None:
        return None
    reading = SignalReading(Signal.ONETRUST)
    for group, granted in decode_onetrust_groups(_text(value, "OneTrust groups")).items():
        reading.vote(policy.category_of(group), granted)
    return reading
