"""consent.usp: the US Privacy string (``1YNN``)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.errors import USPrivacyError
from consent.usp import USPrivacy, decode_us_privacy

# The four examples of InteractiveAdvertisingBureau/USPrivacy
# @053cc47a3820d01fd7a6a668251b736d57bd3c26 "CCPA/US Privacy String.md" (section "Examples").
SPEC_EXAMPLES = [
    ("1YNN", USPrivacy(1, True, False, False), False),  # notice given, no opt-out, no LSPA
    ("1NYY", USPrivacy(1, False, True, True), True),  # no notice, opted out, LSPA covered
    ("1---", USPrivacy(1, None, None, None), False),  # CCPA does not apply
    ("1-Y-", USPrivacy(1, None, True, None), True),  # notice and LSPA unknown, opted out
]


@pytest.mark.parametrize(("text", "expected", "opted_out"), SPEC_EXAMPLES)
def test_spec_examples_decode(text: str, expected: USPrivacy, opted_out: bool) -> None:
    """The spec's example strings decode to the flags its prose describes."""
    decoded = decode_us_privacy(text)
    assert decoded == expected
    assert decoded.opted_out_of_sale is opted_out


def test_opt_out_of_sale_denies() -> None:
    """1NYN (reference 3.6) is an opt-out of sale."""
    assert decode_us_privacy("1NYN").opted_out_of_sale


def test_lower_case_flags_are_accepted() -> None:
    """Lower-case y/n decode like upper case (lenient extension)."""
    assert decode_us_privacy("1yyn") == USPrivacy(1, True, True, False)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "bad_length"),
        ("1YN", "bad_length"),
        ("1YNNN", "bad_length"),
        (" 1YNN", "bad_length"),
        ("2YNN", "bad_version"),
        ("0---", "bad_version"),
        ("1YXN", "bad_char"),
        ("1 NN", "bad_char"),
        ("1YN?", "bad_char"),
        ("1Y-N", "bad_char"),  # opt-out of sale "may never be unknown" unless 1---
        ("1--N", "bad_char"),
    ],
)
def test_malformed_strings_raise_their_code(text: str, code: str) -> None:
    """Wrong length, version or flag characters raise USPrivacyError with a stable code."""
    with pytest.raises(USPrivacyError) as error:
        decode_us_privacy(text)
    assert error.value.code == code
    assert not text or text not in str(error.value)


@pytest.mark.parametrize(
    "flags", [f for f in itertools.product("YN-", repeat=3) if f[1] != "-" or f == ("-",) * 3]
)
def test_every_valid_string_round_trips(flags: tuple[str, str, str]) -> None:
    """Every valid string decodes and re-encodes to itself."""
    text = "1" + "".join(flags)
    assert decode_us_privacy(text).to_string() == text


@given(st.text(max_size=8))
def test_arbitrary_text_decodes_or_raises_usp_error(text: str) -> None:
    """Any text yields a USPrivacy or a USPrivacyError; nothing else escapes."""
    try:
        result: USPrivacy | USPrivacyError = decode_us_privacy(text)
    except USPrivacyError as error:
        result = error
    assert isinstance(result, USPrivacy) or result.code in {"bad_length", "bad_version", "bad_char"}
