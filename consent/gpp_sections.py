"""GPP bits and sections: the base64url bit reader and the section layouts the router reads.

Sources (reference ``consent-standards.md`` section 3): the GPP spec
(InteractiveAdvertisingBureau/Global-Privacy-Platform @b27beb4) and the field order of
IABTechLab/iabgpp-es ``modules/cmpapi/src/encoder/segment/Us*CoreSegment.ts``.

Decoded here:

======  =======  ==================================================================
ID      name     decoded as
======  =======  ==================================================================
2       tcfeuv2  ``TcfEuV2Section``: the raw TC string (decode it with consent.tcf)
6       uspv1    ``UspV1Section``: a ``USPrivacy`` (consent.usp)
7       usnat    ``UsNatSection`` (+ GPC sub-section)
8       usca     ``UsCaSection`` (+ GPC sub-section)
9-12    usva,    ``UsStateSection``; usco (10) and usct (12) have a GPC sub-section
        usco,
        usut,
        usct
other   ...      ``RawSection``: kept as text, never an error
======  =======  ==================================================================

Rules, all failing closed with a ``GPPStringError``:

- A 2-bit enum field holding 3 (undefined everywhere) is ``bad_section``.
- A section version outside the known ones (usnat 1-2, the others 1) is ``bad_version``.
- usnat picks its layout by bit length, as both reference libraries do: under 70 bits it is the
  legacy layout (12 sensitive-data and 2 known-child fields), zero-extended to 16 and 3.
- The optional second sub-section must be a GPC sub-section (type 1), and only sections that
  define one may have it; anything else is ``bad_section``.
- Bits after the last field are padding and are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from consent.errors import GPPStringError, USPrivacyError
from consent.usp import USPrivacy, decode_us_privacy

BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SEXTETS = {char: value for value, char in enumerate(BASE64URL_ALPHABET)}

MAX_FIBONACCI_BITS = 32
"""Longest Fibonacci code read (values up to about 3.5 million): bounds work on hostile input."""

SECTION_NAMES: dict[int, str] = {
    1: "tcfeuv1",
    2: "tcfeuv2",
    3: "header",
    4: "signal_integrity",
    5: "tcfcav1",
    6: "uspv1",
    7: "usnat",
    8: "usca",
    9: "usva",
    10: "usco",
    11: "usut",
    12: "usct",
    13: "usfl",
    14: "usmt",
    15: "usor",
    16: "ustx",
    17: "usde",
    18: "usia",
    19: "usne",
    20: "usnh",
    21: "usnj",
    22: "ustn",
    23: "usmn",
    24: "usmd",
    25: "usin",
    26: "usky",
    27: "usri",
}
"""API prefix of every section id the spec lists (``Sections/Section Information.md``)."""

_TC_STRING = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class BitReader:
    """Reads big-endian fields from base64url text (6 bits a character, no padding needed)."""

    __slots__ = ("_position", "_sextets", "_what")

    def __init__(self, text: str, what: str) -> None:
        """Prepare to read ``text``; ``what`` names it in error messages (never the text)."""
        try:
            self._sextets = bytes(_SEXTETS[char] for char in text)
        except KeyError:
            raise GPPStringError("bad_base64", f"{what} has a non-base64url character") from None
        self._position = 0
        self._what = what

    @property
    def bit_length(self) -> int:
        """Number of bits the text holds, padding included."""
        return 6 * len(self._sextets)

    def read_int(self, width: int) -> int:
        """Read an unsigned ``width``-bit integer."""
        end = self._position + width
        if end > self.bit_length:
            raise GPPStringError(
                "truncated", f"{self._what} holds {self.bit_length} bits, needs at least {end}"
            )
        value = 0
        for index in range(self._position, end):
            value = (value << 1) | ((self._sextets[index // 6] >> (5 - index % 6)) & 1)
        self._position = end
        return value

    def read_bool(self) -> bool:
        """Read one bit: 1 is true (the spec's "0=true" data-type line is an erratum)."""
        return self.read_int(1) == 1

    def read_enum(self, field: str) -> int:
        """Read a 2-bit enum (0 n/a, 1, 2); the undefined value 3 is ``bad_section``."""
        value = self.read_int(2)
        if value == 3:
            raise GPPStringError("bad_section", f"{self._what}: {field} holds undefined value 3")
        return value

    def read_enums(self, count: int, field: str) -> tuple[int, ...]:
        """Read ``count`` consecutive 2-bit enums (an N-Bitfield(2, count))."""
        return tuple(self.read_enum(field) for _ in range(count))

    def read_fibonacci(self) -> int:
        """Read a Fibonacci-coded integer >= 1 (weights 1, 2, 3, 5, ... ending in ``11``).

        A code longer than ``MAX_FIBONACCI_BITS`` is ``bad_header``: Fibonacci codes only
        appear in the header's section-id range.
        """
        value, weight, next_weight, previous = 0, 1, 2, 0
        for _ in range(MAX_FIBONACCI_BITS):
            bit = self.read_int(1)
            if bit and previous:
                return value
            value += weight * bit
            weight, next_weight = next_weight, weight + next_weight
            previous = bit
        raise GPPStringError(
            "bad_header", f"{self._what}: Fibonacci integer longer than {MAX_FIBONACCI_BITS} bits"
        )


@dataclass(frozen=True, slots=True)
class TcfEuV2Section:
    """Section 2: the body is exactly a TCF v2 TC string, kept raw.

    Decode it with ``consent.tcf.decode_tc_string(section.tc_string)``; this module does not
    import the TCF decoder, so a malformed TC string is only detected there.
    """

    section_id: ClassVar[int] = 2
    tc_string: str


@dataclass(frozen=True, slots=True)
class UspV1Section:
    """Section 6: a US Privacy string (``1YNN``), deprecated in GPP but still common."""

    section_id: ClassVar[int] = 6
    privacy: USPrivacy


@dataclass(frozen=True, slots=True)
class UsNatSection:
    """Section 7, MSPA US National. Enums: notices 0 n/a / 1 yes / 2 no; opt-outs 0 n/a /
    1 opted out / 2 did not; consents 0 n/a / 1 no consent / 2 consent.

    ``sensitive_data_processing`` always has 16 entries and ``known_child_sensitive_data_consents``
    3 (legacy 12/2 strings are zero-extended). ``gpc`` is False when the sub-section is absent.
    """

    section_id: ClassVar[int] = 7
    version: int
    sharing_notice: int
    sale_opt_out_notice: int
    sharing_opt_out_notice: int
    targeted_advertising_opt_out_notice: int
    sensitive_data_processing_opt_out_notice: int
    sensitive_data_limit_use_notice: int
    sale_opt_out: int
    sharing_opt_out: int
    targeted_advertising_opt_out: int
    sensitive_data_processing: tuple[int, ...]
    known_child_sensitive_data_consents: tuple[int, ...]
    personal_data_consents: int
    mspa_covered_transaction: int
    mspa_opt_out_option_mode: int
    mspa_service_provider_mode: int
    gpc_segment_included: bool = False
    gpc: bool = False


@dataclass(frozen=True, slots=True)
class UsCaSection:
    """Section 8, California. ``sensitive_data_processing`` (9) holds opt-outs: 1 = opted out."""

    section_id: ClassVar[int] = 8
    version: int
    sale_opt_out_notice: int
    sharing_opt_out_notice: int
    sensitive_data_limit_use_notice: int
    sale_opt_out: int
    sharing_opt_out: int
    sensitive_data_processing: tuple[int, ...]
    known_child_sensitive_data_consents: tuple[int, ...]
    personal_data_consents: int
    mspa_covered_transaction: int
    mspa_opt_out_option_mode: int
    mspa_service_provider_mode: int
    gpc_segment_included: bool = False
    gpc: bool = False


@dataclass(frozen=True, slots=True)
class UsStateSection:
    """Sections 9-12 (usva, usco, usut, usct): sale and targeted-advertising opt-outs.

    Lengths differ per state: sensitive data 8 (usco 7), known child 1 (usct 3);
    ``sensitive_data_processing_opt_out_notice`` exists only in usut (``None`` elsewhere).
    """

    section_id: int
    version: int
    sharing_notice: int
    sale_opt_out_notice: int
    targeted_advertising_opt_out_notice: int
    sensitive_data_processing_opt_out_notice: int | None
    sale_opt_out: int
    targeted_advertising_opt_out: int
    sensitive_data_processing: tuple[int, ...]
    known_child_sensitive_data_consents: tuple[int, ...]
    mspa_covered_transaction: int
    mspa_opt_out_option_mode: int
    mspa_service_provider_mode: int
    gpc_segment_included: bool = False
    gpc: bool = False

    @property
    def name(self) -> str:
        """The section's API prefix (``usva``...)."""
        return SECTION_NAMES[self.section_id]


@dataclass(frozen=True, slots=True)
class RawSection:
    """A section this module does not decode (tcfcav1, later US states...), kept as text."""

    section_id: int
    raw: str


Section: TypeAlias = (
    TcfEuV2Section | UspV1Section | UsNatSection | UsCaSection | UsStateSection | RawSection
)

US_STATE_LAYOUTS: dict[int, tuple[int, int, bool, bool]] = {
    9: (8, 1, False, False),
    10: (7, 1, False, True),
    11: (8, 1, True, False),
    12: (8, 3, False, True),
}
"""Per state section: (sensitive-data count, known-child count, has the sensitive-data
opt-out notice, has a GPC sub-section), from iabgpp-es ``Us{Va,Co,Ut,Ct}CoreSegment.ts``."""

_USNAT_LEGACY_BITS = 70
"""usnat cores shorter than this (60 or 66 bits) use the 12/2 legacy layout."""


def _split_subsections(body: str, what: str, has_gpc: bool) -> tuple[str, bool, bool]:
    """Split off the optional GPC sub-section: ``(core, gpc_segment_included, gpc)``."""
    core, *subsections = body.split(".")
    if not subsections:
        return core, False, False
    if not has_gpc:
        raise GPPStringError("bad_section", f"{what} defines no sub-sections")
    if len(subsections) > 1:
        raise GPPStringError("bad_section", f"{what} has more than one sub-section")
    reader = BitReader(subsections[0], f"{what} sub-section")
    if reader.read_int(2) != 1:
        raise GPPStringError("bad_section", f"{what} sub-section is not a GPC sub-section")
    return core, True, reader.read_bool()


def _read_version(reader: BitReader, known: tuple[int, ...], what: str) -> int:
    version = reader.read_int(6)
    if version not in known:
        raise GPPStringError("bad_version", f"{what} version {version} is not supported")
    return version


def _padded(values: tuple[int, ...], length: int) -> tuple[int, ...]:
    """Zero-extend a legacy-length list (0 = not applicable)."""
    return values + (0,) * (length - len(values))


def decode_usnat(body: str) -> UsNatSection:
    """Decode a usnat (7) section body: core plus optional GPC sub-section."""
    core, gpc_included, gpc = _split_subsections(body, "usnat", has_gpc=True)
    r = BitReader(core, "usnat core")
    legacy = r.bit_length < _USNAT_LEGACY_BITS
    # Fields are read in argument order: Python evaluates call arguments left to right.
    return UsNatSection(
        version=_read_version(r, (1, 2), "usnat"),
        sharing_notice=r.read_enum("SharingNotice"),
        sale_opt_out_notice=r.read_enum("SaleOptOutNotice"),
        sharing_opt_out_notice=r.read_enum("SharingOptOutNotice"),
        targeted_advertising_opt_out_notice=r.read_enum("TargetedAdvertisingOptOutNotice"),
        sensitive_data_processing_opt_out_notice=r.read_enum("SensitiveDataProcessingOptOutNotice"),
        sensitive_data_limit_use_notice=r.read_enum("SensitiveDataLimitUseNotice"),
        sale_opt_out=r.read_enum("SaleOptOut"),
        sharing_opt_out=r.read_enum("SharingOptOut"),
        targeted_advertising_opt_out=r.read_enum("TargetedAdvertisingOptOut"),
        sensitive_data_processing=_padded(
            r.read_enums(12 if legacy else 16, "SensitiveDataProcessing"), 16
        ),
        known_child_sensitive_data_consents=_padded(
            r.read_enums(2 if legacy else 3, "KnownChildSensitiveDataConsents"), 3
        ),
        personal_data_consents=r.read_enum("PersonalDataConsents"),
        mspa_covered_transaction=r.read_enum("MspaCoveredTransaction"),
        mspa_opt_out_option_mode=r.read_enum("MspaOptOutOptionMode"),
        mspa_service_provider_mode=r.read_enum("MspaServiceProviderMode"),
        gpc_segment_included=gpc_included,
        gpc=gpc,
    )


def decode_usca(body: str) -> UsCaSection:
    """Decode a usca (8) section body: core plus optional GPC sub-section."""
    core, gpc_included, gpc = _split_subsections(body, "usca", has_gpc=True)
    r = BitReader(core, "usca core")
    return UsCaSection(
        version=_read_version(r, (1,), "usca"),
        sale_opt_out_notice=r.read_enum("SaleOptOutNotice"),
        sharing_opt_out_notice=r.read_enum("SharingOptOutNotice"),
        sensitive_data_limit_use_notice=r.read_enum("SensitiveDataLimitUseNotice"),
        sale_opt_out=r.read_enum("SaleOptOut"),
        sharing_opt_out=r.read_enum("SharingOptOut"),
        sensitive_data_processing=r.read_enums(9, "SensitiveDataProcessing"),
        known_child_sensitive_data_consents=r.read_enums(2, "KnownChildSensitiveDataConsents"),
        personal_data_consents=r.read_enum("PersonalDataConsents"),
        mspa_covered_transaction=r.read_enum("MspaCoveredTransaction"),
        mspa_opt_out_option_mode=r.read_enum("MspaOptOutOptionMode"),
        mspa_service_provider_mode=r.read_enum("MspaServiceProviderMode"),
        gpc_segment_included=gpc_included,
        gpc=gpc,
    )


def decode_us_state(section_id: int, body: str) -> UsStateSection:
    """Decode a usva (9), usco (10), usut (11) or usct (12) section body."""
    sensitive_count, child_count, has_sensitive_notice, has_gpc = US_STATE_LAYOUTS[section_id]
    name = SECTION_NAMES[section_id]
    core, gpc_included, gpc = _split_subsections(body, name, has_gpc=has_gpc)
    r = BitReader(core, f"{name} core")
    return UsStateSection(
        section_id=section_id,
        version=_read_version(r, (1,), name),
        sharing_notice=r.read_enum("SharingNotice"),
        sale_opt_out_notice=r.read_enum("SaleOptOutNotice"),
        targeted_advertising_opt_out_notice=r.read_enum("TargetedAdvertisingOptOutNotice"),
        sensitive_data_processing_opt_out_notice=(
            r.read_enum("SensitiveDataProcessingOptOutNotice") if has_sensitive_notice else None
        ),
        sale_opt_out=r.read_enum("SaleOptOut"),
        targeted_advertising_opt_out=r.read_enum("TargetedAdvertisingOptOut"),
        sensitive_data_processing=r.read_enums(sensitive_count, "SensitiveDataProcessing"),
        known_child_sensitive_data_consents=r.read_enums(
            child_count, "KnownChildSensitiveDataConsents"
        ),
        mspa_covered_transaction=r.read_enum("MspaCoveredTransaction"),
        mspa_opt_out_option_mode=r.read_enum("MspaOptOutOptionMode"),
        mspa_service_provider_mode=r.read_enum("MspaServiceProviderMode"),
        gpc_segment_included=gpc_included,
        gpc=gpc,
    )


def decode_section(section_id: int, body: str) -> Section:
    """Decode one section body by id; unknown ids come back as a ``RawSection``."""
    if section_id == 2:
        if not _TC_STRING.fullmatch(body):
            raise GPPStringError("bad_base64", "tcfeuv2 is not base64url segments joined by '.'")
        return TcfEuV2Section(body)
    if section_id == 6:
        try:
            return UspV1Section(decode_us_privacy(body))
        except USPrivacyError as error:
            raise GPPStringError("bad_section", f"uspv1: {error.message}") from error
    if section_id == 7:
        return decode_usnat(body)
    if section_id == 8:
        return decode_usca(body)
    if section_id in US_STATE_LAYOUTS:
        return decode_us_state(section_id, body)
    return RawSection(section_id, body)
