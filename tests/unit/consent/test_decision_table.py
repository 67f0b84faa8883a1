"""The documented decision for every signal kind: granted, denied, missing, malformed.

Three destinations: one requiring ``analytics``, one ``advertising``, one nothing. Opt-out
signals (GPP, US Privacy, GPC) are read in an opt-out region (``missing: allow``), where they
are what decides; CMP choices are read under the default ``missing: deny``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from consent.gpp import decode_gpp_string
from consent.policy import ConsentPolicy, Missing, evaluate
from consent.resolve import RequestSignals, resolve_consent
from tests.unit.consent.gpp_encoder import encode_gpp, encode_usnat
from tests.unit.consent.tcf_encoder import encode_tc_string
from tests.unit.consent.test_gpp import USNAT_ALL_SET
from tests.unit.consent.test_tcf import BASE

POLICY = ConsentPolicy(
    ids={"C0001": "necessary", "C0002": "analytics", "C0004": "advertising"},
    tcf={"analytics": (1, 8, 9, 10), "advertising": (1, 2, 3, 4, 7)},
    google={
        "analytics_storage": "analytics",
        "ad_storage": "advertising",
        "ad_user_data": "advertising",
        "ad_personalization": "personalization",
    },
    regions={"US": Missing.ALLOW},
)

TC_ALL = encode_tc_string(dataclasses.replace(BASE, purpose_consents=frozenset(range(1, 11))))
TC_NONE = encode_tc_string(dataclasses.replace(BASE, purpose_consents=frozenset()))
_USNAT = decode_gpp_string(USNAT_ALL_SET).section(7)
assert _USNAT is not None
GPP_NO_OPT_OUT = encode_gpp(
    [
        (
            7,
            encode_usnat(
                dataclasses.replace(
                    _USNAT,
                    sale_opt_out=2,
                    sharing_opt_out=2,
                    targeted_advertising_opt_out=2,
                    gpc=False,
                )
            ),
        )
    ]
)
GPP_OPT_OUT = encode_gpp([(7, encode_usnat(dataclasses.replace(_USNAT, gpc=False)))])

US = {"location": {"country": "US"}}
D = "deliver"

CASES: list[tuple[str, dict[str, Any], bool, tuple[str, str, str]]] = [
    # (case, context, Sec-GPC header, (analytics, advertising, nothing))
    (
        "segment granted",
        {"consent": {"categoryPreferences": {"C0002": True, "C0004": True}}},
        False,
        (D, D, D),
    ),
    (
        "segment denied",
        {"consent": {"categoryPreferences": {"C0002": False, "C0004": False}}},
        False,
        ("category_denied", "category_denied", D),
    ),
    (
        "segment empty",
        {"consent": {"categoryPreferences": {}}},
        False,
        ("no_consent", "no_consent", D),
    ),
    (
        "segment malformed",
        {"consent": {"categoryPreferences": ["C0002"]}},
        False,
        ("consent_unparseable", "consent_unparseable", D),
    ),
    (
        "rudderstack granted",
        {"consentManagement": {"allowedConsentIds": ["C0002", "C0004"]}},
        False,
        (D, D, D),
    ),
    (
        "rudderstack denied",
        {"consentManagement": {"allowedConsentIds": ["C0002"], "deniedConsentIds": ["C0004"]}},
        False,
        (D, "category_denied", D),
    ),
    (
        "rudderstack malformed",
        {"consentManagement": {"deniedConsentIds": "C0004"}},
        False,
        ("consent_unparseable", "consent_unparseable", D),
    ),
    ("onetrust granted", {"consent": {"oneTrust": "C0001:1,C0002:1,C0004:1"}}, False, (D, D, D)),
    (
        "onetrust active groups",
        {"consent": {"OnetrustActiveGroups": ",C0001,C0002,"}},
        False,
        (D, "no_consent", D),
    ),
    (
        "onetrust denied",
        {"consent": {"oneTrust": "C0002:0,C0004:0"}},
        False,
        ("category_denied", "category_denied", D),
    ),
    (
        "onetrust malformed",
        {"consent": {"oneTrust": "C0002:maybe"}},
        False,
        ("consent_unparseable", "consent_unparseable", D),
    ),
    ("tcf granted", {"consent": {"tcString": TC_ALL}}, False, (D, D, D)),
    (
        "tcf denied",
        {"consent": {"tcString": TC_NONE}},
        False,
        ("category_denied", "category_denied", D),
    ),
    (
        "tcf malformed",
        {"consent": {"tcString": "CPSG_8A!!not-base64"}},
        False,
        ("consent_unparseable", "consent_unparseable", D),
    ),
    (
        "tcf not applicable",
        {"consent": {"tcString": TC_NONE, "gdprApplies": False}},
        False,
        ("no_consent", "no_consent", D),
    ),
    (
        "consent mode granted",
        {
            "consent": {
                "googleConsentMode": {
                    "analytics_storage": "granted",
                    "ad_storage": "granted",
                    "ad_user_data": "granted",
                }
            }
        },
        False,
        (D, D, D),
    ),
    (
        "consent mode denied",
        {"consent": {"googleConsentMode": {"analytics_storage": "denied", "ad_storage": "denied"}}},
        False,
        ("category_denied", "category_denied", D),
    ),
    (
        "consent mode malformed",
        {"consent": {"googleConsentMode": {"analytics_storage": "maybe"}}},
        False,
        ("consent_unparseable", "consent_unparseable", D),
    ),
    ("nothing at all", {}, False, ("no_consent", "no_consent", D)),
    ("gpp no opt-out, US", {**US, "consent": {"gppString": GPP_NO_OPT_OUT}}, False, (D, D, D)),
    ("gpp opt-out, US", {**US, "consent": {"gppString": GPP_OPT_OUT}}, False, (D, "us_opt_out", D)),
    (
        "gpp malformed, US",
        {**US, "consent": {"gppString": "DBABM~@@@"}},
        False,
        ("consent_unparseable", "consent_unparseable", D),
    ),
    ("us privacy no opt-out, US", {**US, "consent": {"usPrivacy": "1YNN"}}, False, (D, D, D)),
    (
        "us privacy opt-out, US",
        {**US, "consent": {"usPrivacy": "1YYN"}},
        False,
        (D, "us_opt_out", D),
    ),
    (
        "us privacy malformed, US",
        {**US, "consent": {"usPrivacy": "2XYZ"}},
        False,
        ("consent_unparseable", "consent_unparseable", D),
    ),
    ("nothing, US", US, False, (D, D, D)),
    ("gpc header, US", US, True, (D, "gpc_opt_out", D)),
    ("gpc flag, US", {**US, "consent": {"gpc": True}}, False, (D, "gpc_opt_out", D)),
    ("gpc flag not exactly true, US", {**US, "consent": {"gpc": "1"}}, False, (D, D, D)),
    (
        "gpc overrides a CMP grant",
        {"consent": {"categoryPreferences": {"C0002": True, "C0004": True}}},
        True,
        (D, "gpc_opt_out", D),
    ),
    (
        "denial wins across signals",
        {
            "consent": {
                "categoryPreferences": {"C0002": True},
                "usPrivacy": "1YNN",
                "googleConsentMode": {"analytics_storage": "denied"},
            }
        },
        False,
        ("category_denied", "no_consent", D),
    ),
]


@pytest.mark.parametrize(("case", "context", "gpc", "expected"), CASES, ids=[c[0] for c in CASES])
def test_signal_gives_documented_decision(
    case: str, context: dict[str, Any], gpc: bool, expected: tuple[str, str, str]
) -> None:
    """Each signal state gives the documented decision for three kinds of destination."""
    del case
    state = resolve_consent(context, RequestSignals(gpc=gpc), POLICY)
    decisions = []
    for requires in (["analytics"], ["advertising"], []):
        verdict = evaluate(state, requires)
        decisions.append("deliver" if verdict.allowed else str(verdict.reason))
    assert tuple(decisions) == expected
