"""IAB US Privacy string (``1YNN``): the CCPA signal, standalone or as GPP section 6 (uspv1).

Four ASCII characters (InteractiveAdvertisingBureau/USPrivacy ``CCPA/US Privacy String.md``):

====  =====================================  ==========================================
Pos   Component                              Values
====  =====================================  ==========================================
1     specification version                  ``1``
2     notice / opportunity to opt out given  ``Y``, ``N``, ``-``
3     opt-out of sale                        ``Y`` opted out, ``N`` did not, ``-`` n/a
4     LSPA covered transaction               ``Y``, ``N``, ``-``
====  =====================================  ==========================================

``-`` decodes to ``None``. ``1---`` means CCPA does not apply; otherwise ``-`` marks an unknown
notice or LSPA flag, but "Opt-Out of Sale may never be unknown", so ``-`` in position 3 is only
valid in ``1---`` (anything else is ``bad_char``). Lower-case ``y`` and ``n`` are accepted as a
lenient extension (the spec prints upper case only).
"""

from __future__ import annotations

from dataclasses import dataclass

from consent.errors import USPrivacyError

US_PRIVACY_VERSION = 1
"""The only version the spec defines."""

_FLAGS: dict[str, bool | None] = {"Y": True, "N": False, "-": None, "y": True, "n": False}
_POSITIONS = ("notice", "opt-out of sale", "LSPA covered")


@dataclass(frozen=True, slots=True)
class USPrivacy:
    """A decoded US Privacy string. Each flag is ``True`` (Y), ``False`` (N) or ``None`` (-)."""

    version: int
    notice: bool | None
    opt_out_sale: bool | None
    lspa_covered: bool | None

    @property
    def opted_out_of_sale(self) -> bool:
        """True only when the user opted out of sale (character 3 is ``Y``)."""
        return self.opt_out_sale is True

    def to_string(self) -> str:
        """The canonical (upper-case) four-character form."""
        return f"{self.version}" + "".join(
            "-" if flag is None else ("Y" if flag else "N")
            for flag in (self.notice, self.opt_out_sale, self.lspa_covered)
        )


def decode_us_privacy(text: str) -> USPrivacy:
    """Decode a ``us_privacy`` value such as ``1YNN``.

    Raises ``USPrivacyError`` with code ``bad_length`` (not four characters), ``bad_version``
    (first character is not ``1``) or ``bad_char`` (a flag is not ``Y``, ``N`` or ``-``, or the
    opt-out of sale is ``-`` while another flag is set).
    """
    if len(text) != 4:
        raise USPrivacyError("bad_length", f"expected 4 characters, got {len(text)}")
    if text[0] != str(US_PRIVACY_VERSION):
        raise USPrivacyError("bad_version", "only version 1 is defined")
    flags: list[bool | None] = []
    for position, char in zip(_POSITIONS, text[1:], strict=True):
        if char not in _FLAGS:
            raise USPrivacyError("bad_char", f"the {position} flag must be Y, N or -")
        flags.append(_FLAGS[char])
    notice, opt_out_sale, lspa_covered = flags
    if opt_out_sale is None and text[1:] != "---":
        raise USPrivacyError("bad_char", "opt-out of sale may be '-' only in 1---")
    return USPrivacy(US_PRIVACY_VERSION, notice, opt_out_sale, lspa_covered)
