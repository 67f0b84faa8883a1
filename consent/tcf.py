"""IAB TCF v2 (v2.2 / v2.3) TC strings: a pure decoder and the two checks routing needs.

Layout and rules follow ``consent-standards.md`` section 1 (the IAB "Consent string and vendor
list formats v2" spec, with field widths checked against iabtcf-es). ``decode_tc_string`` either
returns a ``TCString`` that satisfies every rule below or raises ``TCStringError(code, message)``;
no other exception escapes for any ``str`` input, and no message contains the string.

Structural errors are raised where the reader meets them, left to right; the last three rules
run on the fully read string, in the order listed:

=================================  ===============================================================
Code                               Meaning
=================================  ===============================================================
``empty``                          the string is empty
``too_long``                       longer than ``MAX_TC_STRING_CHARS``
``bad_base64``                     a character outside base64url, or more than two trailing ``=``
``bad_version``                    the core segment's Version is not 2 (v1.1 strings start ``B``)
``truncated``                      a field runs past the end of its segment, or a segment is empty
``bad_vendor_id``                  a range entry names vendor 0, or a single id past MaxVendorId
``bad_range``                      a range ends before it starts, or past MaxVendorId
``bad_language``                   ConsentLanguage is not two letters A-Z
``bad_country``                    PublisherCC is not two letters A-Z
``too_large``                      the sets would hold more than ``MAX_VENDOR_IDS`` ids in total
``duplicate_segment``              an optional segment type appears twice (or a second core)
``outdated_policy_version``        TcfPolicyVersion < 4 on a string created after 2023-09-30
``not_service_specific``           IsServiceSpecific is 0 ("considered invalid" by the spec)
``forbidden_legitimate_interest``  TcfPolicyVersion >= 4 with LI set for purposes 3, 4, 5 or 6
=================================  ===============================================================

``NumPubRestrictions`` is required even when it is 0 (the spec says so), so a string cut off
after the vendor LI section is ``truncated``: reading it as "no restrictions" would fail open.
Optional segments may come in any order. AllowedVendors (type 2, deprecated) is checked and
dropped; segment types 4-7 are undefined and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import NamedTuple

from consent.errors import TCStringError
from consent.tcf_bits import (
    MAX_VENDOR_ID,
    BitReader,
    IdBudget,
    expand_ranges,
    read_range_entries,
    read_vendor_section,
    segment_bits,
)

TCF_VERSION = 2
MAX_TC_STRING_CHARS = 64 * 1024
"""Far above any real string: a bit field for every 16-bit vendor id is under 11,000 chars."""
MAX_VENDOR_IDS = 1 << 18
"""Total vendor ids one decode may materialise (four full 16-bit sections)."""
POLICY_VERSION_TCF_2_2 = 4
"""TCF 2.2 raised TcfPolicyVersion to 4; 2.3 strings carry 5."""
POLICY_4_DEADLINE = datetime(2023, 10, 1, tzinfo=UTC)
"""Spec: "Post 30 September 2023 a TC String created with a policy version set to smaller than 4
will be deemed invalid." """
NO_LEGITIMATE_INTEREST_PURPOSES = frozenset({3, 4, 5, 6})
"""TCF 2.2 removed legitimate interest as a legal basis for these purposes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DECISECOND = timedelta(milliseconds=100)
_CORE, _DISCLOSED_VENDORS, _ALLOWED_VENDORS, _PUBLISHER_TC = 0, 1, 2, 3


class RestrictionType(IntEnum):
    """A publisher restriction's 2-bit type."""

    NOT_ALLOWED = 0
    REQUIRE_CONSENT = 1
    REQUIRE_LEGITIMATE_INTEREST = 2
    UNDEFINED = 3


_BLOCKS_CONSENT_BASIS = frozenset(
    {RestrictionType.NOT_ALLOWED, RestrictionType.REQUIRE_LEGITIMATE_INTEREST}
)
"""Restriction types under which a vendor may not process a purpose on the consent basis."""


class PublisherRestriction(NamedTuple):
    """The vendors a publisher restricts for one purpose. Entries sharing a key are merged."""

    purpose_id: int
    restriction_type: RestrictionType
    vendor_ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class PublisherTC:
    """The optional Publisher TC segment: the publisher's own legal bases.

    Custom purposes are numbered from 1 up to ``num_custom_purposes``.
    """

    purpose_consents: frozenset[int]
    purpose_legitimate_interests: frozenset[int]
    num_custom_purposes: int
    custom_purpose_consents: frozenset[int]
    custom_purpose_legitimate_interests: frozenset[int]


@dataclass(frozen=True, slots=True)
class TCString:
    """A decoded, valid TC string. Ids in the sets are 1-based purposes, features or vendors.

    ``disclosed_vendors`` and ``publisher_tc`` are ``None`` when their segment is absent.
    ``publisher_restrictions`` is sorted by ``(purpose_id, restriction_type)``.
    """

    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    tcf_policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_optins: frozenset[int]
    purpose_consents: frozenset[int]
    purpose_legitimate_interests: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: frozenset[int]
    vendor_legitimate_interests: frozenset[int]
    publisher_restrictions: tuple[PublisherRestriction, ...]
    disclosed_vendors: frozenset[int] | None
    publisher_tc: PublisherTC | None


def decode_tc_string(text: str) -> TCString:
    """Decode and validate a TC string (the ``gdpr_consent`` value); see the module docstring."""
    if not text:
        raise TCStringError("empty", "the TC string is empty")
    if len(text) > MAX_TC_STRING_CHARS:
        raise TCStringError(
            "too_long", f"the TC string is longer than {MAX_TC_STRING_CHARS} characters"
        )
    core_text, *optional_texts = text.split(".")
    core = BitReader(segment_bits(core_text))
    version = core.read_int(6, "Version")
    if version != TCF_VERSION:
        raise TCStringError("bad_version", f"version {version} is not TCF v2")
    budget = IdBudget(MAX_VENDOR_IDS)
    created = _read_time(core, "Created")
    last_updated = _read_time(core, "LastUpdated")
    cmp_id = core.read_int(12, "CmpId")
    cmp_version = core.read_int(12, "CmpVersion")
    consent_screen = core.read_int(6, "ConsentScreen")
    consent_language = core.read_letters("ConsentLanguage", "bad_language")
    vendor_list_version = core.read_int(12, "VendorListVersion")
    tcf_policy_version = core.read_int(6, "TcfPolicyVersion")
    is_service_specific = core.read_flag("IsServiceSpecific")
    use_non_standard_texts = core.read_flag("UseNonStandardTexts")
    special_feature_optins = core.read_id_set(12, "SpecialFeatureOptIns")
    purpose_consents = core.read_id_set(24, "PurposesConsent")
    purpose_legitimate_interests = core.read_id_set(24, "PurposesLITransparency")
    purpose_one_treatment = core.read_flag("PurposeOneTreatment")
    publisher_cc = core.read_letters("PublisherCC", "bad_country")
    vendor_consents = read_vendor_section(core, "VendorConsents", budget)
    vendor_legitimate_interests = read_vendor_section(core, "VendorLegitimateInterests", budget)
    publisher_restrictions = _read_publisher_restrictions(core, budget)

    disclosed_vendors: frozenset[int] | None = None
    publisher_tc: PublisherTC | None = None
    seen = {_CORE}
    for segment_text in optional_texts:
        segment = BitReader(segment_bits(segment_text))
        segment_type = segment.read_int(3, "SegmentType")
        if segment_type in seen:
            raise TCStringError("duplicate_segment", f"segment type {segment_type} appears twice")
        seen.add(segment_type)
        if segment_type == _DISCLOSED_VENDORS:
            disclosed_vendors = read_vendor_section(segment, "DisclosedVendors", budget)
        elif segment_type == _ALLOWED_VENDORS:
            read_vendor_section(segment, "AllowedVendors", budget)
        elif segment_type == _PUBLISHER_TC:
            publisher_tc = _read_publisher_tc(segment)

    tc = TCString(
        version=version,
        created=created,
        last_updated=last_updated,
        cmp_id=cmp_id,
        cmp_version=cmp_version,
        consent_screen=consent_screen,
        consent_language=consent_language,
        vendor_list_version=vendor_list_version,
        tcf_policy_version=tcf_policy_version,
        is_service_specific=is_service_specific,
        use_non_standard_texts=use_non_standard_texts,
        special_feature_optins=special_feature_optins,
        purpose_consents=purpose_consents,
        purpose_legitimate_interests=purpose_legitimate_interests,
        purpose_one_treatment=purpose_one_treatment,
        publisher_cc=publisher_cc,
        vendor_consents=vendor_consents,
        vendor_legitimate_interests=vendor_legitimate_interests,
        publisher_restrictions=publisher_restrictions,
        disclosed_vendors=disclosed_vendors,
        publisher_tc=publisher_tc,
    )
    _check_validity(tc)
    return tc


def purposes_consented(tc: TCString, purposes: Iterable[int]) -> bool:
    """True when the user consented to every purpose in ``purposes``.

    An empty ``purposes`` is vacuously true: a destination's policy must name the purposes it
    needs. Ids outside 1-24 are never consented.
    """
    return frozenset(purposes) <= tc.purpose_consents


def vendor_allowed(tc: TCString, vendor_id: int, purposes: Iterable[int]) -> bool:
    """True when ``vendor_id`` may process for every purpose in ``purposes`` on a consent basis.

    The rule of consent-standards.md section 1.7 without the GVL, assuming the vendor relies on
    consent: the purposes are consented, the vendor is consented, and no publisher restriction
    for one of the purposes names the vendor with type NOT_ALLOWED, or with type
    REQUIRE_LEGITIMATE_INTEREST (which rules the consent basis out). Legitimate interest is
    never used, so purpose 1 and, under policy 4+, purposes 3-6 can only pass with consent.
    """
    wanted = frozenset(purposes)
    if vendor_id not in tc.vendor_consents or not wanted <= tc.purpose_consents:
        return False
    return not any(
        restriction.purpose_id in wanted
        and restriction.restriction_type in _BLOCKS_CONSENT_BASIS
        and vendor_id in restriction.vendor_ids
        for restriction in tc.publisher_restrictions
    )


def _read_time(reader: BitReader, field: str) -> datetime:
    """A 36-bit count of deciseconds since the Unix epoch, as an aware UTC datetime."""
    return _EPOCH + reader.read_int(36, field) * _DECISECOND


def _read_publisher_restrictions(
    reader: BitReader, budget: IdBudget
) -> tuple[PublisherRestriction, ...]:
    """``NumPubRestrictions`` then, for each, PurposeId, RestrictionType and range entries."""
    count = reader.read_int(12, "NumPubRestrictions")
    entries_by_key: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for _ in range(count):
        purpose_id = reader.read_int(6, "PubRestriction.PurposeId")
        restriction_type = reader.read_int(2, "PubRestriction.RestrictionType")
        entries = read_range_entries(reader, "PubRestriction", MAX_VENDOR_ID)
        entries_by_key.setdefault((purpose_id, restriction_type), []).extend(entries)
    return tuple(
        PublisherRestriction(purpose_id, RestrictionType(kind), expand_ranges(entries, budget))
        for (purpose_id, kind), entries in sorted(entries_by_key.items())
    )


def _read_publisher_tc(reader: BitReader) -> PublisherTC:
    """The Publisher TC segment after its SegmentType (section 1.5)."""
    purpose_consents = reader.read_id_set(24, "PubPurposesConsent")
    purpose_legitimate_interests = reader.read_id_set(24, "PubPurposesLITransparency")
    num_custom_purposes = reader.read_int(6, "NumCustomPurposes")
    custom_consents = reader.read_id_set(num_custom_purposes, "CustomPurposesConsent")
    custom_legitimate_interests = reader.read_id_set(
        num_custom_purposes, "CustomPurposesLITransparency"
    )
    return PublisherTC(
        purpose_consents=purpose_consents,
        purpose_legitimate_interests=purpose_legitimate_interests,
        num_custom_purposes=num_custom_purposes,
        custom_purpose_consents=custom_consents,
        custom_purpose_legitimate_interests=custom_legitimate_interests,
    )


def _check_validity(tc: TCString) -> None:
    """The spec's validity rules that need the decoded fields (section 1.7)."""
    if tc.tcf_policy_version < POLICY_VERSION_TCF_2_2 and tc.created >= POLICY_4_DEADLINE:
        raise TCStringError(
            "outdated_policy_version",
            f"policy version {tc.tcf_policy_version} on a string created after 2023-09-30",
        )
    if not tc.is_service_specific:
        raise TCStringError("not_service_specific", "IsServiceSpecific is 0 (global scope)")
    if tc.tcf_policy_version >= POLICY_VERSION_TCF_2_2:
        forbidden = sorted(tc.purpose_legitimate_interests & NO_LEGITIMATE_INTEREST_PURPOSES)
        if forbidden:
            raise TCStringError(
                "forbidden_legitimate_interest",
                f"policy version {tc.tcf_policy_version} sets legitimate interest for purposes "
                f"{forbidden}",
            )
