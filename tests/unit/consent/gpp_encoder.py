"""Test-only GPP encoder: header with Fibonacci ranges, usnat/usca/state sections, GPC.

Written from the spec tables (reference ``consent-standards.md`` section 3), independently of
``consent.gpp``'s reader, so that round-trip properties check one against the other. Padding
follows iabgpp-es ``CompressedBase64UrlEncoder``: zero bits up to a multiple of 8, then of 6.
"""

from __future__ import annotations

from collections.abc import Sequence

from consent.gpp import UsCaSection, UsNatSection, UsStateSection

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

STATE_SHAPES = {9: (8, 1, False), 10: (7, 1, False), 11: (8, 1, True), 12: (8, 3, False)}
"""Per state id (usva, usco, usut, usct): sensitive-data count, known-child count, and whether
the core has a SensitiveDataProcessingOptOutNotice (iabgpp-es ``Us*CoreSegment.ts``)."""

STATE_GPC = {9: False, 10: True, 11: False, 12: True}
"""Per state id: whether the section defines a GPC sub-section."""


def int_bits(value: int, width: int) -> str:
    """``value`` as ``width`` big-endian bits."""
    assert 0 <= value < 1 << width
    return format(value, f"0{width}b")


def enum_bits(values: Sequence[int]) -> str:
    """A run of 2-bit enums."""
    return "".join(int_bits(value, 2) for value in values)


def fibonacci_bits(value: int) -> str:
    """Fibonacci code of ``value`` >= 1: weights 1, 2, 3, 5... left to right, then a ``1``."""
    assert value >= 1
    weights = [1, 2]
    while weights[-1] <= value:
        weights.append(weights[-1] + weights[-2])
    bits = ["0"] * len(weights)
    for index in range(len(weights) - 1, -1, -1):
        if weights[index] <= value:
            bits[index] = "1"
            value -= weights[index]
    code = "".join(bits).rstrip("0")
    return code + "1"


def fibonacci_range_bits(ids: Sequence[int]) -> str:
    """Range(Fibonacci): Int(12) entry count, then singles and groups of consecutive ids."""
    ordered = sorted(set(ids))
    groups: list[list[int]] = []
    for section_id in ordered:
        if groups and groups[-1][-1] + 1 == section_id:
            groups[-1].append(section_id)
        else:
            groups.append([section_id])
    bits = int_bits(len(groups), 12)
    last = 0
    for group in groups:
        if len(group) == 1:
            bits += "0" + fibonacci_bits(group[0] - last)
        else:
            bits += "1" + fibonacci_bits(group[0] - last) + fibonacci_bits(group[-1] - group[0])
        last = group[-1]
    return bits


def to_base64url(bits: str) -> str:
    """Pad to a multiple of 8 bits, then of 6, and map each 6 bits to a character."""
    bits += "0" * (-len(bits) % 8)
    bits += "0" * (-len(bits) % 6)
    return "".join(ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def encode_header(section_ids: Sequence[int], *, version: int = 1) -> str:
    """A GPP header (type 3) listing ``section_ids``."""
    return to_base64url(int_bits(3, 6) + int_bits(version, 6) + fibonacci_range_bits(section_ids))


def encode_gpc(gpc: bool) -> str:
    """The GPC sub-section: SubsectionType 1, then the Gpc bit (``QA`` / ``YA``)."""
    return to_base64url("01" + ("1" if gpc else "0"))


def _with_gpc(core_bits: str, included: bool, gpc: bool) -> str:
    core = to_base64url(core_bits)
    return f"{core}.{encode_gpc(gpc)}" if included else core


def encode_usnat(section: UsNatSection, *, legacy: bool = False) -> str:
    """A usnat body; ``legacy`` writes the 12/2 layout (the tail entries must then be 0)."""
    sensitive = section.sensitive_data_processing
    child = section.known_child_sensitive_data_consents
    if legacy:
        assert not any(sensitive[12:])
        assert not any(child[2:])
        sensitive, child = sensitive[:12], child[:2]
    bits = int_bits(section.version, 6) + enum_bits(
        [
            section.sharing_notice,
            section.sale_opt_out_notice,
            section.sharing_opt_out_notice,
            section.targeted_advertising_opt_out_notice,
            section.sensitive_data_processing_opt_out_notice,
            section.sensitive_data_limit_use_notice,
            section.sale_opt_out,
            section.sharing_opt_out,
            section.targeted_advertising_opt_out,
            *sensitive,
            *child,
            section.personal_data_consents,
            section.mspa_covered_transaction,
            section.mspa_opt_out_option_mode,
            section.mspa_service_provider_mode,
        ]
    )
    return _with_gpc(bits, section.gpc_segment_included, section.gpc)


def encode_usca(section: UsCaSection) -> str:
    """A usca body."""
    bits = int_bits(section.version, 6) + enum_bits(
        [
            section.sale_opt_out_notice,
            section.sharing_opt_out_notice,
            section.sensitive_data_limit_use_notice,
            section.sale_opt_out,
            section.sharing_opt_out,
            *section.sensitive_data_processing,
            *section.known_child_sensitive_data_consents,
            section.personal_data_consents,
            section.mspa_covered_transaction,
            section.mspa_opt_out_option_mode,
            section.mspa_service_provider_mode,
        ]
    )
    return _with_gpc(bits, section.gpc_segment_included, section.gpc)


def encode_us_state(section: UsStateSection) -> str:
    """A usva / usco / usut / usct body."""
    sensitive_notice = section.sensitive_data_processing_opt_out_notice
    notices = [
        section.sharing_notice,
        section.sale_opt_out_notice,
        section.targeted_advertising_opt_out_notice,
    ]
    if sensitive_notice is not None:
        notices.append(sensitive_notice)
    bits = int_bits(section.version, 6) + enum_bits(
        [
            *notices,
            section.sale_opt_out,
            section.targeted_advertising_opt_out,
            *section.sensitive_data_processing,
            *section.known_child_sensitive_data_consents,
            section.mspa_covered_transaction,
            section.mspa_opt_out_option_mode,
            section.mspa_service_provider_mode,
        ]
    )
    return _with_gpc(bits, section.gpc_segment_included, section.gpc)


def encode_gpp(sections: Sequence[tuple[int, str]]) -> str:
    """A whole GPP string from ``(section_id, body)`` pairs, sorted by id as the header is."""
    ordered = sorted(sections)
    return "~".join(
        [encode_header([section_id for section_id, _ in ordered])] + [body for _, body in ordered]
    )
