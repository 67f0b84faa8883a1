"""Bit-level reading for IAB TCF v2 TC strings: text to bits, fixed-width fields, vendor sections.

The TC string's text encoding (consent-standards.md section 1.1): each segment is base64url
without padding, and every character carries exactly six bits, most significant first. Fields
are big-endian and read left to right. Bits left over after the last field are padding.

Vendor sections (section 1.3) are either a bit field (bit ``i`` = vendor ``i + 1``) or a list of
range entries. A range can name up to 65535 ids in 33 bits, so expansion is the one place where a
small hostile string could cost a lot: ranges are merged before they are expanded, and every id a
decode materialises is charged to an ``IdBudget``.

Everything here raises ``TCStringError``; no message contains the string itself.
"""

from __future__ import annotations

import re
from itertools import chain

from consent.errors import TCStringError

BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
"""Character ``i`` carries the six-bit value ``i``."""

MAX_VENDOR_ID = 0xFFFF
"""Vendor ids are 16-bit fields; 0 is not a vendor."""

_SIX_BITS = str.maketrans({char: f"{value:06b}" for value, char in enumerate(BASE64URL_ALPHABET)})
_SEGMENT_TEXT = re.compile(r"[A-Za-z0-9_-]*")
_MAX_PADDING = 2
"""Standard base64 ends in at most two ``=``; iabtcf-java's tests parse a segment that has one."""


def segment_bits(segment: str) -> str:
    """The bits of one dot-separated segment, as a string of ``0`` and ``1``.

    Trailing ``=`` padding (at most two) is tolerated and dropped; any other character outside
    the base64url alphabet, including the standard alphabet's ``+`` and ``/``, is ``bad_base64``.
    """
    body = segment.rstrip("=")
    if len(segment) - len(body) > _MAX_PADDING:
        raise TCStringError("bad_base64", "a segment ends in more than two '=' characters")
    if not _SEGMENT_TEXT.fullmatch(body):
        raise TCStringError("bad_base64", "a segment contains a character outside base64url")
    if not body:
        raise TCStringError("truncated", "a segment is empty")
    return body.translate(_SIX_BITS)


class IdBudget:
    """Caps how many vendor ids one decode may materialise across all of its sets."""

    __slots__ = ("_left", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._left = limit

    def spend(self, count: int) -> None:
        """Charge ``count`` ids, or raise ``too_large`` when the budget would be exceeded."""
        if count > self._left:
            raise TCStringError(
                "too_large", f"the string expands to more than {self._limit} vendor ids"
            )
        self._left -= count


class BitReader:
    """Reads fixed-width big-endian fields from one segment's bits, left to right."""

    __slots__ = ("_bits", "_pos")

    def __init__(self, bits: str) -> None:
        self._bits = bits
        self._pos = 0

    def _take(self, width: int, field: str) -> str:
        end = self._pos + width
        if end > len(self._bits):
            left = len(self._bits) - self._pos
            raise TCStringError("truncated", f"{field} needs {width} bits but {left} are left")
        chunk = self._bits[self._pos : end]
        self._pos = end
        return chunk

    def read_int(self, width: int, field: str) -> int:
        """An unsigned integer of ``width`` bits."""
        chunk = self._take(width, field)
        return int(chunk, 2) if chunk else 0

    def read_flag(self, field: str) -> bool:
        """One bit as a boolean."""
        return self._take(1, field) == "1"

    def read_letters(self, field: str, code: str) -> str:
        """Two letters, six bits each, ``A`` = 0 to ``Z`` = 25; anything else raises ``code``."""
        first, second = self.read_int(6, field), self.read_int(6, field)
        if first > 25 or second > 25:
            raise TCStringError(code, f"{field} is not two letters A-Z")
        return chr(ord("A") + first) + chr(ord("A") + second)

    def read_id_set(self, width: int, field: str, budget: IdBudget | None = None) -> frozenset[int]:
        """A bit field of ``width`` bits: bit ``i`` (0-based) set means id ``i + 1``."""
        chunk = self._take(width, field)
        if budget is not None:
            budget.spend(chunk.count("1"))
        ids: list[int] = []
        index = chunk.find("1")
        while index != -1:
            ids.append(index + 1)
            index = chunk.find("1", index + 1)
        return frozenset(ids)


def read_range_entries(reader: BitReader, field: str, max_id: int) -> list[tuple[int, int]]:
    """``NumEntries`` then that many ``IsARange, StartOrOnlyVendorId[, EndVendorId]`` entries.

    Returns inclusive ``(start, end)`` pairs. Id 0 is ``bad_vendor_id``; an end before its start,
    or past ``max_id``, is ``bad_range``; a single id past ``max_id`` is ``bad_vendor_id``.
    """
    count = reader.read_int(12, f"{field}.NumEntries")
    entries: list[tuple[int, int]] = []
    for _ in range(count):
        is_range = reader.read_flag(f"{field}.IsARange")
        start = reader.read_int(16, f"{field}.StartOrOnlyVendorId")
        end = reader.read_int(16, f"{field}.EndVendorId") if is_range else start
        if start == 0:
            raise TCStringError("bad_vendor_id", f"{field} names vendor id 0")
        if end < start:
            raise TCStringError(
                "bad_range", f"{field} has a range {start}-{end} ending before it starts"
            )
        if end > max_id:
            code = "bad_range" if is_range else "bad_vendor_id"
            raise TCStringError(code, f"{field} names vendor {end}, past its maximum {max_id}")
        entries.append((start, end))
    return entries


def expand_ranges(entries: list[tuple[int, int]], budget: IdBudget) -> frozenset[int]:
    """The ids covered by inclusive ranges; overlaps merge first, then are charged to ``budget``."""
    merged: list[list[int]] = []
    for start, end in sorted(entries):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    budget.spend(sum(end - start + 1 for start, end in merged))
    return frozenset(chain.from_iterable(range(start, end + 1) for start, end in merged))


def read_vendor_section(reader: BitReader, field: str, budget: IdBudget) -> frozenset[int]:
    """``MaxVendorId``, ``IsRangeEncoding``, then a bit field or range entries (section 1.3)."""
    max_id = reader.read_int(16, f"{field}.MaxVendorId")
    if reader.read_flag(f"{field}.IsRangeEncoding"):
        return expand_ranges(read_range_entries(reader, field, max_id), budget)
    return reader.read_id_set(max_id, f"{field}.BitField", budget)
