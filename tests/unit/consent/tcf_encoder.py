"""Test-only TC string encoder: the inverse of ``consent.tcf.decode_tc_string``.

``encode_tc_string`` writes a ``TCString`` record with the layout of consent-standards.md
section 1, so property tests can round-trip records. ``BitWriter`` and the ``write_*`` helpers
are public so tests can hand-craft malformed strings field by field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from consent.tcf import PublisherRestriction, PublisherTC, TCString
from consent.tcf_bits import BASE64URL_ALPHABET

VendorEncoding = Literal["bitfield", "range"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DECISECOND = timedelta(milliseconds=100)


class BitWriter:
    """Appends big-endian fields; ``text`` packs them six bits per base64url character."""

    def __init__(self) -> None:
        self._chunks: list[str] = []

    def uint(self, value: int, width: int) -> BitWriter:
        """An unsigned ``width``-bit integer (``value`` must fit)."""
        assert 0 <= value < (1 << width) or (width == 0 and value == 0), (value, width)
        if width:
            self._chunks.append(format(value, f"0{width}b"))
        return self

    def raw(self, bits: str) -> BitWriter:
        """Bits given as a string of ``0`` and ``1``, appended as they are."""
        assert set(bits) <= {"0", "1"}
        self._chunks.append(bits)
        return self

    def flag(self, value: bool) -> BitWriter:
        """One bit."""
        return self.uint(int(value), 1)

    def id_set(self, ids: Iterable[int], width: int) -> BitWriter:
        """A bit field of ``width`` bits where id ``i`` sets bit ``i - 1``."""
        field = ["0"] * width
        for vendor_id in ids:
            field[vendor_id - 1] = "1"
        self._chunks.append("".join(field))
        return self

    def letters(self, code: str) -> BitWriter:
        """Two letters A-Z, six bits each."""
        for letter in code:
            self.uint(ord(letter) - ord("A"), 6)
        return self

    def time(self, moment: datetime) -> BitWriter:
        """Deciseconds since the Unix epoch, 36 bits."""
        return self.uint((moment - EPOCH) // DECISECOND, 36)

    @property
    def bits(self) -> str:
        """Everything written so far."""
        return "".join(self._chunks)

    def text(self, pad_to: int = 6) -> str:
        """Zero-pad to a multiple of ``pad_to`` bits (and of 6), then base64url-encode."""
        bits = self.bits
        for multiple in (pad_to, 6):
            bits += "0" * (-len(bits) % multiple)
        return "".join(BASE64URL_ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def runs(ids: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive ids grouped into inclusive ``(start, end)`` runs, ascending."""
    result: list[tuple[int, int]] = []
    for vendor_id in sorted(ids):
        if result and vendor_id == result[-1][1] + 1:
            result[-1] = (result[-1][0], vendor_id)
        else:
            result.append((vendor_id, vendor_id))
    return result


def write_range_entries(writer: BitWriter, entries: Sequence[tuple[int, int]]) -> None:
    """``NumEntries`` then each entry; ``start == end`` is written as a single id."""
    writer.uint(len(entries), 12)
    for start, end in entries:
        writer.flag(start != end).uint(start, 16)
        if start != end:
            writer.uint(end, 16)


def write_vendor_section(
    writer: BitWriter,
    ids: frozenset[int],
    encoding: VendorEncoding,
    max_vendor_id: int | None = None,
) -> None:
    """``MaxVendorId`` (the highest id unless given), ``IsRangeEncoding``, then the ids."""
    max_id = max(ids, default=0) if max_vendor_id is None else max_vendor_id
    writer.uint(max_id, 16)
    if encoding == "bitfield":
        writer.flag(False).id_set(ids, max_id)
    else:
        writer.flag(True)
        write_range_entries(writer, runs(ids))


def write_core_header(writer: BitWriter, tc: TCString) -> None:
    """Every core field before the vendor consent section (bits 0-212)."""
    writer.uint(tc.version, 6).time(tc.created).time(tc.last_updated)
    writer.uint(tc.cmp_id, 12).uint(tc.cmp_version, 12).uint(tc.consent_screen, 6)
    writer.letters(tc.consent_language).uint(tc.vendor_list_version, 12)
    writer.uint(tc.tcf_policy_version, 6).flag(tc.is_service_specific)
    writer.flag(tc.use_non_standard_texts).id_set(tc.special_feature_optins, 12)
    writer.id_set(tc.purpose_consents, 24).id_set(tc.purpose_legitimate_interests, 24)
    writer.flag(tc.purpose_one_treatment).letters(tc.publisher_cc)


def write_publisher_restrictions(
    writer: BitWriter, restrictions: Sequence[PublisherRestriction]
) -> None:
    """``NumPubRestrictions`` and each restriction with range entries."""
    writer.uint(len(restrictions), 12)
    for restriction in restrictions:
        writer.uint(restriction.purpose_id, 6).uint(restriction.restriction_type, 2)
        write_range_entries(writer, runs(restriction.vendor_ids))


def encode_core(tc: TCString, encoding: VendorEncoding, pad_to: int = 6) -> str:
    """The core segment's text."""
    writer = BitWriter()
    write_core_header(writer, tc)
    write_vendor_section(writer, tc.vendor_consents, encoding)
    write_vendor_section(writer, tc.vendor_legitimate_interests, encoding)
    write_publisher_restrictions(writer, tc.publisher_restrictions)
    return writer.text(pad_to)


def encode_vendor_segment(
    segment_type: int, ids: frozenset[int], encoding: VendorEncoding, pad_to: int = 6
) -> str:
    """A DisclosedVendors (1) or AllowedVendors (2) segment's text."""
    writer = BitWriter().uint(segment_type, 3)
    write_vendor_section(writer, ids, encoding)
    return writer.text(pad_to)


def encode_publisher_tc(publisher_tc: PublisherTC, pad_to: int = 6) -> str:
    """A Publisher TC (3) segment's text."""
    writer = BitWriter().uint(3, 3)
    writer.id_set(publisher_tc.purpose_consents, 24)
    writer.id_set(publisher_tc.purpose_legitimate_interests, 24)
    writer.uint(publisher_tc.num_custom_purposes, 6)
    writer.id_set(publisher_tc.custom_purpose_consents, publisher_tc.num_custom_purposes)
    writer.id_set(
        publisher_tc.custom_purpose_legitimate_interests, publisher_tc.num_custom_purposes
    )
    return writer.text(pad_to)


def encode_segments(
    tc: TCString,
    vendor_encoding: VendorEncoding = "bitfield",
    allowed_vendors: frozenset[int] | None = None,
    pad_to: int = 6,
) -> list[str]:
    """Core first, then DisclosedVendors, AllowedVendors and Publisher TC when present."""
    segments = [encode_core(tc, vendor_encoding, pad_to)]
    if tc.disclosed_vendors is not None:
        segments.append(encode_vendor_segment(1, tc.disclosed_vendors, vendor_encoding, pad_to))
    if allowed_vendors is not None:
        segments.append(encode_vendor_segment(2, allowed_vendors, vendor_encoding, pad_to))
    if tc.publisher_tc is not None:
        segments.append(encode_publisher_tc(tc.publisher_tc, pad_to))
    return segments


def encode_tc_string(
    tc: TCString,
    vendor_encoding: VendorEncoding = "bitfield",
    allowed_vendors: frozenset[int] | None = None,
    pad_to: int = 6,
) -> str:
    """The whole TC string; ``pad_to=24`` pads like iabtcf-es, the default pads minimally."""
    return ".".join(encode_segments(tc, vendor_encoding, allowed_vendors, pad_to))
