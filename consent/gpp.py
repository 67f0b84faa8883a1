"""IAB Global Privacy Platform (GPP) strings: header, sections, and the US routing summary.

A GPP string is ``<header>~<section>~<section>...`` (reference ``consent-standards.md`` 3.1):

- the header (section id 3) is ``Type Int(6) = 3``, ``Version Int(6) = 1`` and the section ids as
  a Range(Fibonacci): ``Int(12)`` entry count, then per entry an ``IsGroup`` bit and Fibonacci
  offsets from the last id seen (a group is start offset, then ``end - start``);
- the sections follow in the header's order, one per id; sub-sections are joined with ``.``.

``decode_gpp_string`` is pure and bounded: input is capped at ``MAX_GPP_CHARS``, Fibonacci codes
at 32 bits, and the header may not list more ids than the string has sections. Section layouts
live in ``consent.gpp_sections``. Errors are ``GPPStringError`` with these codes:

==============  ==============================================================================
``too_long``    input longer than ``MAX_GPP_CHARS``
``bad_base64``  a character outside ``A-Za-z0-9-_`` where bits are expected
``truncated``   empty input, or a header / section with fewer bits than its fields need
``bad_header``  header type is not 3, an over-long Fibonacci code, or ids and sections differ
``bad_version`` header version is not 1, or a section version this module does not know
``bad_section`` a section field with an undefined value, a bad sub-section, a bad uspv1 body
``bad_sid``     (``decode_gpp_sid`` only) a ``gpp_sid`` that is not comma-separated integers
==============  ==============================================================================

``us_opt_outs`` reduces the in-force US sections to the opt-outs the router acts on (3.8).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from consent.errors import GPPStringError
from consent.gpp_sections import (
    SECTION_NAMES,
    BitReader,
    RawSection,
    Section,
    TcfEuV2Section,
    UsCaSection,
    UsNatSection,
    UspV1Section,
    UsStateSection,
    decode_section,
)

__all__ = [
    "GPP_VERSION",
    "MAX_GPP_CHARS",
    "SECTION_NAMES",
    "US_SECTION_IDS",
    "GPPString",
    "RawSection",
    "Section",
    "TcfEuV2Section",
    "UsCaSection",
    "UsNatSection",
    "UsOptOuts",
    "UsStateSection",
    "UspV1Section",
    "decode_gpp_header",
    "decode_gpp_sid",
    "decode_gpp_string",
    "us_opt_outs",
]

GPP_VERSION = 1
"""The only header version defined."""

HEADER_TYPE = 3
"""The header's section id, stored in its first 6 bits (hence the leading ``D``)."""

MAX_GPP_CHARS = 64 * 1024
"""Longest GPP string accepted."""

MAX_HEADER_IDS = 4096
"""Most section ids ``decode_gpp_header`` expands when called on its own."""

MAX_SID_CHARS = 256
"""Longest ``gpp_sid`` value accepted."""

US_SECTION_IDS = frozenset(range(6, 28))
"""uspv1 (6) and the US national and state sections (7-27) the spec lists today."""

_SID = re.compile(r"-?[0-9]{1,6}")


@dataclass(frozen=True, slots=True)
class GPPString:
    """A decoded GPP string: header version, section ids (header order), decoded sections."""

    version: int
    section_ids: tuple[int, ...]
    sections: tuple[Section, ...]

    def section(self, section_id: int) -> Section | None:
        """The section with this id, or ``None`` when the string does not carry it."""
        for section in self.sections:
            if section.section_id == section_id:
                return section
        return None

    def applicable_section_ids(self, gpp_sid: Iterable[int] | None = None) -> tuple[int, ...]:
        """The in-force section ids: ``gpp_sid`` when the caller has one, else the header's.

        ``gpp_sid`` (URL param, or ``applicableSections`` from ``__gpp('ping')``) says which
        sections apply to this transaction; duplicates are dropped, order kept.
        """
        if gpp_sid is None:
            return self.section_ids
        return tuple(dict.fromkeys(gpp_sid))


@dataclass(frozen=True, slots=True)
class UsOptOuts:
    """The US opt-outs of the in-force sections, ORed together (reference section 3.8).

    An opt-out field counts only when it holds 1 ("opted out"); 2 ("did not opt out") and
    0 ("not applicable") never block. uspv1 contributes ``sale_opt_out`` (character 3 = ``Y``).
    ``sensitive_data_restricted`` / ``known_child_restricted``: some sensitive-data or known-child
    entry is 1 (no consent, or opted out in usca/usut). ``sources`` are the section ids read;
    ``undecoded`` are in-force US ids this module could not read (absent from the string, or a
    state kept raw): a caller failing closed treats them as opted out.
    """

    sale_opt_out: bool = False
    sharing_opt_out: bool = False
    targeted_advertising_opt_out: bool = False
    gpc: bool = False
    sensitive_data_restricted: bool = False
    known_child_restricted: bool = False
    sources: tuple[int, ...] = ()
    undecoded: tuple[int, ...] = ()

    @property
    def any_opt_out(self) -> bool:
        """Sale, sharing or targeted-advertising opt-out, or GPC: block advertising uses."""
        return (
            self.sale_opt_out
            or self.sharing_opt_out
            or self.targeted_advertising_opt_out
            or self.gpc
        )


def decode_gpp_string(text: str) -> GPPString:
    """Decode a GPP string such as ``DBABTA~1YNN``. Unknown section ids are kept raw."""
    if len(text) > MAX_GPP_CHARS:
        raise GPPStringError("too_long", f"GPP string is longer than {MAX_GPP_CHARS} characters")
    if not text:
        raise GPPStringError("truncated", "GPP string is empty")
    header, *bodies = text.split("~")
    version, section_ids = decode_gpp_header(header, max_ids=len(bodies))
    if len(section_ids) != len(bodies):
        raise GPPStringError(
            "bad_header", f"header lists {len(section_ids)} sections, string has {len(bodies)}"
        )
    sections = tuple(
        decode_section(section_id, body)
        for section_id, body in zip(section_ids, bodies, strict=True)
    )
    return GPPString(version, section_ids, sections)


def decode_gpp_header(header: str, *, max_ids: int = MAX_HEADER_IDS) -> tuple[int, tuple[int, ...]]:
    """Decode a header alone: ``(version, section ids)``, ids ascending.

    Stops with ``bad_header`` as soon as the ids would outnumber ``max_ids`` (a group is
    checked before it is expanded), so a hostile range costs no more than ``max_ids``.
    """
    reader = BitReader(header, "header")
    if reader.read_int(6) != HEADER_TYPE:
        raise GPPStringError("bad_header", "not a GPP header (type is not 3)")
    version = reader.read_int(6)
    if version != GPP_VERSION:
        raise GPPStringError("bad_version", f"GPP header version {version} is not supported")
    too_many = GPPStringError("bad_header", f"header lists more than {max_ids} sections")
    entries = reader.read_int(12)
    if entries > max_ids:
        raise too_many
    ids: list[int] = []
    last = 0
    for _ in range(entries):
        if reader.read_bool():
            start = last + reader.read_fibonacci()
            last = start + reader.read_fibonacci()
            if len(ids) + last - start + 1 > max_ids:
                raise too_many
            ids.extend(range(start, last + 1))
        else:
            last += reader.read_fibonacci()
            ids.append(last)
            if len(ids) > max_ids:
                raise too_many
    return version, tuple(ids)


def decode_gpp_sid(text: str) -> tuple[int, ...]:
    """Decode a ``gpp_sid`` URL parameter (``7`` or ``2,6``; ``-1`` = none applies).

    Raises ``GPPStringError("bad_sid", ...)`` unless it is comma-separated integers.
    """
    if len(text) > MAX_SID_CHARS:
        raise GPPStringError("too_long", f"gpp_sid is longer than {MAX_SID_CHARS} characters")
    parts = [part.strip() for part in text.split(",")]
    if not all(_SID.fullmatch(part) for part in parts):
        raise GPPStringError("bad_sid", "gpp_sid must be comma-separated integers")
    return tuple(int(part) for part in parts)


def us_opt_outs(gpp: GPPString, gpp_sid: Iterable[int] | None = None) -> UsOptOuts:
    """Summarise the in-force US sections (``gpp_sid``, else every section in the header).

    Non-US ids (TCF...) are skipped; see ``UsOptOuts`` for the meaning of each flag.
    """
    sale = sharing = targeted = gpc = sensitive = child = False
    sources: list[int] = []
    undecoded: list[int] = []
    for section_id in gpp.applicable_section_ids(gpp_sid):
        if section_id not in US_SECTION_IDS:
            continue
        section = gpp.section(section_id)
        if isinstance(section, UspV1Section):
            sale = sale or section.privacy.opted_out_of_sale
        elif isinstance(section, UsNatSection | UsCaSection | UsStateSection):
            sale = sale or section.sale_opt_out == 1
            if not isinstance(section, UsStateSection):
                sharing = sharing or section.sharing_opt_out == 1
            if not isinstance(section, UsCaSection):
                targeted = targeted or section.targeted_advertising_opt_out == 1
            gpc = gpc or section.gpc
            sensitive = sensitive or 1 in section.sensitive_data_processing
            child = child or 1 in section.known_child_sensitive_data_consents
        else:
            undecoded.append(section_id)
            continue
        sources.append(section_id)
    return UsOptOuts(
        sale_opt_out=sale,
        sharing_opt_out=sharing,
        targeted_advertising_opt_out=targeted,
        gpc=gpc,
        sensitive_data_restricted=sensitive,
        known_child_restricted=child,
        sources=tuple(sources),
        undecoded=tuple(undecoded),
    )
