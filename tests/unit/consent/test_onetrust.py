"""consent.onetrust: OptanonConsent cookies, groups lists and active-groups strings."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.errors import CMPFormatError
from consent.onetrust import MAX_GROUPS, MAX_TEXT_CHARS, decode_onetrust_groups

# The OptanonConsent value documented in the @commercetools-frontend/cookie-consent README
# (npmjs.com/package/@commercetools-frontend/cookie-consent), quoted in reference section 6.1.
COMMERCETOOLS_COOKIE = (
    "isGpcEnabled=0&datestamp=Wed+Feb+01+2023+12%3A35%3A32+GMT%2B0100+(Central+European+Standard"
    "+Time)&version=202209.1.0&isIABGlobal=false&hosts=&consentId=7f3cf16d-0000-0000-0000-"
    "000000000000&interactionCount=1&landingPath=NotLandingPage&groups=C0001%3A1%2CC0002%3A0%2C"
    "C0003%3A1%2CC0004%3A1%2CC0005%3A1&geolocation=AT%3B9&AwaitingReconsent=false"
)


def test_optanon_cookie_groups_decode() -> None:
    """The documented cookie grants C0001, C0003-C0005 and denies C0002 (Performance)."""
    assert decode_onetrust_groups(COMMERCETOOLS_COOKIE) == {
        "C0001": True,
        "C0002": False,
        "C0003": True,
        "C0004": True,
        "C0005": True,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C0001:1,C0002:0", {"C0001": True, "C0002": False}),
        ("C0001%3A1%2CC0002%3A0", {"C0001": True, "C0002": False}),  # still URL-encoded
        ("c0001:1, c0004:0,", {"C0001": True, "C0004": False}),  # case, spaces, trailing comma
        ("groups=C0003%3A1%2CBG35%3A0", {"C0003": True, "BG35": False}),  # custom group id
        ("groups=", {}),
        ("C0001:1,C0001:1", {"C0001": True}),  # a repeat that agrees is harmless
    ],
)
def test_groups_lists_decode(text: str, expected: dict[str, bool]) -> None:
    """Bare and URL-encoded groups lists decode to granted (1) and denied (0) ids."""
    assert decode_onetrust_groups(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (",C0001,C0003,", {"C0001": True, "C0003": True}),  # OnetrustActiveGroups
        ("C0001,C0003", {"C0001": True, "C0003": True}),
        (",c0001,c0002,", {"C0001": True, "C0002": True}),  # an old build lower-cased ids
        (",,", {}),
        ("", {}),
    ],
)
def test_active_groups_strings_list_only_granted_ids(text: str, expected: dict[str, bool]) -> None:
    """Active-groups strings carry granted ids only; absent ids are not granted."""
    assert decode_onetrust_groups(text) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("isGpcEnabled=0&version=202209.1.0", "bad_format"),  # cookie without groups
        ("groups=C0001%3A1&groups=C0002%3A1", "bad_format"),  # groups repeated
        ("C0001:1,C0002", "bad_format"),  # entry without a flag
        ("C0001:2", "bad_format"),
        ("C0001:-1", "bad_format"),
        ("C0001:1,C0001:0", "bad_format"),  # both consented and not
        ("C0001!:1", "bad_format"),
        (",C0001,<script>,", "bad_format"),
        (",C0001 C0002,", "bad_format"),
        ("C0001%3A1%3Dx", "bad_format"),  # decodes to a value containing '='
        ("x" * (MAX_TEXT_CHARS + 1), "too_long"),
        (",".join(f"C{i:04}" for i in range(MAX_GROUPS + 1)), "too_long"),
        ("&".join(f"f{i}=1" for i in range(200)), "too_long"),
    ],
)
def test_malformed_values_raise_their_code(text: str, code: str) -> None:
    """Missing, repeated, malformed or oversized groups raise CMPFormatError."""
    with pytest.raises(CMPFormatError) as error:
        decode_onetrust_groups(text)
    assert error.value.code == code


GROUP_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)


@given(st.dictionaries(GROUP_IDS, st.booleans(), max_size=20))
def test_encoded_cookie_round_trips(groups: dict[str, bool]) -> None:
    """A cookie built from any groups map decodes back to it (ids upper-cased)."""
    upper: dict[str, bool] = {}
    for group_id, flag in groups.items():
        upper[group_id.upper()] = upper.get(group_id.upper(), flag) and flag
    listed = ",".join(f"{group_id}:{int(flag)}" for group_id, flag in upper.items())
    cookie = f"isGpcEnabled=0&groups={quote(listed, safe='')}&AwaitingReconsent=false"
    assert decode_onetrust_groups(cookie) == upper


@given(st.text(max_size=200))
def test_arbitrary_text_decodes_or_raises_cmp_error(text: str) -> None:
    """Any text yields a groups map or a CMPFormatError; nothing else escapes."""
    try:
        outcome: dict[str, bool] | CMPFormatError = decode_onetrust_groups(text)
    except CMPFormatError as error:
        outcome = error
    assert isinstance(outcome, dict) or outcome.code in {"bad_format", "too_long"}
