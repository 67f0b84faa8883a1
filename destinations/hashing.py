"""Normalization and SHA-256 hashing of personal data, per platform rule.

Ad platforms match people on hashes of normalized contact data, and each one normalizes a
little differently. A hash of a badly normalized value is accepted and silently never
matches, so the rules live here, once, with the platforms' own examples in the tests.

- Google (GA4 Measurement Protocol ``user_data``, Google Ads enhanced conversions): trim,
  lowercase, remove spaces; for ``gmail.com``/``googlemail.com`` also remove the dots of the
  local part; phones in E.164 *with* ``+``.
  https://developers.google.com/analytics/devguides/collection/ga4/uid-data
- Meta (Conversions API ``user_data``): trim, lowercase, no gmail rule; phones as digits with
  the country code and *no* ``+``; names, city, state, zip and country hashed too.
  https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
- TikTok: E.164 phones with ``+`` (same as Google), email trimmed and lowercased.

Every ``hash_*`` helper passes through a value that already is a SHA-256 hex digest, so data
the site hashed itself is never hashed twice, and returns ``None`` for a value that cannot be
normalized (an empty string, a phone number without enough digits): a caller then omits the
field instead of sending a hash that matches nobody. Everything here is pure.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import date

from destinations.iso import country_code, us_state_code

__all__ = [
    "hash_city_meta",
    "hash_country_meta",
    "hash_email",
    "hash_external_id",
    "hash_name",
    "hash_normalized",
    "hash_phone",
    "hash_phone_meta",
    "hash_state_meta",
    "hash_street_google",
    "hash_zip_meta",
    "is_sha256_hex",
    "normalize_address_google",
    "normalize_city_meta",
    "normalize_country",
    "normalize_date_of_birth",
    "normalize_email",
    "normalize_gender",
    "normalize_name",
    "normalize_phone_e164",
    "normalize_phone_meta",
    "normalize_postal_code_google",
    "normalize_state_meta",
    "normalize_street_google",
    "normalize_zip_meta",
    "phone_problem",
    "sha256_hex",
]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_WHITESPACE = re.compile(r"\s+")
_GOOGLE_MAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_E164_MIN_DIGITS = 8  # a few territories have 7 (Niue: +683 + 4), but 7 digits are far more
# often a local number typed without its country and area codes
_E164_MAX_DIGITS = 15  # ITU-T E.164: at most 15 digits including the country code
_DOB_PATTERNS = (
    # ISO 8601 date, alone or as the start of a date-time (Segment's ``birthday`` trait)
    re.compile(r"(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?:[T ].*)?"),
    re.compile(r"(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})"),  # 1997/02/16
    re.compile(r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})"),  # already YYYYMMDD
    re.compile(r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})"),  # US, Meta's own example
    re.compile(r"(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})"),  # 16.02.1997 (day first)
)
_MIN_BIRTH_YEAR = 1900  # Meta ``db``: "YYYYMMDD", year from 1900 to the current year


def sha256_hex(text: str) -> str:
    """The lowercase hex SHA-256 digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256_hex(text: str) -> bool:
    """Whether ``text`` is exactly 64 lowercase hex digits: an already hashed value."""
    return _SHA256_HEX.fullmatch(text) is not None


def _prehashed(text: str) -> str | None:
    """The digest when ``text`` already is one (case and surrounding spaces ignored)."""
    candidate = text.strip().lower()
    return candidate if is_sha256_hex(candidate) else None


def hash_normalized(normalized: str | None) -> str | None:
    """SHA-256 of an already normalized value; ``None`` and ``""`` stay ``None``."""
    if not normalized:
        return None
    if is_sha256_hex(normalized):
        return normalized
    return sha256_hex(normalized)


# --- email -------------------------------------------------------------------------------


def normalize_email(text: str, *, google: bool = False) -> str:
    """Trim, lowercase and remove every space; ``google`` also drops gmail local-part dots.

    Meta: ``" John_Smith@gmail.com "`` -> ``"john_smith@gmail.com"``.
    Google: ``"Jane.Doe@GoogleMail.com"`` -> ``"janedoe@googlemail.com"`` (dots are removed
    only for gmail.com and googlemail.com). Google's newer Data Manager API also drops a
    ``+tag`` from gmail addresses; the GA4 and Google Ads pages do not say so, so it is not
    applied here.
    """
    email = _WHITESPACE.sub("", unicodedata.normalize("NFC", text)).lower()
    if google:
        local, at, domain = email.rpartition("@")
        if at and domain in _GOOGLE_MAIL_DOMAINS:
            email = f"{local.replace('.', '')}@{domain}"
    return email


def _looks_like_email(email: str) -> bool:
    local, at, domain = email.rpartition("@")
    return bool(at and local and "." in domain and not domain.startswith("."))


def hash_email(text: str, *, google: bool = False) -> str | None:
    """The SHA-256 of the normalized email; ``None`` when it is not an address at all."""
    if (digest := _prehashed(text)) is not None:
        return digest
    email = normalize_email(text, google=google)
    if not _looks_like_email(email):
        return None
    return sha256_hex(email)


# --- phone -------------------------------------------------------------------------------


def _phone_digits(text: str, default_country_code: str | None) -> str:
    """The international digits of a phone number (country code first), or why there are
    none: a string starting with ``!`` (``!no_country_code``, ``!invalid_phone``).

    ``+`` or ``00`` in front marks an international number. Otherwise the number is national:
    with a ``default_country_code`` its trunk ``0`` is dropped and the code put in front;
    without one it cannot be normalized. Taking its leading digits for a country code (as
    Meta's SDK does) turns ``(650) 555-1212`` into ``+6505551212``, a hash that never matches.
    """
    stripped = text.strip()
    digits = "".join(ch for ch in stripped if ch.isdigit() and ch.isascii())
    if stripped.startswith("+"):
        international = digits
    elif digits.startswith("00"):
        international = digits[2:]
    elif default_country_code:
        code = "".join(ch for ch in default_country_code if ch.isdigit() and ch.isascii())
        if not code:
            return "!invalid_phone"
        international = code + digits.lstrip("0")
    elif _E164_MIN_DIGITS - 3 <= len(digits) <= _E164_MAX_DIGITS:
        return "!no_country_code"
    else:
        return "!invalid_phone"
    if international.startswith("0"):
        return "!invalid_phone"
    if not _E164_MIN_DIGITS <= len(international) <= _E164_MAX_DIGITS:
        return "!invalid_phone"
    return international


def phone_problem(text: str, default_country_code: str | None = None) -> str | None:
    """Why a phone number cannot be normalized (``no_country_code``, ``invalid_phone``), or
    ``None`` when it can (or already is a SHA-256 digest)."""
    if _prehashed(text) is not None:
        return None
    digits = _phone_digits(text, default_country_code)
    return digits[1:] if digits.startswith("!") else None


def normalize_phone_e164(text: str, default_country_code: str | None = None) -> str | None:
    """E.164 with a leading ``+`` (Google, TikTok); ``None`` when it cannot be made valid.

    ``"+1 (800) 555-0100"`` -> ``"+18005550100"``; ``"020 7946 0018"`` with
    ``default_country_code="44"`` -> ``"+442079460018"``.
    """
    digits = _phone_digits(text, default_country_code)
    return None if digits.startswith("!") else f"+{digits}"


def normalize_phone_meta(text: str, default_country_code: str | None = None) -> str | None:
    """Digits only, country code first, no ``+`` and no leading zeros (Meta).

    ``"+1 (650) 555-1212"`` -> ``"16505551212"``; ``None`` when it cannot be made valid.
    """
    digits = _phone_digits(text, default_country_code)
    return None if digits.startswith("!") else digits


def hash_phone(text: str, default_country_code: str | None = None) -> str | None:
    """The SHA-256 of the E.164 form with ``+`` (Google, TikTok)."""
    if (digest := _prehashed(text)) is not None:
        return digest
    return hash_normalized(normalize_phone_e164(text, default_country_code))


def hash_phone_meta(text: str, default_country_code: str | None = None) -> str | None:
    """The SHA-256 of Meta's form: digits with the country code, no ``+``."""
    if (digest := _prehashed(text)) is not None:
        return digest
    return hash_normalized(normalize_phone_meta(text, default_country_code))


# --- names and places --------------------------------------------------------------------


def _letters_only(text: str, *, keep_spaces: bool) -> str:
    """Lowercase NFC text keeping letters (and combining marks), optionally single spaces."""
    kept: list[str] = []
    for ch in unicodedata.normalize("NFC", text).lower():
        category = unicodedata.category(ch)
        if category[0] in "LM":
            kept.append(ch)
        elif keep_spaces and ch.isspace():
            kept.append(" ")
    return " ".join("".join(kept).split()) if keep_spaces else "".join(kept)


def normalize_name(text: str) -> str:
    """Lowercase, no digits, punctuation or symbols, trimmed, NFC (Meta and Google agree).

    ``"Mary"`` -> ``"mary"``, ``"Valéry"`` -> ``"valéry"``, ``" O'Brien-Smith "`` ->
    ``"obriensmith"``. Inner spaces are kept single.
    """
    return _letters_only(text, keep_spaces=True)


def hash_name(text: str) -> str | None:
    """The SHA-256 of the normalized first or last name (Meta ``fn``/``ln``, Google)."""
    if (digest := _prehashed(text)) is not None:
        return digest
    return hash_normalized(normalize_name(text))


def normalize_city_meta(text: str) -> str:
    """Meta ``ct`` and ``st``: lowercase letters only, no spaces (``"New York"`` -> ``newyork``)."""
    return _letters_only(text, keep_spaces=False)


def hash_city_meta(text: str) -> str | None:
    """The SHA-256 of Meta's city (or non-US state) form."""
    if (digest := _prehashed(text)) is not None:
        return digest
    return hash_normalized(normalize_city_meta(text))


def normalize_zip_meta(text: str) -> str:
    """Meta ``zp``: lowercase, no spaces, cut at a dash (``"94025-1234"`` -> ``"94025"``)."""
    compact = _WHITESPACE.sub("", text).lower().split("-", 1)[0]
    return "".join(ch for ch in compact if ch.isalnum())


def hash_zip_meta(text: str) -> str | None:
    """The SHA-256 of Meta's postal code form."""
    if (digest := _prehashed(text)) is not None:
        return digest
    return hash_normalized(normalize_zip_meta(text))


def normalize_country(text: str) -> str | None:
    """A lowercase ISO 3166-1 alpha-2 code from a code or an English country name, or
    ``None`` when it is neither (Meta: "lowercase, 2-letter country codes in ISO 3166-1
    alpha-2"; Meta's SDK refuses codes not on the ISO list). ``"United States"`` -> ``"us"``.
    """
    code = country_code(text)
    return code.lower() if code is not None else None


def normalize_state_meta(text: str) -> str:
    """Meta ``st``: "the 2-character ANSI abbreviation code in lowercase" for US states, so a
    full US state name becomes its code (``"California"`` -> ``"ca"``); any other value is
    lowercase letters only, no spaces or punctuation (non-US states)."""
    code = us_state_code(text)
    return code.lower() if code is not None else normalize_city_meta(text)


def hash_state_meta(text: str) -> str | None:
    """The SHA-256 of Meta's state form."""
    if (digest := _prehashed(text)) is not None:
        return digest
    return hash_normalized(normalize_state_meta(text))


def hash_country_meta(text: str) -> str | None:
    """The SHA-256 of the lowercase two-letter country code (Meta ``country``)."""
    if (digest := _prehashed(text)) is not None:
        return digest
    return hash_normalized(normalize_country(text))


def normalize_address_google(text: str) -> str:
    """Google ``city``/``region`` (sent in clear): no digits or symbols, lowercase, trimmed."""
    return _letters_only(text, keep_spaces=True)


def normalize_street_google(text: str) -> str:
    """Google ``sha256_street``: symbols removed (digits kept), lowercase, trimmed."""
    kept = "".join(
        ch for ch in unicodedata.normalize("NFC", text).lower() if ch.isalnum() or ch.isspace()
    )
    return " ".join(kept.split())


def hash_street_google(text: str) -> str | None:
    """The SHA-256 of Google's street form."""
    if (digest := _prehashed(text)) is not None:
        return digest
    return hash_normalized(normalize_street_google(text))


def normalize_postal_code_google(text: str) -> str:
    """Google ``postal_code`` (sent in clear): ``.`` and ``~`` removed, trimmed."""
    return text.replace(".", "").replace("~", "").strip()


def normalize_gender(text: str) -> str | None:
    """Meta ``ge``: ``"f"`` or ``"m"`` from the usual spellings, else ``None``."""
    value = text.strip().lower()
    if value in {"f", "female", "woman", "w"}:
        return "f"
    if value in {"m", "male", "man"}:
        return "m"
    return None


def normalize_date_of_birth(text: str, latest: date | None = None) -> str | None:
    """Meta ``db``: ``YYYYMMDD`` from the common ways of writing a date, else ``None``.

    ``"1997-02-16"`` (ISO, also as the start of a date-time), ``"1997/02/16"``,
    ``"19970216"``, ``"2/16/1997"`` (month first: Meta's own example, US usage) and
    ``"16.02.1997"`` (day first, dotted) all give ``"19970216"``. A date that does not exist
    (``"1997-02-30"``), a year before 1900 or a date after ``latest`` gives ``None``.
    """
    value = text.strip()
    for pattern in _DOB_PATTERNS:
        match = pattern.fullmatch(value)
        if match is None:
            continue
        try:
            born = date(int(match["y"]), int(match["m"]), int(match["d"]))
        except ValueError:
            return None
        if born.year < _MIN_BIRTH_YEAR or (latest is not None and born > latest):
            return None
        return born.strftime("%Y%m%d")
    return None


def hash_external_id(text: str) -> str | None:
    """Meta ``external_id``: spaces removed, lowercased, hashed (hashing is Meta's advice).

    Meta only asks for the format used by the Pixel and other channels; this is the form
    Segment's Conversions API destination sends, so ids keep matching after a migration.
    """
    value = _WHITESPACE.sub("", text).lower()
    return hash_normalized(value)
