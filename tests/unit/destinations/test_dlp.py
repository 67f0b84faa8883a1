"""The PII safety net: detectors, overlap rules, redaction and the payload walk."""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from destinations.dlp import (
    KINDS,
    Detection,
    Finding,
    Kind,
    redact_text,
    scan_payload,
    scan_text,
)

# --- helpers: an independent Luhn oracle --------------------------------------------------------

_SEQUENCE = re.compile(r"[0-9]+(?:[ -][0-9]+)*")


def luhn(digits: str) -> bool:
    """Textbook Luhn, written apart from the module's prefix-sum version."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def with_check_digit(body: str) -> str:
    """``body`` plus the digit that makes it Luhn-valid."""
    return next(body + d for d in "0123456789" if luhn(body + d))


def luhn_windows(text: str) -> list[str]:
    """Every window of whole digit groups (13 to 19 digits) that passes Luhn, naively."""
    found = []
    for match in _SEQUENCE.finditer(text):
        groups = re.split(r"[ -]", match.group())
        for i in range(len(groups)):
            for j in range(i + 1, len(groups) + 1):
                digits = "".join(groups[i:j])
                if 13 <= len(digits) <= 19 and luhn(digits):
                    found.append(digits)
    return found


def kinds(text: str) -> list[Kind]:
    return [f.kind for f in scan_text(text)]


def spans(text: str) -> list[tuple[Kind, str]]:
    return [(f.kind, text[f.start : f.end]) for f in scan_text(text)]


# --- cards --------------------------------------------------------------------------------------

TEST_CARDS = {
    "visa 16": "4111111111111111",
    "visa 13": "4222222222222",
    "mastercard": "5555555555554444",
    "mastercard 2-series": "2223003122003222",
    "amex 15": "378282246310005",
    "diners 14": "30569309025904",
    "discover": "6011111111111117",
    "jcb": "3530111333300000",
    "unionpay 19": "6221261234567890129",
}


def test_test_card_numbers_are_luhn_valid() -> None:
    """The test cards used below pass the independent Luhn oracle (guards the fixtures)."""
    assert all(luhn(number) for number in TEST_CARDS.values())
    assert {len(n) for n in TEST_CARDS.values()} == {13, 14, 15, 16, 19}


@pytest.mark.parametrize("number", TEST_CARDS.values(), ids=TEST_CARDS.keys())
def test_detects_test_card_of_every_network(number: str) -> None:
    """Visa, Mastercard, Amex (15), Diners (14), Discover, JCB and a 19-digit card are found."""
    assert spans(f"paid with {number} today") == [("card", number)]


def test_redacts_luhn_valid_card_with_spaces() -> None:
    """A card grouped by single spaces is one finding, redacted whole."""
    assert redact_text("card 4111 1111 1111 1111.") == ("card [redacted:card].", ["card"])


def test_redacts_luhn_valid_card_with_dashes() -> None:
    """A card grouped by dashes, and Amex's 4-6-5 grouping, are redacted whole."""
    assert redact_text("4111-1111-1111-1111") == ("[redacted:card]", ["card"])
    assert redact_text("amex 3782-822463-10005") == ("amex [redacted:card]", ["card"])


def test_redacts_card_glued_to_letters() -> None:
    """Letters around a card do not hide it (``coupon=4111...&x``)."""
    assert redact_text("coupon=4111111111111111&ref=ab") == (
        "coupon=[redacted:card]&ref=ab",
        ["card"],
    )
    assert kinds("x4111111111111111y") == ["card"]


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",
        "4111 1111 1111 1112",
        "1234567890123",
        "378282246310006",
        "order 1234-5678-9012-3456",
    ],
)
def test_does_not_redact_luhn_invalid_numbers(text: str) -> None:
    """A 13 to 19 digit run that fails Luhn is not a card."""
    assert not luhn(re.sub(r"[^0-9]", "", text))
    assert kinds(text) == []
    assert redact_text(text) == (text, [])


def test_reads_a_run_glued_to_other_digits_as_one_number() -> None:
    """A card inside a longer run of digits is part of a longer number, not a card."""
    assert kinds("9" + "4111111111111111" + "9") == []
    assert kinds("12345678901234567890") == []


def test_finds_card_next_to_other_numbers() -> None:
    """A card joined to other numbers by single separators is still found, alone."""
    assert spans("qty 2 4111 1111 1111 1111 2026") == [("card", "4111 1111 1111 1111")]


def test_detects_card_in_separator_only_groups() -> None:
    """Any single-separator grouping counts (``4 1 1 1 ...``), not only groups of four."""
    assert kinds(" ".join("4111111111111111")) == ["card"]


# --- phones -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phone",
    [
        "+1 650 555 1212",
        "+1 (650) 555-1212",
        "+16505551212",
        "(650) 555-1212",
        "650-555-1212",
        "650.555.1212",
        "1-650-555-1212",
        "+44 20 7946 0958",
        "020 7946 0958",
        "0044 20 7946 0958",
        "+33 1 23 45 67 89",
        "01 23 45 67 89",
        "01.23.45.67.89",
        "+49 30 12345678",
        "+49 (0)30 1234 5678",
        "030 12345678",
        "030/12345678",
        "0151 23456789",
        "+91 98765 43210",
        "+91-98765-43210",
        "098765 43210",
        "+55 11 91234-5678",
        "(11) 91234-5678",
        "%2B16505551212",
    ],
)
def test_detects_international_and_national_phones(phone: str) -> None:
    """US, UK, FR, DE, IN and BR numbers in their usual written forms are phones."""
    assert spans(f"call {phone} today") == [("phone", phone)]


@pytest.mark.parametrize(
    "text",
    [
        "price 1299.99",
        "total $1,299.99",
        "year 2026",
        "2026-11-22",
        "2026-11-22T06:37:01.123+01:00",
        "ORD-2026-000123",
        "zip 94103",
        "zip 94103-1234",
        "zip 02134-1234",
        "ts 1763793421",
        "6505551212",
        "01/02/2026",
        "05.11.2026 14:30",
        "UTC+05:30",
        "0.12345678901",
        "f81d4fac-3c1a-4e4f-9b2c-6a4d1b2c3d4e",
        "macOS 10.15.7 build 19041",
        "SKU-45790-32",
    ],
)
def test_does_not_flag_ordinary_numbers_as_phones(text: str) -> None:
    """Prices, years, dates, order ids, zip codes and bare digit runs are not phones."""
    assert kinds(text) == []


def test_redacts_the_spec_example() -> None:
    """The spec's example: a spaced card and a spaced international phone."""
    assert redact_text("card 4111 1111 1111 1111, call +1 650 555 1212") == (
        "card [redacted:card], call [redacted:phone]",
        ["card", "phone"],
    )


# --- emails -------------------------------------------------------------------------------------


def test_detects_email_in_url_query_string() -> None:
    """An email in a query string is found without the parameter name or the next one."""
    url = "https://shop.example.com/?email=a@b.co&utm=x"
    assert spans(url) == [("email", "a@b.co")]
    assert redact_text(url)[0] == "https://shop.example.com/?email=[redacted:email]&utm=x"


def test_detects_url_encoded_email() -> None:
    """``%40`` stands for ``@`` in URLs."""
    assert spans("?email=jane.doe%40example.com&x=1") == [("email", "jane.doe%40example.com")]


def test_detects_uppercase_and_tagged_email() -> None:
    """Case and ``+tag`` local parts do not hide an email."""
    assert spans("From: JANE.DOE+News@Example.CO.UK.") == [("email", "JANE.DOE+News@Example.CO.UK")]


@pytest.mark.parametrize("text", ["user@localhost", "@handle", "a@b", "mail me at example.com"])
def test_ignores_strings_that_are_not_emails(text: str) -> None:
    """Handles, hosts without a TLD and bare domains are not emails."""
    assert kinds(text) == []


@pytest.mark.parametrize("number", [-4111111111111111, -4111111111111111.0, -378282246310005])
def test_redacts_a_negative_card_number_alone_in_a_payload(number: float) -> None:
    """The quick walk used to skip numbers below 10**12, so a negative card left unredacted
    when nothing else in the payload was reported."""
    assert scan_payload({"a": number}, {}, ()) == (
        {"a": "[redacted:card]"},
        [Detection("a", "card", True)],
    )


def test_redacts_emails_in_nested_arrays() -> None:
    """Emails inside arrays of objects are found and reported with ``[]`` paths."""
    payload = {"properties": {"guests": [{"contacts": ["x", "Ann@Example.com"]}]}}
    redacted, detections = scan_payload(payload, {}, ())
    assert redacted == {"properties": {"guests": [{"contacts": ["x", "[redacted:email]"]}]}}
    assert detections == [Detection("properties.guests[].contacts[]", "email", True)]


# --- IBANs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "fr1420041010050500013m02606",
        "NL91ABNA0417164300",
        "NO93 8601 1117 947",
        "AT61 1904 3002 3457 3201",
    ],
)
def test_detects_valid_iban(iban: str) -> None:
    """Registry IBANs, grouped or compact, any case, pass the length and mod-97 checks."""
    assert spans(f"pay to {iban} by Friday") == [("iban", iban)]


def test_ignores_iban_with_bad_checksum() -> None:
    """One changed digit breaks mod-97: no IBAN finding."""
    assert "iban" not in kinds("DE89 3704 0044 0532 0130 01")
    assert "iban" not in kinds("GB83 WEST 1234 5698 7654 32")


def test_ignores_iban_with_wrong_length_for_country() -> None:
    """A valid German IBAN with an extra group is too long for DE."""
    assert "iban" not in kinds("DE89 3704 0044 0532 0130 0012")
    assert kinds("XX89370400440532013000") == []


def test_iban_beats_the_luhn_window_inside_it() -> None:
    """The Austrian example holds a Luhn-valid 16-digit run; the IBAN wins the overlap."""
    assert luhn("1904300234573201")
    assert spans("AT61 1904 3002 3457 3201") == [("iban", "AT61 1904 3002 3457 3201")]


# --- SSNs ---------------------------------------------------------------------------------------


def test_detects_valid_ssn() -> None:
    """``AAA-GG-SSSS`` with valid ranges is an SSN."""
    assert redact_text("ssn: 123-45-6789.") == ("ssn: [redacted:ssn].", ["ssn"])


@pytest.mark.parametrize(
    "ssn",
    ["000-12-3456", "666-12-3456", "900-12-3456", "987-65-4321", "123-00-4567", "123-45-0000"],
)
def test_ignores_ssn_in_invalid_ranges(ssn: str) -> None:
    """Area 000, 666 or 9xx, group 00 and serial 0000 are never issued."""
    assert kinds(f"ssn {ssn}") == []


def test_ignores_ssn_shapes_inside_longer_numbers() -> None:
    """An SSN shape continued by more digits is part of something else."""
    assert kinds("ref 123-45-6789-1") == []
    assert kinds("1123-45-6789") == []


# --- IP addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "203.0.113.42",
        "8.8.8.8",
        "192.168.1.10",
        "2001:db8:85a3::8a2e:370:7334",
        "2001:0db8:0000:0000:0000:ff00:0042:8329",
        "fe80::1ff:fe23:4567:890a",
        "::ffff:192.0.2.128",
    ],
)
def test_detects_ipv4_and_ipv6(address: str) -> None:
    """Valid IPv4 and IPv6 addresses (also IPv4-mapped) are found whole."""
    assert spans(f"client {address}, via proxy") == [("ip", address)]
    assert spans(f"http://[{address}]:8080/") == [("ip", address)]


@pytest.mark.parametrize(
    "text",
    [
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "127.0.0.1",
        "0.0.0.0",
        "::1",
        "::",
        "10:30:00",
        "std::vector",
        "2001:db8::g",
        "1:2:3:4:5:6:7:8:9",
        "Chrome/131.0.0.0 Safari/537.36",
    ],
)
def test_ignores_invalid_and_non_personal_addresses(text: str) -> None:
    """Invalid addresses, loopback, unspecified, times and product versions are not IPs."""
    assert kinds(text) == []


# --- overlaps and redact_text -------------------------------------------------------------------


def test_card_wins_over_overlapping_phone() -> None:
    """A phone reading that overlaps a card loses, and the union of both is redacted."""
    assert spans("+1 4111 1111 1111 1111") == [("card", "+1 4111 1111 1111 1111")]
    assert redact_text("+1 4111 1111 1111 1111") == ("[redacted:card]", ["card"])


def test_overlapping_findings_merge_so_nothing_leaks() -> None:
    """A phone running into an SSN is one span: no tail of the loser is left in clear."""
    assert redact_text("+44 20 7946 0958 123-45-6789") == ("[redacted:phone]", ["phone"])


def test_luhn_run_inside_a_plus_phone_is_the_phone() -> None:
    """A 13-digit '+' number is a phone even when it passes Luhn (one in ten do)."""
    assert luhn("4222222222222")
    assert spans("call +4222222222222") == [("phone", "+4222222222222")]


def test_longest_span_wins_between_other_kinds() -> None:
    """An email whose local part is a phone number is one email."""
    assert spans("+16505551212@sms.example.com") == [("email", "+16505551212@sms.example.com")]


def test_redact_text_only_redacts_requested_kinds() -> None:
    """Kinds left out of ``redact_kinds`` stay in the text and out of the report."""
    text = "mail a@b.co or call 650-555-1212"
    assert redact_text(text, {"phone"}) == ("mail a@b.co or call [redacted:phone]", ["phone"])
    assert redact_text(text, ()) == (text, [])


def test_redact_text_returns_clean_text_unchanged() -> None:
    """Text without findings comes back as is, with no kinds."""
    text = "Order Completed for SKU-45790-32 at 1299.99 USD"
    assert redact_text(text) == (text, [])


def test_kinds_are_a_bounded_set() -> None:
    """Six kinds, each with its own marker, and redact_text redacts all of them by default."""
    assert KINDS == ("card", "email", "phone", "iban", "ssn", "ip")
    text = "a@b.co, 4111111111111111, 650-555-1212, NO9386011117947, 123-45-6789, 8.8.8.8"
    redacted, redacted_kinds = redact_text(text)
    assert sorted(redacted_kinds) == sorted(KINDS)
    assert all(f"[redacted:{kind}]" in redacted for kind in KINDS)


def test_findings_are_disjoint_and_ordered() -> None:
    """scan_text returns non-overlapping findings sorted by position."""
    text = "a@b.co, 4111111111111111, +44 20 7946 0958, 123-45-6789, 8.8.8.8, NO9386011117947"
    found = scan_text(text)
    assert [f.kind for f in found] == ["email", "card", "phone", "ssn", "ip", "iban"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))
    assert found[0] == Finding("email", 0, 6)


# --- scan_payload -------------------------------------------------------------------------------

DECLARED = {"traits.email": "email", "traits.phone": "phone", "context.ip": "ip"}


def test_keeps_declared_email_in_its_field() -> None:
    """An email in a field declared ``email`` stays, reported as not redacted."""
    payload = {"traits": {"email": "jane@example.com"}}
    assert scan_payload(payload, DECLARED, ()) == (
        payload,
        [Detection("traits.email", "email", False)],
    )


def test_redacts_card_in_declared_email_field() -> None:
    """A card is redacted even in a field declared as another kind."""
    payload = {"traits": {"email": "4111 1111 1111 1111"}}
    assert scan_payload(payload, DECLARED, ()) == (
        {"traits": {"email": "[redacted:card]"}},
        [Detection("traits.email", "card", True)],
    )


def test_redacts_other_kinds_in_a_declared_field() -> None:
    """A phone in the email field is redacted; the email beside it is kept."""
    payload = {"traits": {"email": "jane@example.com / 650-555-1212"}}
    assert scan_payload(payload, DECLARED, ()) == (
        {"traits": {"email": "jane@example.com / [redacted:phone]"}},
        [
            Detection("traits.email", "phone", True),
            Detection("traits.email", "email", False),
        ],
    )


def test_redacts_undeclared_kinds_everywhere() -> None:
    """The same email in an undeclared field is redacted."""
    payload = {"properties": {"search": "jane@example.com"}, "context": {"ip": "203.0.113.7"}}
    assert scan_payload(payload, DECLARED, ()) == (
        {"properties": {"search": "[redacted:email]"}, "context": {"ip": "203.0.113.7"}},
        [
            Detection("properties.search", "email", True),
            Detection("context.ip", "ip", False),
        ],
    )


def test_keeps_declared_iban_but_redacts_a_card_beside_it() -> None:
    """In a field declared ``iban`` the IBAN stays; a separate card is still redacted."""
    payload = {"traits": {"iban": "DE89 3704 0044 0532 0130 00, 4111 1111 1111 1111"}}
    assert scan_payload(payload, {"traits.iban": "iban"}, ()) == (
        {"traits": {"iban": "DE89 3704 0044 0532 0130 00, [redacted:card]"}},
        [Detection("traits.iban", "card", True), Detection("traits.iban", "iban", False)],
    )


def test_card_overlapping_a_declared_iban_is_redacted_with_it() -> None:
    """A card window sticking out of an IBAN makes the merged span a card: redacted."""
    text = "DE89 3704 0044 0532 0130 00 4111 1111 1111 1111"
    assert luhn("00" + "4111111111111111")  # the window "00 4111 1111 1111 1111"
    assert scan_payload({"iban": text}, {"iban": "iban"}, ()) == (
        {"iban": "[redacted:card]"},
        [Detection("iban", "card", True)],
    )


def sha256_with_luhn_run() -> tuple[str, str]:
    """The first SHA-256 hex digest of ``user-N`` holding a Luhn-valid 13 to 19 digit run."""
    for counter in range(100_000):
        digest = hashlib.sha256(f"user-{counter}".encode()).hexdigest()
        for run in re.findall(r"[0-9]+", digest):
            if 13 <= len(run) <= 19 and luhn(run):
                return digest, run
    raise AssertionError("no digest with a Luhn-valid run in 100,000 tries")


def test_leaves_transformed_path_untouched_even_with_luhn_run() -> None:
    """A hashed field is never scanned, though its digest holds a Luhn-valid digit run."""
    digest, run = sha256_with_luhn_run()
    assert run in digest
    assert kinds(digest) == ["card"]  # what scanning it would do
    payload = {"userId": digest, "traits": {"email": digest}}
    redacted, detections = scan_payload(payload, DECLARED, {"userId", "traits.email"})
    assert redacted == payload
    assert detections == []


def test_does_not_scan_below_a_transformed_path() -> None:
    """A transformed container is copied through without scanning what it holds."""
    payload = {"context": {"traits": {"email": "a@b.co", "ids": ["4111111111111111"]}}}
    redacted, detections = scan_payload(payload, {}, ["context.traits"])
    assert redacted == payload
    assert detections == []


def test_gives_the_same_result_before_and_after_transforms() -> None:
    """Untransformed paths come out the same whether transforms ran before or after."""
    before = {"userId": "jane@example.com", "properties": {"note": "call 650-555-1212"}}
    after = {**before, "userId": hashlib.sha256(b"jane@example.com").hexdigest()}
    out_before, found_before = scan_payload(before, {}, {"userId"})
    out_after, found_after = scan_payload(after, {}, {"userId"})
    assert out_before["properties"] == out_after["properties"]
    assert found_before == found_after == [Detection("properties.note", "phone", True)]
    assert out_before["userId"] == before["userId"]
    assert out_after["userId"] == after["userId"]


def test_redacts_card_numbers_stored_as_numbers() -> None:
    """A Luhn-valid 13 to 19 digit int (or integral float) becomes ``[redacted:card]``."""
    payload = {"properties": {"coupon": 4111111111111111, "code": 378282246310005.0}}
    assert scan_payload(payload, {}, ()) == (
        {"properties": {"coupon": "[redacted:card]", "code": "[redacted:card]"}},
        [
            Detection("properties.coupon", "card", True),
            Detection("properties.code", "card", True),
        ],
    )


def test_keeps_ordinary_numbers_booleans_and_nulls() -> None:
    """Prices, ids that fail Luhn, huge ints, booleans and None pass through."""
    payload = {
        "p": {"revenue": 1299.99, "qty": 3, "id": 4111111111111112, "big": 10**400},
        "ok": True,
        "none": None,
        "nan": float("inf"),
    }
    assert scan_payload(payload, {}, ()) == (payload, [])


def test_reports_paths_never_values() -> None:
    """Detections carry the path, the kind and the decision, never the value found."""
    payload = {"properties": {"products": [{"sku": "jane@example.com"}]}}
    _, detections = scan_payload(payload, {}, ())
    assert detections == [Detection("properties.products[].sku", "email", True)]
    assert "jane" not in repr(detections)


def test_returns_a_new_payload() -> None:
    """The input is not mutated and shares no dict or list with the output."""
    payload = {"a": {"b": ["4111111111111111", {"c": "x"}]}}
    original = copy.deepcopy(payload)
    redacted, _ = scan_payload(payload, {}, ())
    assert payload == original
    assert redacted is not payload
    assert redacted["a"] is not payload["a"]
    assert redacted["a"]["b"][1] is not payload["a"]["b"][1]


def test_walks_deeply_nested_payload() -> None:
    """Nesting deeper than the interpreter's recursion limit is walked, not crashed on."""
    payload: dict[str, Any] = {"v": "a@b.co"}
    for _ in range(5000):
        payload = {"n": [payload]}
    _, detections = scan_payload(payload, {}, ())
    assert len(detections) == 1
    assert detections[0].path == "n[].n[]" + ".n[]" * 4998 + ".v"
    assert detections[0].redacted


# --- properties ---------------------------------------------------------------------------------

PII_SAMPLES = [
    "4111 1111 1111 1111",
    "378282246310005",
    "+1 650 555 1212",
    "(650) 555-1212",
    "020 7946 0958",
    "jane.doe@example.com",
    "a%40b.co",
    "DE89 3704 0044 0532 0130 00",
    "123-45-6789",
    "203.0.113.42",
    "2001:db8::1",
    "[redacted:card]",
    " ",
    "-",
    "+",
    "@",
    ":",
    ".",
    "0",
    "12",
]
pii_text = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(PII_SAMPLES)), max_size=12).map(
    "".join
)


@st.composite
def text_with_card(draw: st.DrawFn) -> tuple[str, str]:
    """Random text around a Luhn-valid 13 to 19 digit number with random separators."""
    body = draw(st.text("0123456789", min_size=12, max_size=18))
    number = with_check_digit(body)
    separators = draw(
        st.lists(
            st.sampled_from(["", "", " ", "-"]), min_size=len(number) - 1, max_size=len(number) - 1
        )
    )
    card = number[0] + "".join(s + d for s, d in zip(separators, number[1:], strict=True))
    prefix, suffix = draw(pii_text), draw(pii_text)
    if prefix[-1:].isascii() and prefix[-1:].isdigit():
        prefix += "x"  # a digit glued to the card would make it another number
    if suffix[:1].isascii() and suffix[:1].isdigit():
        suffix = "x" + suffix
    return prefix + card + suffix, number


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(text_with_card())
def test_no_luhn_valid_run_survives_redaction(case: tuple[str, str]) -> None:
    """Whatever surrounds a card, no Luhn-valid 13 to 19 digit window is left after redaction."""
    text, number = case
    assert number in luhn_windows(text)  # the generated text does hold the card
    redacted, redacted_kinds = redact_text(text)
    assert luhn_windows(redacted) == []
    assert redacted_kinds


@PROPERTY_SETTINGS
@given(st.one_of(st.text(), pii_text))
def test_scan_never_raises_on_arbitrary_text(text: str) -> None:
    """Any text scans to well-formed, disjoint, ordered findings within the text."""
    found = scan_text(text)
    assert all(f.kind in KINDS and 0 <= f.start < f.end <= len(text) for f in found)
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))


@PROPERTY_SETTINGS
@given(st.one_of(st.text(), pii_text), st.sets(st.sampled_from(KINDS)))
def test_redaction_is_idempotent(text: str, redact_kinds: set[Kind]) -> None:
    """Redacting twice gives the same text as redacting once, for any choice of kinds."""
    once, _ = redact_text(text, redact_kinds)
    twice, again = redact_text(once, redact_kinds)
    assert twice == once
    assert again == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from([4111111111111111, 378282246310005.0])
    | pii_text,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "email", "ip"]), children, max_size=4)
    ),
    max_leaves=25,
)
payloads = st.dictionaries(st.sampled_from(["traits", "context", "userId", "x"]), json_values)


def containers(value: Any) -> list[int]:
    """The ids of every dict and list in ``value``."""
    if isinstance(value, dict):
        return [id(value), *(i for item in value.values() for i in containers(item))]
    if isinstance(value, list):
        return [id(value), *(i for item in value for i in containers(item))]
    return []


@PROPERTY_SETTINGS
@given(payloads, st.sets(st.sampled_from(["userId", "traits", "traits.email", "x[]"])))
def test_payload_walk_never_mutates_input(payload: dict[str, Any], transformed: set[str]) -> None:
    """scan_payload leaves its input unchanged; a rewritten result shares no container with it."""
    original = copy.deepcopy(payload)
    redacted, found = scan_payload(
        payload, {"traits.email": "email", "context.ip": "ip"}, transformed
    )
    assert payload == original
    if found:
        assert not set(containers(redacted)) & set(containers(payload))
    else:
        assert redacted == payload
