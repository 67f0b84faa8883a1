"""Tests for consent.tcf: real TC strings from public test suites, round trips through a
test-only encoder, validity rules, hostile input, and the routing helpers."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.errors import TCStringError
from consent.tcf import (
    MAX_TC_STRING_CHARS,
    POLICY_4_DEADLINE,
    PublisherRestriction,
    PublisherTC,
    RestrictionType,
    TCString,
    decode_tc_string,
    purposes_consented,
    vendor_allowed,
)
from consent.tcf_bits import BASE64URL_ALPHABET, MAX_VENDOR_ID
from tests.unit.consent.tcf_encoder import (
    DECISECOND,
    EPOCH,
    BitWriter,
    VendorEncoding,
    encode_core,
    encode_segments,
    encode_tc_string,
    encode_vendor_segment,
    write_core_header,
    write_range_entries,
    write_vendor_section,
)

# --------------------------------------------------------------------------------------------
# Real vectors. Each names the repository, file and commit it was taken from; the asserted
# values are the ones that file asserts (or, where marked, what it documents in a comment).
# --------------------------------------------------------------------------------------------

# travelaudience/go-iabtcf parse_test.go @337fc46b4e95b2138dde8606a89b0a13b9edcb79, case "v2"
# (TCF 2.2, policy 4, bit-field vendors, MaxVendorId 4202). Its two runs of 484 'A' are written
# as repetitions; the test's wantVendors bit string pins vendors 1, 42, 423, 4176 and 4202.
GO_IABTCF_V2 = (
    "CP9Qr_AP9Qr_AAfETDFRAwEsAP_gAEPgAAigg1NX_H__bX9v-Xr36ft0eY1f99j77uQxBhfJs-4FzLvW_JwX32EzNE36"
    "tqYKmRIEu3bBIQFtHJnUTVihaogVrzHsYkGchTNKJ-BkiHMRe2dYCF5vmYtj-QKZ5_p_d3f52T_9_dv-3dzzz91nv3f9"
    "f-f1eLida59tH_v_bRKb-_If9_7-_4v0_t_rk2_eTVv_9evv79-u_t____9_9____4"
    + "A"
    * 484
    + "QAAAEQamr_j__tr-3_L179P26PMav--x993IYgwvk2fcC5l3rfk4L77CZmib9W1MFTIkCXbtgkIC2jkzqJqxQtUQK1"
    "5j2MSDOQpmlE_AyRDmIvbOsBC83zMWx_IFM8_0_u7v87J_-_u3_bu555-6z37v-v_P6vFxOtc-2j_3_tolN_fkP-_9_f"
    "8X6f2_1ybfvJq3_-vX39-_Xf2____-_-____8" + "A" * 484 + "IAAACAA"
)
GO_IABTCF_V2_VENDOR_BITS = (
    "11010101111111110001111111111111110110110101111111011011111111100101111010111101111110100111"
    "11101101110100011110011000110101011111111101111101100011111011111011101110010000110001000001"
    "10000101111100100110110011111011100000010111001100101110111101011011111100100111000001011111"
    "01111101100001001100110011010001001101111110101011011010100110000010101001100100010010000001"
    "00101110110111011011000001001000010000000101101101000111001001100111010100010011010101100010"
    "10000101101010100010000001010110101111001100011110110001100010010000011001110010000101001100"
    "11010010100010011111100000011001001000100001110011000100010111101101100111010110000000100001"
    "01111001101111100110011000101101100011111110010000001010011001111001111111101001111111011101"
    "11011101111111100111011001001111111111110111111101110110111111111011011101110111001111001111"
    "00111111011101011001111011111101110111111111010111111111100111111101010111100010111000100111"
    "01011010111001111101101101000111111111101111111111011011010001001010011011111110111111001000"
    "01111111110111111111101111111011111111100010111111010011111110110111111110101110010011011011"
    "11110111100100110101011011111111111111010111101011111011111110111111011111101011101111111011"
    "0111111111111111111111111111110111111111110111111111111111111111111111100000"
)

# LiveRamp/iabconsent v2_parsed_consent_fixture_test.go @32e22836314d587e38c59f220677dac646414d22
LIVERAMP_RANGE_WITH_RESTRICTIONS = (
    "COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA"
)
LIVERAMP_BITFIELD_720 = (
    "COvzTO5OvzTO5BZAFMENAPCgAAAAAAAAAAwIFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAA"
    "AAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUwLQIoghAAQhhARggACAIAAAAcQ"
    "AAEAQAAAAgAQBAIAAEIAAAABAAgCAAAAAAAMCABAAAAAAAAKAAIEAABAAAgAiAIgAAAAASAAQABAAAAwgIAAAhMBACFuy"
    "AxmpgAA"
)
LIVERAMP_BITFIELD_720_VENDORS = frozenset(
    {
        *(2, 6, 8, 12, 18, 23, 37, 42, 47, 48, 53, 61, 65, 66, 72, 88, 98, 127, 128, 129, 133),
        *(153, 163, 192, 205, 215, 224, 243, 248, 281, 294, 304, 350, 351, 358, 371, 422, 424),
        *(440, 447, 467, 486, 498, 502, 512, 516, 553, 556, 571, 587, 612, 613, 618, 626, 648),
        *(653, 656, 657, 665, 676, 681, 683, 684, 686, 687, 688, 690, 691, 694, 702, 703, 707),
        *(708, 711, 712, 714, 716, 719, 720),
    }
)
# Same file, "Valid TCF v2.2" fixture: it decodes there, but its IsServiceSpecific is false.
LIVERAMP_GLOBAL_SCOPE_V22 = "COvzTO5OvzTO5B7ABCENAPEYAIAAAIAAAIqIAAoAAoAA.QAAo.IAAo"

# prebid/go-gdpr vendorconsent/tcf2/pubrestrict_test.go @7a6a5ae2fcb8e62633206552f3cf68dd196716dc
PREBID_PUB_RESTRICTIONS = "COwAdDhOwAdDhN4ABAENAPCgAAQAAv___wAAAFP_AAp_4AI6ACACAA"
PREBID_PUB_RESTRICTIONS_2 = (
    "COxPe2TOxPe2TALABAENAPCgAAAAAAAAAAAAAFAAAAoAAA4IACACAIABgACAFA4ADACAAIygAGADwAQBIAIAIB0AEAEB"
    "SACACAA"
)
# prebid/go-gdpr vendorconsent/tcf2/consent_test.go @6752bfee94089c609270939fb2b8a925076b43a3,
# TestParseStringWithDisclosedVendors: documented as "TCF 2.3", but TcfPolicyVersion is 2 and
# Created is 2025-06-03, which the spec deems invalid.
PREBID_POLICY_2_IN_2025 = (
    "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA"
)

# InteractiveAdvertisingBureau/iabtcf-es modules/core/test/ReportedIssues.test.ts
# @05632433c328b0aead5ba3c8af62477108dd4a18, issue 201: a vendor encoded several times.
IABTCF_ES_ISSUE_201 = (
    "CO4VGswO4VGswAfZCBDEAzCsAP_AAH_AAAigGUNf_X9fb2vj-_599_t0eY1f9_63t-wzjheMs-8NyZ-X_J4Wv2MyvB34Jq"
    "QKGRgkunLBAQdtHGncTQgBwIlViTLMY02MjzNKJrJEilsbe2dYGH9vn8XT_ZKZ70-_v__7v3___33_5Ayhr_6_r7e18f3_"
    "Pvv9ujzGr_v_W9v2GccLxln3huTPy_5PC1-xmV4O_BNSBQyMEl05YICDto407iaEAOBEqsSZZjGmxkeZpRNZIkUtjb2zrA"
    "w_t8_i6f7JTPen39___d-___--__ICgKAOAAcAA4AFAAjgB6AEYALcGACAW0AtoJAHAAOAAcACgARwA9ACMAFuFABALaAW"
    "0GgDgAHAAOABQAI4AegBGAC3DgAgFtALaEQBwADgAHAAoAEcAPQAjABbiQAQC2gFtCoA4ABwADgAUACOAHoARgAtxYAIB"
    "bQC2hkAcAA4ABwAKABHAD0AIwAW40AEAtoBbQ6AOAAcAA4AFAAjgB6AEYALceACAW0AtohAHAAOAAcACgARwA9ACMAFuRA"
    "BALaAW0SgDgAHAAOABQAI4AegBGAC3JgAgFtALaKQBwADgAHAAoAEcAPQAjABblQAQC2gFtA"
)
# Same file, issue 142: the DisclosedVendors bit field is shorter than its MaxVendorId.
IABTCF_ES_ISSUE_142 = (
    "CLSYjTaOngnCIAOABBENAXCMAGOAABBAAA7IA5n-m7fP6_3fbqVv6E__PoA5Aqff3aJx8tv_1967rfnQEQoAIAAQCrwkA"
    "EABAcACABIMACAAuApEVABABUSABgBCAVSAtIoACACIArYQAHACgAFgAVwBJgDcAI7AWgMAAgBiKgAgBMgFfKQAQBRkQAQ"
    "A4AFiBAAoA-AEVAJlAVgAtYcACAJcAr4eABAK8OgBgFzAOmAqwgABAWyA.IFukWSQh"
)
# Same file, issue 156: a TCF v1.1 string.
IABTCF_ES_ISSUE_156_V1 = (
    "BOhwdphOxFC7tAHABBFRC--AAAAuhr_7__7-_9_-_f__9uj3Or_v_f__32ccL59v_h_7v-_7fi_20nV4u_1vft9yfk1-5"
    "ctDztp507iakivXmqdeb9v_nz3_5pxP78k89r7337Ew_v8_v-b7BCON_YxEiA"
)

# InteractiveAdvertisingBureau/iabtcf-java
# iabtcf-decoder/src/test/java/com/iabtcf/decoder/TCStringV2Test.java
# @112c268895c2b9d7ee6c26e4fa1a4c688a976bab, testCanParseRangeEncodedVendorLegitimateInterests.
IABTCF_JAVA_RANGE_LI = "COv__-wOv__-wC2AAAENAPCgAAAAAAAAAAAAA_wAQA_gEBABAEAAAA"
# Same file, testCanParseAllParts: all four segment types, `=` padding, global scope.
IABTCF_JAVA_ALL_PARTS = (
    "COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA"
    ".IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA.cAAAAAAAITg="
)

# metacpan/metacpan-cpan-extracted distros/G/GDPR-IAB-TCFv2/t/05-tcf-v23.t
# @72c0e4b6594dbf9a8b6a1f85faf4b6377b28638e (Perl GDPR::IAB::TCFv2): prebid's
# PREBID_PUB_RESTRICTIONS core plus a DisclosedVendors segment, and a policy-5 string with a
# Publisher TC segment.
PERL_WITH_DISCLOSED_VENDORS = (
    PREBID_PUB_RESTRICTIONS + "."
    "ILrtR_G__bXlv-bb36ftkeYxf9_hr7sQxBgbJs24FzLvW7JwX32E7NEzatqYKmRIAu3TBIQNtHJjURVChKIgVrzDsaEy"
    "UoTtKJ-BkiHMRY2NYCFxvm4tjWQCZ5vr_91d9mT-N7dr-2dzyy7hnv3a9_-S1WJidKYetHfv8bBKT-_IU9_x-_4v4_N7"
    "pE2-eS1v_tGvt639-4vP_dpvxt-7yffz____73_e7X__d_______Xf_7____________4AAA"
)
PERL_V23_WITH_PUBLISHER_TC = (
    "CP188cAQKFpAAAHABBENBSFsAP_gAEPgAAiQKqNX_H__bW9r8X73aft0eY1P9_j77uQxBhfJE-4FzLvW_JwXx2ExNA36"
    "tqIKmRIEu3bBIQNlHJHUTVigaogVryHMak2cpTNKJ6BkiFMRM2dYCF5vm4tj-QKY5_r993dx2D-t_dv83dzyz81Hn3f5"
    "_2e0eLCdQ5-tDfv9bROb-9IPd_78v4v8_l_rk2_eT1n_tevr7D_-ft8__XW_9_fff_9Pn_-uB_-_3_vf_EFUwCTDQqIA"
    "-wJCQg0DCKBACoKwgIoFAQAAJA0QEAJgwKdgYALrCRACAFAAMEAIAAQZAAgAAAgAQiACQAoEAAEAgUAAYAEAwEABAwAA"
    "gAsBAIAAQHQMUwIIFAsIEjMioUwIQoEggJbKhBICgQVwhCLPAIgERMFAAgAAAVgACAsFgcSSAlQkECXUG0AABAAgFEIF"
    "Qgk9MAAwJmy1B4MG0ZWmAYPmCRDTAMgCIIyEAAAA.f_wACHwAAAAA"
)


def test_decodes_bit_field_vendor_consents_from_go_iabtcf_vector() -> None:
    """A TCF 2.2 bit-field string decodes to go-iabtcf's expected fields and vendor bits."""
    tc = decode_tc_string(GO_IABTCF_V2)

    assert (tc.version, tc.cmp_id, tc.vendor_list_version, tc.tcf_policy_version) == (2, 31, 48, 4)
    assert tc.purpose_consents == frozenset(range(1, 12))
    assert tc.special_feature_optins == {1, 2}
    assert tc.publisher_cc == "EU"
    expected = {i + 1 for i, bit in enumerate(GO_IABTCF_V2_VENDOR_BITS) if bit == "1"}
    assert tc.vendor_consents == expected | {4176, 4202}
    assert {1, 42, 423, 4202} <= tc.vendor_consents
    assert 41 not in tc.vendor_consents
    assert 4203 not in tc.vendor_consents
    assert tc.purpose_legitimate_interests.isdisjoint({3, 4, 5, 6})


def test_decodes_range_encoded_vendor_consents_from_liveramp_vector() -> None:
    """Range-encoded consents, a bit-field LI section and three restrictions decode."""
    tc = decode_tc_string(LIVERAMP_RANGE_WITH_RESTRICTIONS)

    assert tc.created == datetime(2020, 3, 5, 19, 24, 40, 900_000, tzinfo=UTC)
    assert tc.last_updated == tc.created
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (81, 0, 0)
    assert (tc.consent_language, tc.publisher_cc) == ("EN", "AA")
    assert (tc.vendor_list_version, tc.tcf_policy_version) == (15, 2)
    assert tc.is_service_specific
    assert not tc.use_non_standard_texts
    assert not tc.purpose_one_treatment
    assert tc.special_feature_optins == {1}
    assert tc.purpose_consents == {1, 3, 4, 7}
    assert tc.purpose_legitimate_interests == {3, 4, 5}
    assert tc.vendor_consents == {2, 37, 61}
    assert tc.vendor_legitimate_interests == {2, 6, 8}
    assert tc.publisher_restrictions == (
        PublisherRestriction(1, RestrictionType.REQUIRE_CONSENT, frozenset({123})),
        PublisherRestriction(2, RestrictionType.NOT_ALLOWED, frozenset()),
        PublisherRestriction(3, RestrictionType.REQUIRE_LEGITIMATE_INTEREST, frozenset()),
    )
    assert tc.disclosed_vendors is None
    assert tc.publisher_tc is None


def test_decodes_long_bit_fields_from_liveramp_vector() -> None:
    """Both 720-bit vendor bit fields decode to LiveRamp's expected vendor list."""
    tc = decode_tc_string(LIVERAMP_BITFIELD_720)

    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen, tc.publisher_cc) == (89, 5, 12, "GB")
    assert tc.purpose_consents == frozenset()
    assert tc.vendor_consents == LIVERAMP_BITFIELD_720_VENDORS
    assert tc.vendor_legitimate_interests == LIVERAMP_BITFIELD_720_VENDORS
    assert tc.publisher_restrictions == ()


def test_decodes_publisher_restrictions_from_prebid_vectors() -> None:
    """Restrictions keyed by purpose and type match prebid's CheckPubRestriction cases."""
    first = decode_tc_string(PREBID_PUB_RESTRICTIONS)
    second = decode_tc_string(PREBID_PUB_RESTRICTIONS_2)

    assert (first.cmp_id, first.cmp_version, first.consent_language) == (888, 1, "EN")
    assert first.vendor_list_version == 15
    assert max(first.vendor_consents) == 10
    assert first.publisher_restrictions == (
        PublisherRestriction(7, RestrictionType.REQUIRE_CONSENT, frozenset({32})),
    )
    restrictions = {
        (r.purpose_id, r.restriction_type): r.vendor_ids for r in second.publisher_restrictions
    }
    assert not second.purpose_one_treatment
    assert 32 in restrictions[1, RestrictionType.NOT_ALLOWED]
    assert (1, RestrictionType.REQUIRE_CONSENT) not in restrictions
    assert {5, 11, 32} <= restrictions[2, RestrictionType.NOT_ALLOWED]
    assert restrictions[2, RestrictionType.NOT_ALLOWED].isdisjoint({44, 500})
    assert 32 in restrictions[2, RestrictionType.REQUIRE_CONSENT]
    assert 42 not in restrictions[2, RestrictionType.REQUIRE_CONSENT]


def test_merges_repeated_restriction_entries_from_iabtcf_es_issue_201() -> None:
    """A vendor encoded several times under one restriction appears once."""
    tc = decode_tc_string(IABTCF_ES_ISSUE_201)

    assert tc.version == 2
    by_key = {(r.purpose_id, r.restriction_type): r.vendor_ids for r in tc.publisher_restrictions}
    assert sorted(by_key[1, RestrictionType.REQUIRE_CONSENT]) == [7, 20, 71, 122, 140, 183]
    assert len(by_key) == len(tc.publisher_restrictions)


def test_decodes_range_encoded_vendor_legitimate_interests_from_iabtcf_java() -> None:
    """A range-encoded LI section holding one vendor decodes to that vendor."""
    tc = decode_tc_string(IABTCF_JAVA_RANGE_LI)

    assert tc.vendor_legitimate_interests == {128}


def test_decodes_disclosed_vendors_segment_from_perl_vector() -> None:
    """The DisclosedVendors segment after a core decodes; the core is unchanged."""
    tc = decode_tc_string(PERL_WITH_DISCLOSED_VENDORS)

    assert tc.disclosed_vendors is not None
    assert 284 in tc.disclosed_vendors
    assert 9999 not in tc.disclosed_vendors
    assert replace(tc, disclosed_vendors=None) == decode_tc_string(PREBID_PUB_RESTRICTIONS)


def test_decodes_tcf_2_3_string_with_publisher_tc_from_perl_vector() -> None:
    """A policy-5 string decodes, with vendor LI without consent and a Publisher TC segment."""
    tc = decode_tc_string(PERL_V23_WITH_PUBLISHER_TC)

    assert tc.tcf_policy_version == 5
    assert 46 in tc.vendor_legitimate_interests
    assert 46 not in tc.vendor_consents
    assert tc.publisher_tc is not None
    assert tc.publisher_tc.num_custom_purposes == 0
    assert tc.disclosed_vendors is None


@pytest.mark.parametrize(
    ("text", "code"),
    [
        pytest.param(IABTCF_JAVA_ALL_PARTS, "not_service_specific", id="iabtcf-java-all-parts"),
        pytest.param(LIVERAMP_GLOBAL_SCOPE_V22, "not_service_specific", id="liveramp-v2.2"),
        pytest.param(PREBID_POLICY_2_IN_2025, "outdated_policy_version", id="prebid-2025"),
        pytest.param(IABTCF_ES_ISSUE_142, "truncated", id="iabtcf-es-142"),
        pytest.param(IABTCF_ES_ISSUE_156_V1, "bad_version", id="iabtcf-es-156-v1"),
    ],
)
def test_rejects_invalid_real_strings_with_their_rule(text: str, code: str) -> None:
    """Real strings that break a validity rule raise TCStringError with that rule's code."""
    with pytest.raises(TCStringError) as caught:
        decode_tc_string(text)

    assert caught.value.code == code


# --------------------------------------------------------------------------------------------
# Records built in the tests, encoded with tests/unit/consent/tcf_encoder.py.
# --------------------------------------------------------------------------------------------

BASE = TCString(
    version=2,
    created=datetime(2024, 5, 1, tzinfo=UTC),
    last_updated=datetime(2024, 5, 1, tzinfo=UTC),
    cmp_id=7,
    cmp_version=3,
    consent_screen=1,
    consent_language="EN",
    vendor_list_version=80,
    tcf_policy_version=5,
    is_service_specific=True,
    use_non_standard_texts=False,
    special_feature_optins=frozenset({1}),
    purpose_consents=frozenset({1, 2, 7, 8}),
    purpose_legitimate_interests=frozenset({2, 7}),
    purpose_one_treatment=False,
    publisher_cc="DE",
    vendor_consents=frozenset({1, 2, 3, 10, 755}),
    vendor_legitimate_interests=frozenset({10}),
    publisher_restrictions=(),
    disclosed_vendors=frozenset({1, 2, 3, 10, 755}),
    publisher_tc=None,
)


def _code(text: str) -> str:
    """The code of the TCStringError that decoding ``text`` raises."""
    with pytest.raises(TCStringError) as caught:
        decode_tc_string(text)
    return caught.value.code


def _core_with_consent_section(write_section: BitWriter) -> str:
    """A core segment of ``BASE`` whose vendor consent section is ``write_section``'s bits."""
    writer = BitWriter()
    write_core_header(writer, BASE)
    writer.raw(write_section.bits)
    write_vendor_section(writer, frozenset(), "bitfield")
    writer.uint(0, 12)
    return writer.text()


def _ranges(entries: list[tuple[int, int]], max_vendor_id: int = MAX_VENDOR_ID) -> BitWriter:
    """A range-encoded vendor section with exactly these entries."""
    section = BitWriter().uint(max_vendor_id, 16).flag(True)
    write_range_entries(section, entries)
    return section


def test_decodes_created_and_last_updated_as_utc_deciseconds() -> None:
    """Timestamps keep their decisecond precision and are timezone-aware UTC."""
    moment = EPOCH + 17_000_000_001 * DECISECOND
    tc = decode_tc_string(encode_tc_string(replace(BASE, created=moment, last_updated=moment)))

    assert tc.created == moment
    assert tc.created.tzinfo is UTC
    assert tc.created.microsecond == 100_000


@pytest.mark.parametrize("encoding", ["bitfield", "range"])
def test_round_trips_a_hand_built_record(encoding: VendorEncoding) -> None:
    """A record with restrictions, disclosed vendors and a Publisher TC survives a round trip."""
    record = replace(
        BASE,
        publisher_restrictions=(
            PublisherRestriction(1, RestrictionType.NOT_ALLOWED, frozenset({3, 4, 5, 9})),
            PublisherRestriction(2, RestrictionType.REQUIRE_CONSENT, frozenset({1, 65535})),
        ),
        publisher_tc=PublisherTC(
            purpose_consents=frozenset({1, 24}),
            purpose_legitimate_interests=frozenset({2}),
            num_custom_purposes=3,
            custom_purpose_consents=frozenset({1, 3}),
            custom_purpose_legitimate_interests=frozenset({2}),
        ),
    )

    assert decode_tc_string(encode_tc_string(record, encoding)) == record


def test_ignores_trailing_padding_bits() -> None:
    """Zero bits after the last field (iabtcf-es pads to 24 bits) are ignored."""
    assert decode_tc_string(encode_tc_string(BASE, pad_to=24)) == BASE


def test_accepts_standard_base64_padding_on_any_segment() -> None:
    """Up to two trailing '=' on a segment are tolerated, as iabtcf-java's tests expect."""
    segments = encode_segments(BASE)
    padded = ".".join(segment + "=" * (index + 1) for index, segment in enumerate(segments))

    assert decode_tc_string(padded) == BASE


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda s: s + "===", id="three-equals"),
        pytest.param(lambda s: s[:5] + "=" + s[5:], id="inner-equals"),
        pytest.param(lambda s: s[:5] + "+" + s[6:], id="standard-plus"),
        pytest.param(lambda s: s[:5] + "/" + s[6:], id="standard-slash"),
        pytest.param(lambda s: " " + s, id="leading-space"),
        pytest.param(lambda s: s + "\n", id="trailing-newline"),
        pytest.param(lambda s: s[:5] + "é" + s[6:], id="non-ascii"),
        pytest.param(lambda s: s[:5] + "\x00" + s[6:], id="nul"),
    ],
)
def test_rejects_characters_outside_base64url(mutate: Callable[[str], str]) -> None:
    """Anything but base64url (and trailing padding) is bad_base64."""
    assert _code(mutate(encode_tc_string(BASE))) == "bad_base64"


def test_rejects_empty_string() -> None:
    """The empty string is empty, not a decode of zero bits."""
    assert _code("") == "empty"


def test_rejects_empty_segments_as_truncated() -> None:
    """A segment with no characters cannot hold its type, so it is truncated."""
    core, disclosed = encode_segments(BASE)

    for text in (".", "..", f".{core}", f"{core}.", f"{core}..{disclosed}", f"{core}.=="):
        assert _code(text) == "truncated", text


def test_rejects_input_over_the_length_cap_before_decoding() -> None:
    """Input longer than MAX_TC_STRING_CHARS is too_long, however it is made."""
    assert _code("C" + "A" * MAX_TC_STRING_CHARS) == "too_long"
    assert _code("!" * (MAX_TC_STRING_CHARS + 1)) == "too_long"


@pytest.mark.parametrize("version", [0, 1, 3, 63])
def test_rejects_versions_other_than_2(version: int) -> None:
    """Only TCF v2 core segments decode; v1.1 and unknown versions are bad_version."""
    core = encode_core(BASE, "bitfield")
    patched = BASE64URL_ALPHABET[version] + core[1:]

    assert _code(patched) == "bad_version"


def test_rejects_a_string_that_starts_with_an_optional_segment() -> None:
    """The core must come first; a DisclosedVendors segment first reads as version 8."""
    disclosed = encode_vendor_segment(1, frozenset({1}), "bitfield")

    assert _code(disclosed + "." + encode_core(BASE, "bitfield")) == "bad_version"


def test_decodes_range_encoded_vendor_consents() -> None:
    """Single ids and inclusive ranges expand to the covered vendor ids."""
    text = _core_with_consent_section(_ranges([(3, 3), (10, 12), (700, 701)], 701))

    assert decode_tc_string(text).vendor_consents == {3, 10, 11, 12, 700, 701}


def test_merges_overlapping_and_duplicate_ranges() -> None:
    """Overlapping and repeated entries, as seen in real strings, yield one set."""
    text = _core_with_consent_section(_ranges([(5, 9), (7, 7), (1, 6), (9, 12), (7, 7)], 12))

    assert decode_tc_string(text).vendor_consents == frozenset(range(1, 13))


@pytest.mark.parametrize(
    ("entries", "max_vendor_id", "code"),
    [
        pytest.param([(9, 5)], 20, "bad_range", id="end-before-start"),
        pytest.param([(5, 21)], 20, "bad_range", id="range-past-max"),
        pytest.param([(21, 21)], 20, "bad_vendor_id", id="single-id-past-max"),
        pytest.param([(0, 0)], 20, "bad_vendor_id", id="single-id-zero"),
        pytest.param([(0, 4)], 20, "bad_vendor_id", id="range-from-zero"),
        pytest.param([(1, 1)], 0, "bad_vendor_id", id="entry-with-max-zero"),
    ],
)
def test_rejects_bad_range_entries(
    entries: list[tuple[int, int]], max_vendor_id: int, code: str
) -> None:
    """Range entries must name ids 1..MaxVendorId with start <= end."""
    assert _code(_core_with_consent_section(_ranges(entries, max_vendor_id))) == code


def test_rejects_vendor_id_zero_in_publisher_restrictions() -> None:
    """Publisher restriction entries may not name vendor 0 either."""
    writer = BitWriter()
    write_core_header(writer, BASE)
    write_vendor_section(writer, frozenset({1}), "bitfield")
    write_vendor_section(writer, frozenset(), "bitfield")
    writer.uint(1, 12).uint(1, 6).uint(0, 2)
    write_range_entries(writer, [(0, 3)])

    assert _code(writer.text()) == "bad_vendor_id"


def test_rejects_bit_field_shorter_than_max_vendor_id() -> None:
    """A bit field must hold MaxVendorId bits, else the string is truncated."""
    section = BitWriter().uint(600, 16).flag(False).id_set({1}, 10)

    assert _code(_core_with_consent_section(section)) == "truncated"


def test_rejects_core_without_num_pub_restrictions() -> None:
    """NumPubRestrictions is required even when 0; a core that stops before it is truncated."""
    writer = BitWriter()
    write_core_header(writer, BASE)
    write_vendor_section(writer, BASE.vendor_consents, "bitfield")
    write_vendor_section(writer, BASE.vendor_legitimate_interests, "bitfield")

    assert _code(writer.text()) == "truncated"


def test_expands_thousands_of_full_width_ranges_cheaply() -> None:
    """4095 entries each covering every vendor id merge before expansion and decode quickly."""
    text = _core_with_consent_section(_ranges([(1, MAX_VENDOR_ID)] * 4095))

    started = time.perf_counter()
    tc = decode_tc_string(text)

    assert len(tc.vendor_consents) == MAX_VENDOR_ID
    assert time.perf_counter() - started < 2


def test_rejects_restrictions_that_expand_past_the_id_budget() -> None:
    """Many restriction keys each covering all ids raise too_large instead of allocating."""
    writer = BitWriter()
    write_core_header(writer, BASE)
    write_vendor_section(writer, frozenset(), "bitfield")
    write_vendor_section(writer, frozenset(), "bitfield")
    writer.uint(256, 12)
    for purpose_id in range(64):
        for restriction_type in range(4):
            writer.uint(purpose_id, 6).uint(restriction_type, 2)
            write_range_entries(writer, [(1, MAX_VENDOR_ID)])

    started = time.perf_counter()
    assert _code(writer.text()) == "too_large"
    assert time.perf_counter() - started < 2


def test_rejects_global_scope_strings() -> None:
    """IsServiceSpecific = 0 is invalid per the spec: not_service_specific."""
    assert _code(encode_tc_string(replace(BASE, is_service_specific=False))) == (
        "not_service_specific"
    )


@pytest.mark.parametrize("policy", [4, 5, 6])
@pytest.mark.parametrize("purpose", [3, 4, 5, 6])
def test_rejects_legitimate_interest_on_purposes_3_to_6_from_policy_4(
    policy: int, purpose: int
) -> None:
    """TCF 2.2 removed LI for purposes 3-6: those bits set are forbidden_legitimate_interest."""
    record = replace(
        BASE, tcf_policy_version=policy, purpose_legitimate_interests=frozenset({2, purpose})
    )

    assert _code(encode_tc_string(record)) == "forbidden_legitimate_interest"


def test_accepts_legitimate_interest_on_purposes_3_to_6_before_policy_4() -> None:
    """Policy 2 strings (created before the deadline) may carry LI for purposes 3-6."""
    record = replace(
        BASE,
        tcf_policy_version=2,
        created=datetime(2023, 9, 30, tzinfo=UTC),
        purpose_legitimate_interests=frozenset({3, 4, 5, 6}),
    )

    assert decode_tc_string(encode_tc_string(record)) == record


@pytest.mark.parametrize(
    ("created", "valid"),
    [
        (POLICY_4_DEADLINE - DECISECOND, True),
        (POLICY_4_DEADLINE, False),
        (POLICY_4_DEADLINE + timedelta(days=600), False),
    ],
)
def test_rejects_policy_below_4_created_after_2023_09_30(created: datetime, valid: bool) -> None:
    """A string created after 30 September 2023 with policy < 4 is outdated_policy_version."""
    record = replace(BASE, tcf_policy_version=3, created=created)
    text = encode_tc_string(record)

    if valid:
        assert decode_tc_string(text) == record
    else:
        assert _code(text) == "outdated_policy_version"


def test_rejects_letters_outside_a_to_z() -> None:
    """ConsentLanguage and PublisherCC must be two letters A-Z."""
    core = BitWriter()
    write_core_header(core, BASE)
    bits = core.bits

    def with_bits(offset: int) -> str:
        patched = bits[:offset] + "111111" + bits[offset + 6 :]
        writer = BitWriter().raw(patched)
        write_vendor_section(writer, frozenset(), "bitfield")
        write_vendor_section(writer, frozenset(), "bitfield")
        return writer.uint(0, 12).text()

    assert _code(with_bits(108)) == "bad_language"
    assert _code(with_bits(201)) == "bad_country"


def test_rejects_a_repeated_segment_type() -> None:
    """Two DisclosedVendors segments, or a second core, are duplicate_segment."""
    core, disclosed = encode_segments(BASE)

    assert _code(f"{core}.{disclosed}.{disclosed}") == "duplicate_segment"
    assert _code(f"{core}.{core}") == "duplicate_segment"


def test_accepts_optional_segments_in_any_order() -> None:
    """Optional segments carry their type, so their order does not matter."""
    record = replace(
        BASE, publisher_tc=PublisherTC(frozenset({1}), frozenset(), 0, frozenset(), frozenset())
    )
    core, disclosed, publisher = encode_segments(record)

    assert decode_tc_string(f"{core}.{publisher}.{disclosed}") == record


def test_checks_and_drops_the_deprecated_allowed_vendors_segment() -> None:
    """AllowedVendors (type 2) is parsed for well-formedness, then left out of the record."""
    text = encode_tc_string(BASE, allowed_vendors=frozenset({1, 99}))
    core, disclosed, allowed = text.split(".")

    assert decode_tc_string(text) == BASE
    assert _code(f"{core}.{disclosed}.{allowed[:3]}") == "truncated"


@pytest.mark.parametrize("segment_type", [4, 5, 6, 7])
def test_skips_undefined_segment_types(segment_type: int) -> None:
    """Segment types 4-7 are not defined; they are ignored rather than failing."""
    unknown = BitWriter().uint(segment_type, 3).uint(0b10101, 5).text()

    assert decode_tc_string(encode_tc_string(BASE) + "." + unknown) == BASE


def test_error_messages_never_contain_the_string() -> None:
    """No error message repeats the consent string or a segment of it."""
    core = encode_core(BASE, "bitfield")
    cases = [
        core[:-3],
        core + "+",
        "B" + core[1:],
        encode_tc_string(replace(BASE, is_service_specific=False)),
        _core_with_consent_section(_ranges([(9, 5)], 20)),
    ]
    for text in cases:
        with pytest.raises(TCStringError) as caught:
            decode_tc_string(text)
        for segment in text.split("."):
            assert segment[:12] not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Routing helpers.
# --------------------------------------------------------------------------------------------


def test_purposes_consented_requires_every_purpose() -> None:
    """All listed purposes must be consented; unknown ids never are."""
    assert purposes_consented(BASE, [1, 7])
    assert not purposes_consented(BASE, [1, 3])
    assert not purposes_consented(BASE, [0])
    assert not purposes_consented(BASE, [25])
    assert purposes_consented(BASE, [])


def test_vendor_allowed_needs_vendor_and_purpose_consent() -> None:
    """A consented vendor passes only for consented purposes; others never pass."""
    assert vendor_allowed(BASE, 755, [1, 2])
    assert not vendor_allowed(BASE, 755, [1, 3])
    assert not vendor_allowed(BASE, 4, [1])
    assert not vendor_allowed(BASE, 0, [1])


@pytest.mark.parametrize(
    ("restriction_type", "allowed"),
    [
        (RestrictionType.NOT_ALLOWED, False),
        (RestrictionType.REQUIRE_CONSENT, True),
        (RestrictionType.REQUIRE_LEGITIMATE_INTEREST, False),
        (RestrictionType.UNDEFINED, True),
    ],
)
def test_vendor_allowed_honours_publisher_restrictions(
    restriction_type: RestrictionType, allowed: bool
) -> None:
    """Not-allowed and require-LI restrictions block the consent basis for that purpose only."""
    record = replace(
        BASE,
        publisher_restrictions=(PublisherRestriction(2, restriction_type, frozenset({755})),),
    )
    tc = decode_tc_string(encode_tc_string(record))

    assert vendor_allowed(tc, 755, [1, 2]) is allowed
    assert vendor_allowed(tc, 755, [1, 7])
    assert vendor_allowed(tc, 10, [1, 2])


def test_vendor_allowed_on_iabtcf_es_issue_201_restrictions() -> None:
    """Vendor 730 is consented but publisher-restricted to LI; vendor 7 must use consent."""
    tc = decode_tc_string(IABTCF_ES_ISSUE_201)

    assert {7, 730} <= tc.vendor_consents
    assert vendor_allowed(tc, 7, [1, 2])
    assert not vendor_allowed(tc, 730, [1, 2])


# --------------------------------------------------------------------------------------------
# Properties.
# --------------------------------------------------------------------------------------------

MAX_DECISECONDS = (1 << 36) - 1
DEADLINE_DECISECONDS = (POLICY_4_DEADLINE - EPOCH) // DECISECOND

letters = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)


def vendor_sets(max_id: int = MAX_VENDOR_ID) -> st.SearchStrategy[frozenset[int]]:
    """Mostly small ids (dense bit fields and runs), sometimes a few anywhere up to ``max_id``."""
    return st.frozensets(st.integers(1, min(max_id, 800)), max_size=40) | st.frozensets(
        st.integers(1, max_id), max_size=4
    )


def id_sets(size: int) -> st.SearchStrategy[frozenset[int]]:
    """Subsets of 1..size (purposes, special features, custom purposes)."""
    if size == 0:
        return st.just(frozenset())
    return st.frozensets(st.integers(1, size))


@st.composite
def publisher_tcs(draw: st.DrawFn) -> PublisherTC:
    """Any Publisher TC segment."""
    count = draw(st.integers(0, 63))
    return PublisherTC(
        purpose_consents=draw(id_sets(24)),
        purpose_legitimate_interests=draw(id_sets(24)),
        num_custom_purposes=count,
        custom_purpose_consents=draw(id_sets(count)),
        custom_purpose_legitimate_interests=draw(id_sets(count)),
    )


@st.composite
def tc_records(draw: st.DrawFn, max_vendor_id: int = MAX_VENDOR_ID) -> TCString:
    """Any record that satisfies every validity rule, with ids up to ``max_vendor_id``."""
    policy = draw(st.integers(0, 63))
    latest_created = MAX_DECISECONDS if policy >= 4 else DEADLINE_DECISECONDS - 1
    legitimate_interests = draw(id_sets(24))
    if policy >= 4:
        legitimate_interests -= {3, 4, 5, 6}
    keys = draw(
        st.lists(
            st.tuples(st.integers(0, 63), st.sampled_from(RestrictionType)), unique=True, max_size=5
        )
    )
    restrictions = tuple(
        PublisherRestriction(purpose_id, kind, draw(vendor_sets(max_vendor_id)))
        for purpose_id, kind in sorted(keys)
    )
    return TCString(
        version=2,
        created=EPOCH + draw(st.integers(0, latest_created)) * DECISECOND,
        last_updated=EPOCH + draw(st.integers(0, MAX_DECISECONDS)) * DECISECOND,
        cmp_id=draw(st.integers(0, 4095)),
        cmp_version=draw(st.integers(0, 4095)),
        consent_screen=draw(st.integers(0, 63)),
        consent_language=draw(letters),
        vendor_list_version=draw(st.integers(0, 4095)),
        tcf_policy_version=policy,
        is_service_specific=True,
        use_non_standard_texts=draw(st.booleans()),
        special_feature_optins=draw(id_sets(12)),
        purpose_consents=draw(id_sets(24)),
        purpose_legitimate_interests=legitimate_interests,
        purpose_one_treatment=draw(st.booleans()),
        publisher_cc=draw(letters),
        vendor_consents=draw(vendor_sets(max_vendor_id)),
        vendor_legitimate_interests=draw(vendor_sets(max_vendor_id)),
        publisher_restrictions=restrictions,
        disclosed_vendors=draw(st.none() | vendor_sets(max_vendor_id)),
        publisher_tc=draw(st.none() | publisher_tcs()),
    )


encodings = st.sampled_from(["bitfield", "range"])
property_settings = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@property_settings
@given(record=tc_records(), encoding=encodings, pad_to=st.sampled_from([6, 24]))
def test_round_trips_any_valid_record(
    record: TCString, encoding: VendorEncoding, pad_to: int
) -> None:
    """encode then decode returns the record, for bit-field and range vendor encodings."""
    assert decode_tc_string(encode_tc_string(record, encoding, pad_to=pad_to)) == record


@property_settings
@given(record=tc_records(), encoding=encodings, data=st.data())
def test_optional_segment_order_does_not_change_the_decode(
    record: TCString, encoding: VendorEncoding, data: st.DataObject
) -> None:
    """Any permutation of the optional segments decodes to the same record."""
    core, *optional = encode_segments(record, encoding, allowed_vendors=frozenset({5}))
    shuffled = data.draw(st.permutations(optional))

    assert decode_tc_string(".".join([core, *shuffled])) == record


@property_settings
@given(record=tc_records(max_vendor_id=300), encoding=encodings)
def test_every_truncation_is_reported_as_truncated(
    record: TCString, encoding: VendorEncoding
) -> None:
    """Cutting a segment short at any character is truncated; whole segments decode alone."""
    segments = encode_segments(record, encoding)
    expected = replace(record, disclosed_vendors=None, publisher_tc=None)
    for index, segment in enumerate(segments):
        before = segments[:index]
        for cut in range(1, len(segment)):
            assert _code(".".join([*before, segment[:cut]])) == "truncated"
        whole = ".".join([*before, segment])
        assert _code(whole + ".") == "truncated"
        segment_type = BASE64URL_ALPHABET.index(segment[0]) >> 3
        if index and segment_type == 1:
            expected = replace(expected, disclosed_vendors=record.disclosed_vendors)
        if index and segment_type == 3:
            expected = replace(expected, publisher_tc=record.publisher_tc)
        assert decode_tc_string(whole) == expected


def _assert_only_tc_errors(text: str) -> None:
    """Decoding returns a valid record or raises TCStringError; nothing else escapes."""
    error: TCStringError | None = None
    try:
        tc = decode_tc_string(text)
    except TCStringError as caught:
        error = caught
    if error is not None:
        assert error.code
        assert error.message
        return
    assert tc.version == 2
    assert tc.is_service_specific
    for ids in (tc.vendor_consents, tc.vendor_legitimate_interests, tc.disclosed_vendors or ()):
        assert all(1 <= vendor_id <= MAX_VENDOR_ID for vendor_id in ids)


@settings(deadline=None)
@given(text=st.text() | st.text(alphabet=BASE64URL_ALPHABET + ".=+/"))
def test_arbitrary_text_raises_only_tc_string_errors(text: str) -> None:
    """Any text either decodes or raises TCStringError."""
    _assert_only_tc_errors(text)


def _as_segment(raw: bytes, first_bits: int, width: int) -> str:
    """``raw`` as base64url text with its top ``width`` bits replaced by ``first_bits``."""
    head = (raw[0] & (0xFF >> width)) | (first_bits << (8 - width))
    return base64.urlsafe_b64encode(bytes([head]) + raw[1:]).decode().rstrip("=")


@settings(deadline=None)
@given(
    core=st.binary(min_size=1, max_size=120),
    optional=st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.integers(0, 7)), max_size=3),
)
def test_arbitrary_bytes_behind_a_v2_header_raise_only_tc_string_errors(
    core: bytes, optional: list[tuple[bytes, int]]
) -> None:
    """Random bits after a version-2 header, and random optional segments, never crash."""
    segments = [_as_segment(core, 2, 6)]
    segments += [_as_segment(raw, segment_type, 3) for raw, segment_type in optional]

    _assert_only_tc_errors(".".join(segments))


@settings(deadline=None)
@given(
    record=tc_records(max_vendor_id=300),
    encoding=encodings,
    data=st.data(),
)
def test_corrupting_one_character_raises_only_tc_string_errors(
    record: TCString, encoding: VendorEncoding, data: st.DataObject
) -> None:
    """A valid string with one character replaced either decodes or raises TCStringError."""
    text = encode_tc_string(record, encoding)
    index = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(st.sampled_from(BASE64URL_ALPHABET + ".=+"))

    _assert_only_tc_errors(text[:index] + char + text[index + 1 :])
