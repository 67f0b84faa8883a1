"""Normalization and hashing against the platforms' own published examples."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from destinations import hashing

# Meta, "Customer Information Parameters" (Conversions API), hashing examples for em, ph, fn,
# db, ct, st and country:
# https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
# (copied into /work/shared/reference/destinations.md section 2; re-computed here).
META_EM_JOHN_SMITH = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
META_PH_16505551212 = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
META_FN_MARY = "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"
META_FN_JEONG = "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"
META_FN_VALERY = "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"
META_DB_19970216 = "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"
META_COUNTRY_US = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
# The same number in Google's E.164 form (with "+") hashes differently; reference section 0.
GOOGLE_PH_16505551212 = "1e231c66011e7a2d867a9cfae267a6aff103cf4913640b6e71a99850fc0ffbc8"


def test_sha256_hex_is_lowercase_hex_of_utf8() -> None:
    """sha256_hex gives the lowercase hex digest of the UTF-8 bytes."""
    assert hashing.sha256_hex("john_smith@gmail.com") == META_EM_JOHN_SMITH
    assert hashing.sha256_hex("정") == META_FN_JEONG


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (META_EM_JOHN_SMITH, True),
        (META_EM_JOHN_SMITH.upper(), False),
        (META_EM_JOHN_SMITH[:-1], False),
        (META_EM_JOHN_SMITH + "\n", False),
        ("g" * 64, False),
        ("", False),
    ],
)
def test_is_sha256_hex_accepts_only_64_lowercase_hex(text: str, expected: bool) -> None:
    """is_sha256_hex is true for exactly 64 lowercase hex digits."""
    assert hashing.is_sha256_hex(text) is expected


def test_meta_email_example() -> None:
    """Meta's em example: trimmed and lowercased, gmail dots kept, then hashed."""
    assert hashing.normalize_email("  John_Smith@gmail.com ") == "john_smith@gmail.com"
    assert hashing.hash_email("John_Smith@gmail.com") == META_EM_JOHN_SMITH


def test_meta_email_keeps_gmail_dots() -> None:
    """Meta has no gmail rule: dots in a gmail local part stay."""
    assert hashing.normalize_email("Jane.Doe@gmail.com") == "jane.doe@gmail.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Google uid-data page: remove periods before the domain of gmail/googlemail addresses.
        ("Jane.Doe@gmail.com", "janedoe@gmail.com"),
        (" j.a.n.e@GoogleMail.com ", "jane@googlemail.com"),
        ("jane.doe@example.com", "jane.doe@example.com"),
        ("jane doe@example.com", "janedoe@example.com"),
        ("Jane.Doe+Shop@gmail.com", "janedoe+shop@gmail.com"),
    ],
)
def test_google_email_normalization(text: str, expected: str) -> None:
    """Google: trim, lowercase, remove spaces and, for gmail only, local-part dots."""
    assert hashing.normalize_email(text, google=True) == expected


def test_google_email_hash_matches_reference_example() -> None:
    """The GA4 example body's sha256_email_address is the hash of test@yourdomain.com."""
    expected = "fce0da9c0e2212ec78f6ae09b01af5d5e9de751b6fa8e4df0564b816c00df539"
    assert hashing.hash_email(" Test@YourDomain.com", google=True) == expected


def test_hash_email_rejects_non_addresses() -> None:
    """A value without a plausible address gives None, not a hash."""
    assert hashing.hash_email("not an email") is None
    assert hashing.hash_email("") is None
    assert hashing.hash_email("@example.com") is None


def test_hash_email_passes_through_a_digest() -> None:
    """An already hashed email is returned as is (lowercased), never hashed twice."""
    assert hashing.hash_email(META_EM_JOHN_SMITH) == META_EM_JOHN_SMITH
    assert hashing.hash_email(META_EM_JOHN_SMITH.upper()) == META_EM_JOHN_SMITH


def test_meta_phone_example() -> None:
    """Meta's ph example: (650)555-1212 with US code 1 -> 16505551212 -> e323ec62..."""
    assert hashing.normalize_phone_meta("(650)555-1212", "1") == "16505551212"
    assert hashing.normalize_phone_meta("+1 (650) 555-1212") == "16505551212"
    assert hashing.hash_phone_meta("+1 650 555 1212") == META_PH_16505551212


def test_google_phone_is_e164_with_plus() -> None:
    """Google's form keeps the +, so the hash differs from Meta's for the same number."""
    # Google Data Manager "Format user data": US (800)555-0100 -> +18005550100.
    assert hashing.normalize_phone_e164("(800)555-0100", "1") == "+18005550100"
    assert hashing.hash_phone("+1 (650) 555-1212") == GOOGLE_PH_16505551212
    assert hashing.hash_phone("+1 (650) 555-1212") != hashing.hash_phone_meta("+16505551212")


def test_google_phone_hash_matches_reference_example() -> None:
    """The GA4 example body's sha256_phone_number is the hash of +15555555555."""
    expected = "910a625c4ba147b544e6bd2f267e130ae14c591b6ba9c25cb8573322dedbebd0"
    assert hashing.hash_phone("+1 555-555-5555") == expected


@pytest.mark.parametrize(
    ("text", "country", "expected"),
    [
        ("0044 20 7946 0018", None, "+442079460018"),
        ("020 7946 0018", "44", "+442079460018"),
        ("020 7946 0018", "+44", "+442079460018"),
        ("+16505551212", None, "+16505551212"),
        ("+33 (0)1 23 45 67 89", None, "+330123456789"),
    ],
)
def test_phone_international_forms(text: str, country: str | None, expected: str) -> None:
    """+ or 00 mark international numbers; a default code replaces a national trunk 0."""
    assert hashing.normalize_phone_e164(text, country) == expected


@pytest.mark.parametrize(
    ("text", "country"),
    [
        ("", None),
        ("call me", None),
        ("555-0100", None),
        ("020 7946 0018", None),
        ("+1 2345 6789 0123 4567", None),
        ("1-800-FLOWERS", None),
        ("020 7946 0018", "+"),
        ("(650) 555-1212", None),
        ("16505551212", None),
    ],
)
def test_phone_that_cannot_be_made_valid_is_none(text: str, country: str | None) -> None:
    """Too short, too long, letters only or national without a country code: None."""
    assert hashing.normalize_phone_e164(text, country) is None
    assert hashing.normalize_phone_meta(text, country) is None
    assert hashing.hash_phone(text, country) is None


def test_meta_phone_has_no_plus_and_no_leading_zero() -> None:
    """Meta's phone is digits only, the 00 international prefix removed."""
    assert hashing.normalize_phone_meta("0049 30 1234567") == "49301234567"


def test_hash_phone_passes_through_a_digest() -> None:
    """An already hashed phone is not hashed again (its hex letters are not stripped)."""
    assert hashing.hash_phone(META_PH_16505551212) == META_PH_16505551212
    assert hashing.hash_phone_meta(META_PH_16505551212) == META_PH_16505551212


def test_meta_name_examples() -> None:
    """Meta's fn examples: Mary, 정 and Valéry (UTF-8, accents kept)."""
    assert hashing.hash_name("Mary") == META_FN_MARY
    assert hashing.hash_name("정") == META_FN_JEONG
    assert hashing.hash_name("Valéry") == META_FN_VALERY


def test_name_is_composed_before_hashing() -> None:
    """A decomposed é (NFD) hashes like the composed one Meta's example uses."""
    assert hashing.hash_name(unicodedata.normalize("NFD", "Valéry")) == META_FN_VALERY


def test_name_loses_digits_punctuation_and_outer_spaces() -> None:
    """Names: digits and symbols removed, lowercased, trimmed, inner spaces single."""
    assert hashing.normalize_name("  O'Brien-Smith3 ") == "obriensmith"
    assert hashing.normalize_name("Mary   Ann") == "mary ann"
    assert hashing.hash_name("123 !!") is None


def test_meta_location_examples() -> None:
    """Meta ct/st: lowercase letters only; country: two letters, us -> 79adb2a2..."""
    assert hashing.normalize_city_meta("New York") == "newyork"
    assert hashing.normalize_city_meta("St. Louis 2") == "stlouis"
    assert hashing.hash_country_meta(" US ") == META_COUNTRY_US
    # Country names and alpha-3 codes become the alpha-2 code Meta asks for ("Use the
    # lowercase, 2-letter country codes in ISO 3166-1 alpha-2"); its SDK refuses codes that
    # are not on the ISO list (normalize.py, is_valid_country_code).
    assert hashing.hash_country_meta("USA") == META_COUNTRY_US
    assert hashing.hash_country_meta("United States") == META_COUNTRY_US
    assert hashing.hash_country_meta("xx") is None


def test_meta_zip_is_cut_at_the_dash() -> None:
    """Meta zp: no spaces, lowercase, the part before a dash (US ZIP+4 -> 5 digits)."""
    assert hashing.normalize_zip_meta("94025-1234") == "94025"
    assert hashing.normalize_zip_meta("M1 1AE") == "m11ae"
    assert hashing.hash_zip_meta(" ") is None


def test_meta_date_of_birth_example() -> None:
    """Meta db example: 1997-02-16 -> 19970216 -> 01acdbf6..."""
    normalized = hashing.normalize_date_of_birth("1997-02-16")
    assert normalized == "19970216"
    assert hashing.hash_normalized(normalized) == META_DB_19970216
    assert hashing.normalize_date_of_birth("1997-2-6T00:00:00Z") == "19970206"
    assert hashing.normalize_date_of_birth("16/02/1997") is None  # day first with slashes
    assert hashing.normalize_date_of_birth("2/16/1997") == "19970216"  # Meta's own example
    assert hashing.normalize_date_of_birth("16.02.1997") == "19970216"
    assert hashing.normalize_date_of_birth("1997/02/16") == "19970216"
    assert hashing.normalize_date_of_birth("1997-02-30") is None
    assert hashing.normalize_date_of_birth("1899-12-31") is None  # Meta: year from 1900
    assert hashing.normalize_date_of_birth("2030-01-01", date(2025, 1, 1)) is None


def test_phone_without_country_code_is_omitted_not_guessed() -> None:
    """(650) 555-1212 with no default code: None (not +6505551212), reason no_country_code.

    The hashing module promises a ``None`` for what cannot be normalized; Meta: "Always
    include the country code", Google: E.164 (https://developers.google.com/analytics/
    devguides/collection/ga4/uid-data).
    """
    assert hashing.normalize_phone_e164("(650) 555-1212") is None
    assert hashing.hash_phone_meta("(650) 555-1212") is None
    assert hashing.phone_problem("(650) 555-1212") == "no_country_code"
    assert hashing.phone_problem("12") == "invalid_phone"
    assert hashing.phone_problem("+1 650 555 1212") is None
    assert hashing.phone_problem(META_PH_16505551212) is None


@pytest.mark.parametrize(
    ("state", "expected"),
    [("California", "ca"), ("new york", "ny"), ("CA", "ca"), (" Texas ", "tx"),
     ("District of Columbia", "dc"), ("Île-de-France", "îledefrance")],
)  # fmt: skip
def test_meta_state_full_names_become_ansi_codes(state: str, expected: str) -> None:
    """Meta st: US states as "the 2-character ANSI abbreviation code in lowercase"; non-US
    states lowercase without punctuation or spaces."""
    assert hashing.normalize_state_meta(state) == expected


# --- properties (hypothesis) ---------------------------------------------------------------


@given(st.text(max_size=40), st.sampled_from([None, "1", "44", "+33"]))
def test_phone_normalization_is_e164_or_none(text: str, country: str | None) -> None:
    """Whatever the input: None, or "+" and 8 to 15 ASCII digits not starting with 0; the
    Meta form is the same digits without "+"; a problem is named exactly when it is None."""
    e164 = hashing.normalize_phone_e164(text, country)
    meta = hashing.normalize_phone_meta(text, country)
    if e164 is None:
        assert meta is None
        assert hashing.phone_problem(text, country) in {"no_country_code", "invalid_phone"}
    else:
        assert re.fullmatch(r"\+[1-9][0-9]{7,14}", e164)
        assert meta == e164[1:]
        assert hashing.phone_problem(text, country) is None


@given(st.from_regex(r"[2-9][0-9]{2}[ -]?[0-9]{3}[ -]?[0-9]{4}", fullmatch=True))
def test_national_numbers_never_borrow_a_country_code(text: str) -> None:
    """A national number without + or 00 and without a default code is never normalized."""
    assert hashing.normalize_phone_e164(text) is None
    assert hashing.normalize_phone_e164(text, "1") == "+1" + re.sub(r"\D", "", text)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)))
def test_every_written_form_of_a_date_gives_yyyymmdd(born: date) -> None:
    """ISO, YYYY/MM/DD, YYYYMMDD, M/D/YYYY and D.M.YYYY of one date: one YYYYMMDD."""
    expected = born.strftime("%Y%m%d")
    forms = [
        born.isoformat(),
        f"{born.isoformat()}T00:00:00Z",
        born.strftime("%Y/%m/%d"),
        expected,
        f"{born.month}/{born.day}/{born.year}",
        f"{born.day}.{born.month}.{born.year}",
    ]
    for form in forms:
        assert hashing.normalize_date_of_birth(form) == expected, form


@given(st.text(max_size=20))
def test_date_of_birth_is_a_real_date_or_none(text: str) -> None:
    """Any text: None or 8 digits that parse as a date from 1900 on."""
    result = hashing.normalize_date_of_birth(text)
    if result is not None:
        assert len(result) == 8
        assert datetime.strptime(result, "%Y%m%d").year >= 1900


def test_gender_is_f_or_m() -> None:
    """Meta ge is f or m; anything else is left out."""
    assert hashing.normalize_gender("Female") == "f"
    assert hashing.normalize_gender(" M ") == "m"
    assert hashing.normalize_gender("nonbinary") is None


def test_google_address_fields() -> None:
    """Google city/region drop digits and symbols, postal codes . and ~; streets keep digits."""
    assert hashing.normalize_address_google(" San Francisco 94 ") == "san francisco"
    assert hashing.normalize_postal_code_google(" 94043.~ ") == "94043"
    assert hashing.normalize_street_google(" 1600 Amphitheatre Pkwy. ") == "1600 amphitheatre pkwy"
    assert hashing.hash_street_google("1 Main St.") == hashing.sha256_hex("1 main st")


def test_external_id_is_compacted_lowercased_and_passes_digests() -> None:
    """external_id loses spaces and case before hashing; a digest passes through."""
    assert hashing.hash_external_id(" User-42 ") == hashing.sha256_hex("user-42")
    assert hashing.hash_external_id(META_FN_MARY) == META_FN_MARY
    assert hashing.hash_external_id("  ") is None


def test_hash_normalized_handles_empty_and_digests() -> None:
    """hash_normalized: None and empty give None; a digest is returned unchanged."""
    assert hashing.hash_normalized(None) is None
    assert hashing.hash_normalized("") is None
    assert hashing.hash_normalized(META_FN_MARY) == META_FN_MARY
    assert hashing.hash_normalized("mary") == META_FN_MARY
