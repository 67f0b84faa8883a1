"""consent.gpp: public vectors, encoder round trips, routing summary, malformed input."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.errors import GPPStringError
from consent.gpp import (
    MAX_GPP_CHARS,
    GPPString,
    RawSection,
    Section,
    TcfEuV2Section,
    UsCaSection,
    UsNatSection,
    UspV1Section,
    UsStateSection,
    decode_gpp_header,
    decode_gpp_sid,
    decode_gpp_string,
    us_opt_outs,
)
from consent.gpp_sections import MAX_FIBONACCI_BITS, BitReader
from consent.usp import USPrivacy
from tests.unit.consent.gpp_encoder import (
    ALPHABET,
    STATE_GPC,
    STATE_SHAPES,
    encode_gpp,
    encode_header,
    encode_us_state,
    encode_usca,
    encode_usnat,
    fibonacci_bits,
    fibonacci_range_bits,
    int_bits,
    to_base64url,
)

# --- Public vectors --------------------------------------------------------------------------
# IABTechLab/iabgpp-es @c9c38fe027822e1863de7c3cd6b7fbf403ac36eb
#   modules/cmpapi/test/GppModel.test.ts ("should decode uspv1 section")
USP_ONLY = "DBABTA~1YNN"
# Same file ("should decode uspv1 and tcfeuv2 sections"); also IABTechLab/iabgpp-java
# @d43beda75a187446f0d1ccdaa3754e0b664cbb28 iabgpp-encoder/src/test/java/com/iab/gpp/encoder/
# GppModelTest.java testDecodeUspv1AndTcfEuV2.
TCF_AND_USP = "DBACNYA~CPSG_8APSG_8ANwAAAENAwCAAAAAAAAAAAAAAAAAAAAA.QAAA.IAAA~1YNN"
TCF_IN_TCF_AND_USP = "CPSG_8APSG_8ANwAAAENAwCAAAAAAAAAAAAAAAAAAAAA.QAAA.IAAA"
# iabgpp-java @d43beda GppModelTest.java testDecode8 (legacy 11-char usnat core).
USNAT_LEGACY = "DBABLA~BAAAAAABEQA.QA"
# iabgpp-java @d43beda GppModelTest.java testDecode9 (16/3 usnat core).
USNAT_V2 = "DBABLA~BAAAAAAAAQRA.QA"
# Section body: iabgpp-java @ace7fa7a0fe858acb5c4014643ef191bdfdc82a4 iabgpp-encoder/src/test/
# java/com/iab/gpp/encoder/section/UsNatTest.java testDecode1 / testDecodeWithGpcSegmentExcluded;
# header DBABLA ([7]) from GppModelTest.java above.
USNAT_ALL_SET = "DBABLA~BVVVkkkkkpFY.YA"
USNAT_ALL_SET_NO_GPC = "DBABLA~BVVVkkkkkpFY"
# Section body: iabgpp-java @e2a40666af0cad40684a9b00f39971872a35bec4 .../section/UsCaTest.java
# testDecode1; header DBABBgA ([8]) from prebid/go-gpp @ae4a889d7ba8e166bcdbc8e1142f02e8657b4f16
# parse_test.go "GPP-uspca".
USCA_ALL_SET = "DBABBgA~BVWSSSVY.YA"
# iabgpp-es @c9c38fe GppModel.test.ts "should decode defaults from all sections" and iabgpp-java
# @d43beda GppModelTest.java testEncodeDefaultAll: every section at its default values.
ALL_DEFAULTS = (
    "DBACOdM~CPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAAAA.QAAA.IAAA"
    "~BPSG_8APSG_8AAAAAAENAACAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA~1---~BAAAAAAAAABA.QA~BAAAAABA.QA"
    "~BAAAABA~BAAAAEA.QA~BAAAAAQA~BAAAAAEA.QA~BAAAAABA~BAAAAABA.QA~BAAAAAABAA.QA~BAAAAAQA.QA"
    "~BAAAAAABAA.QA~BAAAAAQA.QA~BAAAAAQA.QA~BAAAAABA.QA~BAAAAAAAQA.QA~BAAAAAQA.QA"
)
# prebid/go-gpp @ae4a889 parse_test.go "GPP-tcf" and "GPP-tcfca-usp".
GO_GPP_TCF = "DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
GO_GPP_TCFCA_USP = "DBABjw~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN"

VALID_VECTORS = [
    USP_ONLY,
    TCF_AND_USP,
    USNAT_LEGACY,
    USNAT_V2,
    USNAT_ALL_SET,
    USCA_ALL_SET,
    ALL_DEFAULTS,
    GO_GPP_TCF,
    GO_GPP_TCFCA_USP,
]


def test_uspv1_vector_decodes_notice_and_no_opt_out() -> None:
    """DBABTA~1YNN holds section 6 with notice given and no opt-out of sale."""
    gpp = decode_gpp_string(USP_ONLY)
    assert gpp.version == 1
    assert gpp.section_ids == (6,)
    assert gpp.section(6) == UspV1Section(USPrivacy(1, True, False, False))
    assert not us_opt_outs(gpp).any_opt_out


def test_tcfeuv2_vector_keeps_the_raw_tc_string() -> None:
    """Section 2's body is kept verbatim, sub-segments included, next to a decoded uspv1."""
    gpp = decode_gpp_string(TCF_AND_USP)
    assert gpp.section_ids == (2, 6)
    assert gpp.section(2) == TcfEuV2Section(TCF_IN_TCF_AND_USP)
    assert isinstance(gpp.section(6), UspV1Section)


def test_legacy_usnat_vector_zero_extends_sensitive_and_child_lists() -> None:
    """An 11-char usnat core uses the 12/2 layout, padded to 16/3 with zeros."""
    section = decode_gpp_string(USNAT_LEGACY).section(7)
    assert isinstance(section, UsNatSection)
    assert section.sensitive_data_processing == (0,) * 11 + (1,) + (0,) * 4
    assert section.known_child_sensitive_data_consents == (0, 1, 0)
    assert section.mspa_covered_transaction == 1
    assert (section.gpc_segment_included, section.gpc) == (True, False)


def test_usnat_v2_vector_reads_sixteen_sensitive_categories() -> None:
    """A 12-char usnat core uses the 16/3 layout."""
    section = decode_gpp_string(USNAT_V2).section(7)
    assert isinstance(section, UsNatSection)
    assert section.sensitive_data_processing == (0,) * 15 + (1,)
    assert section.known_child_sensitive_data_consents == (0, 0, 1)


def test_usnat_vector_with_every_field_set() -> None:
    """BVVVkkkkkpFY.YA decodes to the values iabgpp-java asserts, GPC included."""
    section = decode_gpp_string(USNAT_ALL_SET).section(7)
    assert section == UsNatSection(
        version=1,
        sharing_notice=1,
        sale_opt_out_notice=1,
        sharing_opt_out_notice=1,
        targeted_advertising_opt_out_notice=1,
        sensitive_data_processing_opt_out_notice=1,
        sensitive_data_limit_use_notice=1,
        sale_opt_out=1,
        sharing_opt_out=1,
        targeted_advertising_opt_out=1,
        sensitive_data_processing=(2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2),
        known_child_sensitive_data_consents=(2, 1, 0),
        personal_data_consents=1,
        mspa_covered_transaction=1,
        mspa_opt_out_option_mode=1,
        mspa_service_provider_mode=2,
        gpc_segment_included=True,
        gpc=True,
    )


def test_usnat_vector_without_gpc_subsection_reports_it_absent() -> None:
    """Without the .YA sub-section, gpc_segment_included and gpc are both False."""
    section = decode_gpp_string(USNAT_ALL_SET_NO_GPC).section(7)
    assert isinstance(section, UsNatSection)
    assert (section.gpc_segment_included, section.gpc) == (False, False)
    assert section.sale_opt_out == 1


def test_usca_vector_with_every_field_set() -> None:
    """BVWSSSVY.YA decodes to the values iabgpp-java asserts."""
    section = decode_gpp_string(USCA_ALL_SET).section(8)
    assert section == UsCaSection(
        version=1,
        sale_opt_out_notice=1,
        sharing_opt_out_notice=1,
        sensitive_data_limit_use_notice=1,
        sale_opt_out=1,
        sharing_opt_out=1,
        sensitive_data_processing=(2, 1, 0, 2, 1, 0, 2, 1, 0),
        known_child_sensitive_data_consents=(2, 1),
        personal_data_consents=1,
        mspa_covered_transaction=1,
        mspa_opt_out_option_mode=1,
        mspa_service_provider_mode=2,
        gpc_segment_included=True,
        gpc=True,
    )


def test_all_defaults_vector_decodes_every_section_id() -> None:
    """The 19-section defaults string lists ids 2, 5-22; undecoded ones are kept raw."""
    gpp = decode_gpp_string(ALL_DEFAULTS)
    assert gpp.section_ids == (2, 5, *range(6, 23))
    assert isinstance(gpp.section(5), RawSection)
    assert gpp.section(13) == RawSection(13, "BAAAAABA")
    assert gpp.section(6) == UspV1Section(USPrivacy(1, None, None, None))


@pytest.mark.parametrize(
    ("section_id", "sensitive", "child", "sensitive_notice", "gpc_included"),
    [(9, 8, 1, None, False), (10, 7, 1, None, True), (11, 8, 1, 0, False), (12, 8, 3, None, True)],
)
def test_all_defaults_vector_state_sections_have_their_layouts(
    section_id: int, sensitive: int, child: int, sensitive_notice: int | None, gpc_included: bool
) -> None:
    """usva/usco/usut/usct defaults: all 0 except MspaCoveredTransaction = 1."""
    section = decode_gpp_string(ALL_DEFAULTS).section(section_id)
    assert section == UsStateSection(
        section_id=section_id,
        version=1,
        sharing_notice=0,
        sale_opt_out_notice=0,
        targeted_advertising_opt_out_notice=0,
        sensitive_data_processing_opt_out_notice=sensitive_notice,
        sale_opt_out=0,
        targeted_advertising_opt_out=0,
        sensitive_data_processing=(0,) * sensitive,
        known_child_sensitive_data_consents=(0,) * child,
        mspa_covered_transaction=1,
        mspa_opt_out_option_mode=0,
        mspa_service_provider_mode=0,
        gpc_segment_included=gpc_included,
        gpc=False,
    )


def test_go_gpp_vectors_keep_tcf_and_tcfca_bodies() -> None:
    """prebid/go-gpp's strings give the same ids and raw bodies go-gpp expects."""
    tcf = decode_gpp_string(GO_GPP_TCF)
    assert tcf.sections == (TcfEuV2Section("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"),)
    both = decode_gpp_string(GO_GPP_TCFCA_USP)
    assert both.section_ids == (5, 6)
    assert both.section(5) == RawSection(5, "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA")


def test_header_only_string_has_no_sections() -> None:
    """DBAA (iabgpp-es "should decode header only") lists no sections."""
    assert decode_gpp_string("DBAA") == GPPString(1, (), ())


@pytest.mark.parametrize(
    ("header", "ids"),
    [
        ("DBABM", (2,)),  # spec worked example
        ("DBABMA", (2,)),  # the libraries' byte-padded form
        ("DBACNY", (2, 6)),
        ("DBABjw", (5, 6)),  # one group 5..6
        ("DBACOcGA", (2, 5, *range(6, 28))),  # reference 3.2 (iabgpp-es "decode defaults")
    ],
)
def test_header_decodes_spec_examples(header: str, ids: tuple[int, ...]) -> None:
    """The Range(Fibonacci) examples of the spec and reference decode to their ids."""
    assert decode_gpp_header(header) == (1, ids)


def test_test_encoder_reproduces_library_encodings() -> None:
    """The test encoder emits the exact strings iabgpp-es/java emit for the same values."""
    assert encode_header([6]) + "~1YNN" == USP_ONLY
    assert encode_header([2, 5, *range(6, 23)]) == ALL_DEFAULTS.split("~", 1)[0]
    usnat = decode_gpp_string(USNAT_ALL_SET).section(7)
    usca = decode_gpp_string(USCA_ALL_SET).section(8)
    assert isinstance(usnat, UsNatSection)
    assert isinstance(usca, UsCaSection)
    assert encode_usnat(usnat) == "BVVVkkkkkpFY.YA"
    assert encode_usca(usca) == "BVWSSSVY.YA"


# --- Fibonacci coding ------------------------------------------------------------------------


def _reader(bits: str) -> BitReader:
    return BitReader(to_base64url(bits), "test")


@pytest.mark.parametrize(
    ("value", "code"),
    [(1, "11"), (2, "011"), (3, "0011"), (4, "1011"), (5, "00011"), (6, "10011"), (7, "01011")],
)
def test_fibonacci_spec_codes(value: int, code: str) -> None:
    """The spec's Fibonacci table: 1 = 11, 2 = 011 ... 7 = 01011."""
    assert fibonacci_bits(value) == code
    assert _reader(code).read_fibonacci() == value


@given(st.integers(min_value=1, max_value=2_000_000))
def test_fibonacci_round_trip(value: int) -> None:
    """Any integer >= 1 survives encode then decode."""
    assert _reader(fibonacci_bits(value)).read_fibonacci() == value


@given(st.integers(min_value=1, max_value=10**9))
def test_fibonacci_code_ends_in_its_only_double_one(value: int) -> None:
    """A Fibonacci code ends in 11 and has no other 11 (so a reader stops exactly there)."""
    code = fibonacci_bits(value)
    assert code.endswith("11")
    assert code.find("11") == len(code) - 2


@given(st.lists(st.integers(min_value=1, max_value=2_000_000), min_size=2, max_size=10))
def test_fibonacci_codes_read_back_to_back(values: list[int]) -> None:
    """Consecutive codes are self-delimiting: a reader recovers the whole sequence."""
    reader = _reader("".join(fibonacci_bits(value) for value in values))
    assert [reader.read_fibonacci() for _ in values] == values


@given(st.sets(st.integers(min_value=1, max_value=300), max_size=40))
def test_fibonacci_range_round_trip(ids: set[int]) -> None:
    """A Range(Fibonacci) of any id set decodes to the sorted ids."""
    header = to_base64url(int_bits(3, 6) + int_bits(1, 6) + fibonacci_range_bits(sorted(ids)))
    assert decode_gpp_header(header) == (1, tuple(sorted(ids)))


def test_fibonacci_code_longer_than_the_cap_is_rejected() -> None:
    """A run of zeros longer than MAX_FIBONACCI_BITS is bad_header, not unbounded work."""
    with pytest.raises(GPPStringError) as error:
        _reader("0" * (MAX_FIBONACCI_BITS + 8) + "11").read_fibonacci()
    assert error.value.code == "bad_header"


# --- Encoder round trips ---------------------------------------------------------------------

ENUM = st.integers(min_value=0, max_value=2)


@st.composite
def gpc_fields(draw: st.DrawFn, allowed: bool = True) -> tuple[bool, bool]:
    """(gpc_segment_included, gpc), consistent with how absence decodes."""
    included = allowed and draw(st.booleans())
    return included, included and draw(st.booleans())


@st.composite
def usnat_sections(draw: st.DrawFn) -> UsNatSection:
    """Any valid usnat record (16/3 layout)."""
    included, gpc = draw(gpc_fields())
    return UsNatSection(
        version=draw(st.sampled_from([1, 2])),
        sharing_notice=draw(ENUM),
        sale_opt_out_notice=draw(ENUM),
        sharing_opt_out_notice=draw(ENUM),
        targeted_advertising_opt_out_notice=draw(ENUM),
        sensitive_data_processing_opt_out_notice=draw(ENUM),
        sensitive_data_limit_use_notice=draw(ENUM),
        sale_opt_out=draw(ENUM),
        sharing_opt_out=draw(ENUM),
        targeted_advertising_opt_out=draw(ENUM),
        sensitive_data_processing=tuple(draw(ENUM) for _ in range(16)),
        known_child_sensitive_data_consents=tuple(draw(ENUM) for _ in range(3)),
        personal_data_consents=draw(ENUM),
        mspa_covered_transaction=draw(ENUM),
        mspa_opt_out_option_mode=draw(ENUM),
        mspa_service_provider_mode=draw(ENUM),
        gpc_segment_included=included,
        gpc=gpc,
    )


@st.composite
def usca_sections(draw: st.DrawFn) -> UsCaSection:
    """Any valid usca record."""
    included, gpc = draw(gpc_fields())
    return UsCaSection(
        version=1,
        sale_opt_out_notice=draw(ENUM),
        sharing_opt_out_notice=draw(ENUM),
        sensitive_data_limit_use_notice=draw(ENUM),
        sale_opt_out=draw(ENUM),
        sharing_opt_out=draw(ENUM),
        sensitive_data_processing=tuple(draw(ENUM) for _ in range(9)),
        known_child_sensitive_data_consents=tuple(draw(ENUM) for _ in range(2)),
        personal_data_consents=draw(ENUM),
        mspa_covered_transaction=draw(ENUM),
        mspa_opt_out_option_mode=draw(ENUM),
        mspa_service_provider_mode=draw(ENUM),
        gpc_segment_included=included,
        gpc=gpc,
    )


@st.composite
def us_state_sections(draw: st.DrawFn, section_id: int | None = None) -> UsStateSection:
    """Any valid usva/usco/usut/usct record."""
    sid = section_id if section_id is not None else draw(st.sampled_from(sorted(STATE_SHAPES)))
    sensitive, child, has_notice = STATE_SHAPES[sid]
    included, gpc = draw(gpc_fields(allowed=STATE_GPC[sid]))
    return UsStateSection(
        section_id=sid,
        version=1,
        sharing_notice=draw(ENUM),
        sale_opt_out_notice=draw(ENUM),
        targeted_advertising_opt_out_notice=draw(ENUM),
        sensitive_data_processing_opt_out_notice=draw(ENUM) if has_notice else None,
        sale_opt_out=draw(ENUM),
        targeted_advertising_opt_out=draw(ENUM),
        sensitive_data_processing=tuple(draw(ENUM) for _ in range(sensitive)),
        known_child_sensitive_data_consents=tuple(draw(ENUM) for _ in range(child)),
        mspa_covered_transaction=draw(ENUM),
        mspa_opt_out_option_mode=draw(ENUM),
        mspa_service_provider_mode=draw(ENUM),
        gpc_segment_included=included,
        gpc=gpc,
    )


def _encode_section(section: Section) -> str:
    if isinstance(section, UsNatSection):
        return encode_usnat(section)
    if isinstance(section, UsCaSection):
        return encode_usca(section)
    if isinstance(section, UsStateSection):
        return encode_us_state(section)
    if isinstance(section, UspV1Section):
        return section.privacy.to_string()
    if isinstance(section, TcfEuV2Section):
        return section.tc_string
    return section.raw


@given(usnat_sections())
def test_usnat_round_trip(section: UsNatSection) -> None:
    """encode(usnat record) then decode gives the record back."""
    assert decode_gpp_string(encode_gpp([(7, encode_usnat(section))])).sections == (section,)


@given(usnat_sections())
def test_legacy_usnat_round_trip(section: UsNatSection) -> None:
    """A record written in the legacy 12/2 layout decodes to the zero-extended record."""
    legacy = dataclasses.replace(
        section,
        sensitive_data_processing=section.sensitive_data_processing[:12] + (0,) * 4,
        known_child_sensitive_data_consents=(*section.known_child_sensitive_data_consents[:2], 0),
    )
    body = encode_usnat(legacy, legacy=True)
    assert len(body.split(".")[0]) == 11
    assert decode_gpp_string(encode_gpp([(7, body)])).section(7) == legacy


@given(usca_sections())
def test_usca_round_trip(section: UsCaSection) -> None:
    """encode(usca record) then decode gives the record back."""
    assert decode_gpp_string(encode_gpp([(8, encode_usca(section))])).sections == (section,)


@given(us_state_sections())
def test_us_state_round_trip(section: UsStateSection) -> None:
    """encode(state record) then decode gives the record back, for all four states."""
    encoded = encode_gpp([(section.section_id, encode_us_state(section))])
    assert decode_gpp_string(encoded).sections == (section,)


USP_VALUES = st.sampled_from(["1YNN", "1NYN", "1-Y-", "1---", "1YYY"])
RAW_BODY = st.text(alphabet=ALPHABET + ".", min_size=1, max_size=20)


@st.composite
def gpp_records(draw: st.DrawFn) -> list[Section]:
    """A random set of sections with distinct ids, in id order."""
    candidates: dict[int, st.SearchStrategy[Section]] = {
        2: st.just(TcfEuV2Section(TCF_IN_TCF_AND_USP)),
        6: USP_VALUES.map(_uspv1),
        7: usnat_sections(),
        8: usca_sections(),
        **{sid: us_state_sections(sid) for sid in STATE_SHAPES},
        **{sid: st.builds(RawSection, st.just(sid), RAW_BODY) for sid in (5, 13, 40)},
    }
    ids = draw(st.sets(st.sampled_from(sorted(candidates)), max_size=len(candidates)))
    return [draw(candidates[sid]) for sid in sorted(ids)]


def _uspv1(text: str) -> Section:
    notice, opt_out, lspa = ({"Y": True, "N": False, "-": None}[c] for c in text[1:])
    return UspV1Section(USPrivacy(1, notice, opt_out, lspa))


@given(gpp_records())
def test_gpp_string_round_trip(records: list[Section]) -> None:
    """encode(random set of sections) then decode gives the ids and sections back."""
    encoded = encode_gpp([(record.section_id, _encode_section(record)) for record in records])
    gpp = decode_gpp_string(encoded)
    assert gpp.section_ids == tuple(record.section_id for record in records)
    assert gpp.sections == tuple(records)


# --- Routing summary -------------------------------------------------------------------------


def _default_section(section_id: int) -> Section:
    section = decode_gpp_string(ALL_DEFAULTS).section(section_id)
    assert section is not None
    return section


USNAT_BASE = _default_section(7)
USCA_BASE = _default_section(8)
USVA_BASE = _default_section(9)


def _gpp_with(*sections: Section) -> GPPString:
    return decode_gpp_string(encode_gpp([(s.section_id, _encode_section(s)) for s in sections]))


def _replace(section: Section, **changes: Any) -> Section:
    return dataclasses.replace(section, **changes)


def test_usnat_sale_opt_out_denies() -> None:
    """usnat SaleOptOut = 1 is an opt-out of sale, and of advertising overall."""
    opt_outs = us_opt_outs(_gpp_with(_replace(USNAT_BASE, sale_opt_out_notice=1, sale_opt_out=1)))
    assert opt_outs.sale_opt_out
    assert opt_outs.any_opt_out
    assert opt_outs.sources == (7,)


@pytest.mark.parametrize("value", [0, 2])
def test_usnat_sale_opt_out_not_applicable_or_declined_does_not_deny(value: int) -> None:
    """SaleOptOut 0 (n/a) and 2 (did not opt out) never count as an opt-out."""
    opt_outs = us_opt_outs(_gpp_with(_replace(USNAT_BASE, sale_opt_out=value)))
    assert not opt_outs.any_opt_out


def test_usnat_sharing_and_targeted_ads_opt_outs_are_separate_flags() -> None:
    """SharingOptOut and TargetedAdvertisingOptOut = 1 set their own flags only."""
    section = _replace(USNAT_BASE, sharing_opt_out=1, targeted_advertising_opt_out=1)
    opt_outs = us_opt_outs(_gpp_with(section))
    assert (opt_outs.sale_opt_out, opt_outs.sharing_opt_out) == (False, True)
    assert opt_outs.targeted_advertising_opt_out


def test_usca_sharing_opt_out_denies() -> None:
    """usca SharingOptOut = 1 is an opt-out of sharing."""
    opt_outs = us_opt_outs(_gpp_with(_replace(USCA_BASE, sharing_opt_out=1)))
    assert opt_outs.sharing_opt_out
    assert opt_outs.any_opt_out


def test_state_targeted_advertising_opt_out_denies() -> None:
    """usva TargetedAdvertisingOptOut = 1 is a targeted-advertising opt-out."""
    opt_outs = us_opt_outs(_gpp_with(_replace(USVA_BASE, targeted_advertising_opt_out=1)))
    assert opt_outs.targeted_advertising_opt_out
    assert opt_outs.sources == (9,)


def test_gpc_subsection_true_denies() -> None:
    """A GPC sub-section with Gpc = true sets gpc even when every opt-out is 0."""
    opt_outs = us_opt_outs(_gpp_with(_replace(USNAT_BASE, gpc_segment_included=True, gpc=True)))
    assert opt_outs.gpc
    assert opt_outs.any_opt_out
    assert not opt_outs.sale_opt_out


def test_uspv1_opt_out_of_sale_denies() -> None:
    """uspv1 1NYN (character 3 = Y) is an opt-out of sale."""
    opt_outs = us_opt_outs(decode_gpp_string(encode_header([6]) + "~1NYN"))
    assert opt_outs.sale_opt_out
    assert opt_outs.sources == (6,)


def test_sensitive_and_known_child_restrictions_follow_value_one() -> None:
    """A sensitive-data or known-child entry of 1 sets the matching restriction flag."""
    section = _replace(
        USNAT_BASE,
        sensitive_data_processing=(2,) * 15 + (1,),
        known_child_sensitive_data_consents=(2, 1, 2),
    )
    opt_outs = us_opt_outs(_gpp_with(section))
    assert (opt_outs.sensitive_data_restricted, opt_outs.known_child_restricted) == (True, True)
    assert not opt_outs.any_opt_out


def test_gpp_sid_selects_the_in_force_section() -> None:
    """With gpp_sid = [8] only usca is read: the usnat opt-out does not apply."""
    gpp = _gpp_with(_replace(USNAT_BASE, sale_opt_out=1), USCA_BASE)
    assert us_opt_outs(gpp).sale_opt_out
    in_force = us_opt_outs(gpp, gpp_sid=[8])
    assert not in_force.any_opt_out
    assert in_force.sources == (8,)


def test_in_force_sections_that_cannot_be_read_are_reported() -> None:
    """A gpp_sid id missing from the string, or a raw US state, lands in undecoded."""
    gpp = decode_gpp_string(ALL_DEFAULTS)
    opt_outs = us_opt_outs(gpp, gpp_sid=[13, 27, 7])
    assert opt_outs.undecoded == (13, 27)
    assert opt_outs.sources == (7,)


def test_non_us_sections_are_ignored_by_the_us_summary() -> None:
    """tcfeuv2 and gpp_sid = -1 contribute nothing to the US summary."""
    gpp = decode_gpp_string(TCF_AND_USP)
    assert us_opt_outs(gpp, gpp_sid=[2]).sources == ()
    assert us_opt_outs(gpp, gpp_sid=[-1]).sources == ()
    assert gpp.applicable_section_ids() == (2, 6)
    assert gpp.applicable_section_ids([6, 6, 2]) == (6, 2)


@pytest.mark.parametrize(
    ("text", "ids"), [("7", (7,)), ("2,6", (2, 6)), (" 2 , 6 ", (2, 6)), ("-1", (-1,))]
)
def test_gpp_sid_parses_comma_separated_ids(text: str, ids: tuple[int, ...]) -> None:
    """gpp_sid URL values are comma-separated integers."""
    assert decode_gpp_sid(text) == ids


@pytest.mark.parametrize("text", ["", "2,", "a", "2;6", "1.5", "9" * 7, "٣"])
def test_gpp_sid_rejects_anything_else(text: str) -> None:
    """Non-integer gpp_sid values are bad_sid."""
    with pytest.raises(GPPStringError) as error:
        decode_gpp_sid(text)
    assert error.value.code == "bad_sid"


# --- Malformed input -------------------------------------------------------------------------


def _code(text: str) -> str:
    with pytest.raises(GPPStringError) as error:
        decode_gpp_string(text)
    return error.value.code


@pytest.mark.parametrize("vector", VALID_VECTORS)
def test_every_prefix_decodes_or_raises_gpp_error(vector: str) -> None:
    """Truncating a valid string anywhere yields a GPPString or a GPPStringError, no crash."""
    header_length = vector.index("~")
    for end in range(len(vector)):
        _decodes_or_raises(vector[:end])
        if end <= header_length:
            with pytest.raises(GPPStringError):
                decode_gpp_string(vector[:end])


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "truncated"),
        ("DBA", "truncated"),  # header cut before the entry count
        ("DBABLA~BAAAAAAA", "truncated"),  # usnat core shorter than 60 bits
        ("DBABLA~BVVVkkkkkpFY.", "truncated"),  # empty GPC sub-section
        ("DBABTA~", "bad_section"),  # empty uspv1 body
        ("DB+BTA~1YNN", "bad_base64"),
        ("DBABTA=~1YNN", "bad_base64"),
        ("DBABLA~BVVVkkkkkpFY.Y=", "bad_base64"),
        ("DBABMA~CPXx RfA", "bad_base64"),
        ("invalid gpp string", "bad_base64"),  # iabgpp-es "should throw Error on invalid"
        ("z", "bad_header"),  # iabgpp-es "should throw Error on garbage" (type 51)
        ("CBABTA~1YNN", "bad_header"),  # type 2 is not a header
        ("DBGBMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", "bad_header"),  # go-gpp error
        ("DBACOeA~~1YNN", "bad_header"),  # reference 3.1: 3 ids, 2 sections
        ("DBABTA~1YNN~1YNN", "bad_header"),  # 1 id, 2 sections
        ("DBAA~", "bad_header"),
        ("DBABTA~2YNN", "bad_section"),  # uspv1 version 2
        ("DBABTA~1YN", "bad_section"),
    ],
)
def test_malformed_strings_raise_their_code(text: str, code: str) -> None:
    """Each kind of damage maps to a stable error code."""
    assert _code(text) == code


def test_wrong_header_version_is_bad_version() -> None:
    """A header version other than 1 is bad_version."""
    assert _code(encode_header([6], version=2) + "~1YNN") == "bad_version"


@pytest.mark.parametrize(("section_id", "version"), [(7, 3), (7, 0), (8, 2), (9, 2), (12, 5)])
def test_unknown_section_version_is_bad_version(section_id: int, version: int) -> None:
    """Section versions outside the known ones fail closed."""
    body = to_base64url(int_bits(version, 6) + "0" * 90)
    assert _code(encode_gpp([(section_id, body)])) == "bad_version"


def test_undefined_enum_value_three_is_bad_section() -> None:
    """A 2-bit field holding 3 (SharingNotice here) is bad_section."""
    body = to_base64url(int_bits(1, 6) + "11" + "0" * 62)
    assert _code(encode_gpp([(7, body)])) == "bad_section"


@pytest.mark.parametrize(
    "text",
    [
        "DBABRg~BAAAABA.QA",  # usva defines no GPC sub-section
        "DBABLA~BVVVkkkkkpFY.gA",  # sub-section type 2 is not GPC
        "DBABLA~BVVVkkkkkpFY.YA.YA",  # two sub-sections
    ],
)
def test_unexpected_subsections_are_bad_section(text: str) -> None:
    """Sub-sections other than one GPC sub-section where the spec has it are rejected."""
    assert _code(text) == "bad_section"


def test_tcfeuv2_body_with_empty_segment_is_bad_base64() -> None:
    """A tcfeuv2 body must be base64url segments joined by single dots."""
    assert _code("DBABMA~CPXx..QAAA") == "bad_base64"


def test_overlong_input_is_too_long() -> None:
    """Input over MAX_GPP_CHARS is rejected before any decoding."""
    assert _code("D" * (MAX_GPP_CHARS + 1)) == "too_long"


def test_header_group_spanning_millions_of_ids_is_rejected_without_expanding() -> None:
    """A group whose range dwarfs the section count fails fast (bounded work)."""
    header = to_base64url(
        int_bits(3, 6) + int_bits(1, 6) + int_bits(1, 12) + "1" + "11" + fibonacci_bits(3_000_000)
    )
    assert _code(header + "~1YNN") == "bad_header"


def test_header_with_max_entry_count_and_one_section_fails_fast() -> None:
    """4095 header entries against one section is bad_header before reading the entries."""
    header = to_base64url(int_bits(3, 6) + int_bits(1, 6) + int_bits(4095, 12))
    assert _code(header + "~1YNN") == "bad_header"


def test_error_messages_never_echo_the_consent_string() -> None:
    """Messages describe the problem without quoting the input."""
    for text in ["DBABLA~BVVVkkkkkpFY.gA", "DBABLA~BAAAAAAA", "DB+BTA~1YNN", "DBACOeA~~1YNN"]:
        with pytest.raises(GPPStringError) as error:
            decode_gpp_string(text)
        assert "BVVV" not in str(error.value)
        assert "BAAAAAAA" not in str(error.value)
        assert text not in str(error.value)


ERROR_CODES = {"too_long", "bad_base64", "truncated", "bad_header", "bad_version", "bad_section"}


def _decode_outcome(text: str) -> GPPString | GPPStringError:
    try:
        return decode_gpp_string(text)
    except GPPStringError as error:
        return error


def _decodes_or_raises(text: str) -> None:
    """Assert ``text`` decodes to a GPPString or raises a GPPStringError with a known code."""
    outcome = _decode_outcome(text)
    assert isinstance(outcome, GPPString) or outcome.code in ERROR_CODES


@given(st.text(max_size=300))
def test_arbitrary_text_decodes_or_raises_gpp_error(text: str) -> None:
    """Any text yields a GPPString or a GPPStringError; nothing else escapes."""
    _decodes_or_raises(text)


@given(st.text(alphabet=ALPHABET + "~.", max_size=200))
def test_base64url_noise_decodes_or_raises_gpp_error(text: str) -> None:
    """Noise in the GPP alphabet reaches deeper code paths and still raises only GPP errors."""
    _decodes_or_raises(text)


@given(
    st.lists(st.sampled_from([2, 5, 6, 7, 8, 9, 10, 11, 12, 13]), min_size=1, max_size=6),
    st.lists(st.text(alphabet=ALPHABET + ".", max_size=16), min_size=1, max_size=6),
)
def test_valid_headers_with_noise_bodies_raise_only_gpp_errors(
    ids: list[int], bodies: list[str]
) -> None:
    """A correct header over random bodies exercises every section decoder's error paths."""
    _decodes_or_raises("~".join([encode_header(ids), *bodies]))
