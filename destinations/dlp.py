"""The PII safety net: find and redact personal data left in free-text values (DLP).

Minimization keeps only allowlisted fields; this module catches personal data that slipped into
an allowed field that should not carry it (an email typed into a search box, a card number in a
coupon field). It is pure: values in, values out, no I/O, clock or logging.

Detectors (``Kind``)
--------------------
``card``
    13 to 19 digits, possibly split into groups by single spaces or dashes, passing the Luhn
    check. Digits are read as a *digit sequence* (digit groups joined by single separators) and
    every window of whole consecutive groups holding 13 to 19 digits is Luhn-checked; the union
    of valid windows is the finding. So a card stays detectable next to other numbers
    (``"qty 2 4111 1111 1111 1111 2026"``), but a run of digits glued to other digits is read
    as one number: a 23-digit id is not a card, whatever its substrings.
``email``
    ``local@domain.tld`` with an alphabetic TLD, ``@`` also spelled ``%40`` (URL-encoded).
``phone``
    Phone-shaped digit groups, never bare runs of digits (a Unix timestamp, an order id or a
    price look like bare runs). One of:

    - international: ``+`` (or ``%2B``) then a country code and 8 to 15 digits in all, with
      single ``space . -`` separators and parenthesised groups (``+1 (650) 555-1212``,
      ``+44 20 7946 0958``, ``+49 (0)30 1234 5678``); the ``+`` must not follow a letter or a
      digit (``UTC+05:30``, ``1+2``);
    - ``00`` international prefix then 10 to 17 digits with at least one separator;
    - a parenthesised area code of 2 to 5 digits then groups, 8 to 12 digits in all
      (``(650) 555-1212``, ``(11) 91234-5678``);
    - North American ``NXX-NXX-XXXX`` with one consistent separator, optionally after ``1-``;
    - national numbers with a trunk ``0`` (``020 7946 0958``, ``01 23 45 67 89``,
      ``030 12345678``, ``030/12345678``): one consistent separator, 9 to 12 digits, every group
      at least 2 digits, two groups only if the second has 5 or more (rules out ZIP+4 like
      ``02134-1234``), and dots only with 3 or more groups (rules out decimals).

    Every form must stand alone: not glued to letters or digits, nor continued by a separator
    and another digit (``ORD-2026-000123``, ``2026-11-22`` and ``1299.99`` never match).
``iban``
    Country code of the SWIFT registry, 2 check digits, the country's exact length (compact or
    with single spaces), and the ISO 7064 mod-97 check.
``ssn``
    US ``AAA-GG-SSSS`` with dashes, excluding area 000, 666 and 9xx, group 00, serial 0000.
``ip``
    Dotted IPv4 and IPv6 (also with an embedded IPv4 tail), validated with ``ipaddress``, not
    glued to a word or a dot; an IPv4 right after ``Name/`` is a product version
    (``Chrome/131.0.0.0``), not an address. Unspecified and loopback addresses (``0.0.0.0``,
    ``127.0.0.1``, ``::1``) identify no one and are not reported.

Overlaps: findings that overlap merge into one span (their union, so no part of the loser is
left behind in clear), labelled by the strongest of them. A card wins over every other kind
(a phone, an email local part), except that an IBAN wins over card windows lying inside it
(mod-97 plus the registry length is far stronger evidence than Luhn's one in ten); otherwise
the longest finding wins, then the earliest. One detector-level exception: a Luhn-valid run
lying inside a ``+`` phone number is the phone, not a card (``+86 138 0013 8000``), since a
card is never written with a country code; a card sticking out of the phone still wins.

Known false positives: a Luhn-valid 13 to 19 digit id (one in ten of them), also across
numbers joined by single spaces or dashes (two SSNs in a row can read as a card); four-part
version strings that are valid addresses (``v 1.2.3.4``); three numbers written
``250 300 1000``; numbers formatted like phones (``ORD-012-345-6789``); a ``+`` before 8 or more
digits (``+2026-11-22``); a ``+`` phone followed by another number after a single space takes
it in, up to 15 digits. Over-redaction of this kind is the intended side to err on.
Known false negatives: cards glued to other digits or split by dots; phones written as bare
digits (``6505551212``), without a trunk ``0`` or ``+`` outside North America
(``98765 43210``), or with fewer than 8 digits; SSNs without dashes; IBANs of countries outside
the registry, or glued to letters; internationalized email addresses and hosts without a TLD;
non-ASCII digits (full width, Arabic-Indic) and digits split by invisible characters.

Payload contract
----------------
``scan_payload(payload, declared, transformed)`` returns a new payload and ``Detection`` values
(path, kind, redacted), never the values found. Paths are dotted, with ``[]`` for array items
(``properties.products[].sku``). Cards are always redacted; other kinds are redacted unless the
field is ``declared`` as that kind (a declared name that is not a ``Kind`` declares nothing).
A path in ``transformed`` (hashed or tokenized by a transform) is copied through verbatim and
never scanned, nor is anything below it: a SHA-256 hex digest can hold a Luhn-valid digit run.
Because transformed paths are left exactly as given, the caller may pass the payload before or
after running its transforms: every other path comes out the same, and a transformed path
keeps whatever it held (the raw value, which the transform then replaces, or the digest).
The input is never mutated. When something is reported, containers are rebuilt and the output
shares no dict or list with the input; when nothing is (the usual case, found by a quick walk
over memoized string scans), the payload comes back as a shallow copy.

Cost
----
This runs on every delivered event, so the common case is kept cheap. Patterns are compiled at
import. Emails are looked for only when ``@`` or ``%40`` is present, IPv6 only with ``::`` or 7
colons. Every other kind lies inside a *run*: a digit followed by 6 or more digits or
`` ./()-``, found by one single-class pattern that the engine scans in C. IPv4 is looked for
only in runs with 3 dots; phones, SSNs and cards only in *zones* (runs with 8 or more digits),
and each of their detectors only when the zone has what it needs (enough digits, a separator,
a ``+`` or ``(`` before it), so a date or an id costs a count and a few tests. IBANs are looked
for only in strings with a zone (every registry format has 8 or more digits in a row). Patterns
start with a digit (the engine skips ahead in C) or with a look-behind that lets a match begin
only at a token boundary, and their repetitions are bounded, so a string costs time linear in
its length (100 kB of adversarial text: well under a second). Redaction rescans only strings
in which something was redacted.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

if TYPE_CHECKING:
    from destinations.fields import Allowlist

_native: ModuleType | None
try:  # the native walker, when pip could build it (setup.py); else the pure one below
    import destinations._speedups as _native
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None

Kind = Literal["card", "email", "phone", "iban", "ssn", "ip"]
"""What a detector found; bounded, so safe as a metric label."""

KINDS: Final[tuple[Kind, ...]] = ("card", "email", "phone", "iban", "ssn", "ip")


class Finding(NamedTuple):
    """A detected span of a text: ``text[start:end]`` is personal data of ``kind``.

    Named tuples rather than frozen dataclasses: they are built on the hot path, and a tuple is
    several times cheaper to build.
    """

    kind: Kind
    start: int
    end: int


class Detection(NamedTuple):
    """Personal data found at a payload path, and whether it was redacted (never the value)."""

    path: str
    kind: Kind
    redacted: bool


_MARKERS: Final[dict[Kind, str]] = {kind: f"[redacted:{kind}]" for kind in KINDS}
_ALL_KINDS: Final = frozenset(KINDS)
_MIN_TEXT = 6  # "a@b.co": nothing shorter can hold a finding we report
_CARD_MIN, _CARD_MAX = 13, 19
_MIN_PHONE_DIGITS = 8
_IBAN_MIN = 15  # Norway
# --- cards --------------------------------------------------------------------------------------

# A digit sequence holding at least 13 digits; greedy, so each match is a maximal sequence.
_CARD_SEQUENCE: Final = re.compile(r"[0-9](?:[ -]?[0-9]){12,}")
_DIGIT_GROUP: Final = re.compile(r"[0-9]+")
_DOUBLED: Final[dict[str, int]] = {str(d): (2 * d if d < 5 else 2 * d - 9) for d in range(10)}


def _luhn(digits: str) -> bool:
    total = sum(map(int, digits[-1::-2])) + sum(map(_DOUBLED.__getitem__, digits[-2::-2]))
    return total % 10 == 0


def _is_card_number(value: int) -> bool:
    value = abs(value)
    return 10 ** (_CARD_MIN - 1) <= value < 10**_CARD_MAX and _luhn(str(value))


def _card_spans(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Card spans inside one digit sequence ``text[start:end]``: the union of Luhn windows."""
    sequence = text[start:end]
    if sequence.isdigit():  # no separator: one number, a card only as a whole
        if len(sequence) <= _CARD_MAX and _luhn(sequence):
            yield start, end
        return
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(text, start, end)]
    digits = "".join(text[a:b] for a, b in groups)
    # Luhn doubles every second digit counted from the window's last one, so with the window
    # ending at index e-1 the weights depend only on (e-1) % 2: one prefix sum per parity makes
    # every window O(1).
    prefix: tuple[list[int], list[int]] = ([0], [0])
    for index, char in enumerate(digits):
        plain, doubled = ord(char) - 48, _DOUBLED[char]
        even = index % 2 == 0
        prefix[0].append(prefix[0][-1] + (plain if even else doubled))
        prefix[1].append(prefix[1][-1] + (doubled if even else plain))
    bounds: list[int] = [0]
    for a, b in groups:
        bounds.append(bounds[-1] + b - a)
    span_start, span_end = -1, -1
    for i in range(len(groups)):
        for j in range(i, len(groups)):
            lo, hi = bounds[i], bounds[j + 1]
            count = hi - lo
            if count > _CARD_MAX:
                break
            if count < _CARD_MIN:
                continue
            sums = prefix[(hi - 1) % 2]
            if (sums[hi] - sums[lo]) % 10:
                continue
            a, b = groups[i][0], groups[j][1]
            if a <= span_end:
                span_end = max(span_end, b)
            else:
                if span_end >= 0:
                    yield span_start, span_end
                span_start, span_end = a, b
    if span_end >= 0:
        yield span_start, span_end


# --- emails -------------------------------------------------------------------------------------

# The look-behind makes a match start only where a local part starts, so a long run of
# local-part characters without "@" is walked once, not once per position.
_EMAIL: Final = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+(?:@|%40)"
    r"(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)

# --- phones and SSNs: numeric zones -----------------------------------------------------------

# A run: a digit then 6 or more digits or " ./()-". A run holding 8 or more digits is a zone.
# Every phone, SSN and card lies inside a zone (after a prefix of at most 3 characters: "+",
# "(", "%2B") and every IPv4 address inside a run, so those detectors only run on the few runs
# of a text. A single character class with no backtracking: the cheapest pattern to scan.
_RUN: Final = re.compile(r"[0-9][0-9 ./()-]{6,}")
_MIN_ZONE_DIGITS = 8
_ZONE_PREFIX, _ZONE_SUFFIX = 3, 3  # the prefix, and what the look-aheads need after a match

# Not glued to a word before, nor continued by a word or by "separator + digit" after.
_ALONE_BEFORE = r"(?<![0-9A-Za-z_])(?<![0-9][ ./-])"
_ALONE_AFTER = r"(?![0-9A-Za-z_])(?![ ./-][0-9])"
_PHONE_INTERNATIONAL: Final = re.compile(
    r"(?<![0-9A-Za-z_+])(?:\+|%2[Bb])[1-9](?:[ .-]?(?:\([0-9]{1,4}\)|[0-9])){6,14}(?![0-9])"
)
_PHONE_AREA: Final = re.compile(
    r"(?<![0-9A-Za-z_])\(0?[1-9][0-9]{1,3}\) ?[0-9]{2,5}(?:[ .-]?[0-9]{2,5}){1,3}" + _ALONE_AFTER
)
# The national forms start differently ("00", "0[1-9]", "[1-9]"), so one pass tries them all
# without one hiding another.
_PHONE_NATIONAL: Final = re.compile(
    _ALONE_BEFORE + r"(?:"
    r"(?P<intl>00[1-9](?:[ .-]?[0-9]){7,14})"
    r"|(?P<trunk>0[1-9][0-9]{0,4}(?P<sep>[ ./-])[0-9]{2,8}(?:(?P=sep)[0-9]{2,8}){0,4})"
    r"|(?:1[ .-])?[2-9][0-9]{2}(?P<nanp>[ .-])[2-9][0-9]{2}(?P=nanp)[0-9]{4}"
    r")" + _ALONE_AFTER
)
_SSN: Final = re.compile(
    r"(?<![0-9A-Za-z_])(?<![0-9]-)(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}"
    r"(?![0-9A-Za-z_])(?!-[0-9])"
)
_NOT_DIGITS: Final = bytes(c for c in range(256) if not 48 <= c <= 57)


def _digits(match: str) -> int:
    """How many digits an (ASCII) match holds."""
    return len(match.encode("ascii").translate(None, _NOT_DIGITS))


def _national_phone(match: re.Match[str]) -> bool:
    """The digit-count and grouping rules of the national forms (see the module docstring)."""
    if match.group("intl") is not None:
        return 10 <= _digits(match.group()) <= 17
    if match.group("trunk") is None:
        return True  # North American: the pattern says it all
    groups = match.group().split(match.group("sep"))
    if not 9 <= sum(map(len, groups)) <= 12:
        return False
    if len(groups) == 2 and len(groups[1]) < 5:
        return False
    return match.group("sep") != "." or len(groups) >= 3


def _zone_findings(text: str, start: int, end: int, digits: int, found: list[Finding]) -> None:
    """Add the phones, SSNs and cards of the zone (a run) ``text[start:end]`` to ``found``.

    Each detector runs only when the zone has what it needs (digit count, a separator, a
    ``+`` or ``(`` before it), so most zones (dates, ids) cost one count and a few tests.
    """
    zone = text[start:end]
    lo, hi = max(0, start - _ZONE_PREFIX), min(len(text), end + _ZONE_SUFFIX)
    before = text[lo:start]
    grouped = not zone.isdigit()
    plus: list[Finding] = []  # international phones, written with "+"
    if "+" in before or "%2" in before:
        for m in _PHONE_INTERNATIONAL.finditer(text, lo, hi):
            if _MIN_PHONE_DIGITS <= _digits(m.group().replace("(0)", "")) <= 15:
                plus.append(Finding("phone", m.start(), m.end()))
        found += plus
    if "(" in before or "(" in zone:
        for m in _PHONE_AREA.finditer(text, lo, hi):
            if _MIN_PHONE_DIGITS <= _digits(m.group()) <= 12:
                found.append(Finding("phone", m.start(), m.end()))
    if grouped and digits >= 9:
        for m in _PHONE_NATIONAL.finditer(text, lo, hi):
            inside_plus = any(p.start <= m.start() and m.end() <= p.end for p in plus)
            if not inside_plus and _national_phone(m):  # "+1 650 555 1212" is found once
                found.append(Finding("phone", m.start(), m.end()))
        if "-" in zone:
            for m in _SSN.finditer(text, lo, hi):
                found.append(Finding("ssn", m.start(), m.end()))
    if digits >= _CARD_MIN:
        for m in _CARD_SEQUENCE.finditer(text, start, end):
            for a, b in _card_spans(text, m.start(), m.end()):
                # Inside a "+" number it is the phone ("+86 138 0013 8000" passes Luhn one
                # time in ten); a card that sticks out of the phone still wins the overlap.
                if not any(p.start <= a and b <= p.end for p in plus):
                    found.append(Finding("card", a, b))


# --- IBANs --------------------------------------------------------------------------------------

# SWIFT IBAN registry: country code -> IBAN length.
_IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
# Two check digits after two letters that start a word. Digits first: the engine then skips
# to the next digit in C; the country code is checked in Python.
_IBAN_CHECK_DIGITS: Final = re.compile(
    r"[0-9]{2}(?<=[A-Za-z]{2}[0-9]{2})(?<![0-9A-Za-z][A-Za-z]{2}[0-9]{2})(?= ?[0-9A-Za-z])"
)
# The rest of an IBAN of each length after its first 4 characters, single spaces allowed.
_IBAN_REST: Final[dict[int, re.Pattern[str]]] = {
    length: re.compile(rf"(?: ?[0-9A-Za-z]){{{length - 4}}}(?![0-9A-Za-z])")
    for length in set(_IBAN_LENGTHS.values())
}
_IBAN_LETTERS: Final = {ord(c): str(ord(c) - 55) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _iban_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN_CHECK_DIGITS.finditer(text):
        start = m.start() - 2
        length = _IBAN_LENGTHS.get(text[start : m.start()].upper())
        if length is None:
            continue
        rest = _IBAN_REST[length].match(text, m.end())
        if rest is None:
            continue
        compact = (text[start : m.end()] + rest.group().replace(" ", "")).upper()
        if int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 == 1:
            yield start, rest.end()


# --- IP addresses -----------------------------------------------------------------------------

# Digits first, so the engine skips to the next digit in C; the left boundary is checked in
# Python (a look-behind first would make the engine try every position).
_IPV4: Final = re.compile(
    r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![0-9A-Za-z_])(?!\.[0-9])"
)
_IPV6: Final = re.compile(
    r"(?<![0-9A-Za-z_:.])[0-9A-Fa-f:]{2,39}(?:(?<=:)[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    r"(?![0-9A-Za-z_:])(?!\.[0-9])"
)
_WORD: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def _ipv4_starts_alone(text: str, start: int) -> bool:
    """Not glued to a word or a dot, nor a version after a product name (``Chrome/131.0.0.0``)."""
    before = text[start - 1] if start else " "
    if before in _WORD or before == ".":
        return False
    return not (before == "/" and start >= 2 and text[start - 2] in _WORD)


def _ipv4_findings(text: str, start: int, end: int) -> Iterator[Finding]:
    """IPv4 addresses in the run ``text[start:end]``."""
    for m in _IPV4.finditer(text, start, min(len(text), end + 2)):
        if not _ipv4_starts_alone(text, m.start()):
            continue
        try:
            address = ipaddress.IPv4Address(m.group())
        except ValueError:  # an octet over 255 or with a leading zero: a version, not an IP
            continue
        if int(address) >> 24 not in (0, 127):  # 0/8 unspecified, 127/8 loopback: no one
            yield Finding("ip", m.start(), m.end())


def _ipv6_findings(text: str) -> Iterator[Finding]:
    for m in _IPV6.finditer(text):
        if m.group().count(":") < 2:
            continue
        try:
            address = ipaddress.IPv6Address(m.group())
        except ValueError:
            continue
        if not (address.is_unspecified or address.is_loopback):
            yield Finding("ip", *m.span())


# --- scanning -----------------------------------------------------------------------------------


def _candidates(text: str) -> list[Finding]:
    at = "@" in text or "%40" in text
    colon = ":" in text
    first_run = _RUN.search(text)
    if first_run is None and not at and not colon:
        return []  # the common case: a word, a name, a short id
    found: list[Finding] = []
    if at:
        found.extend(Finding("email", m.start(), m.end()) for m in _EMAIL.finditer(text))
    if colon and ("::" in text or text.count(":") >= 7):
        found.extend(_ipv6_findings(text))
    if first_run is None:
        return found
    zoned = False
    for run in _RUN.finditer(text, first_run.start()):
        chunk = run.group()
        if chunk.count(".") >= 3:
            found.extend(_ipv4_findings(text, run.start(), run.end()))
        digits = _digits(chunk)
        if digits >= _MIN_ZONE_DIGITS:
            zoned = True
            _zone_findings(text, run.start(), run.end(), digits, found)
    if zoned and len(text) >= _IBAN_MIN:  # every registry IBAN holds a zone (8+ digits)
        found.extend(Finding("iban", a, b) for a, b in _iban_spans(text))
    return found


def _label(cluster: list[Finding]) -> Kind:
    """The kind of a cluster of overlapping findings (see "Overlaps" in the module docstring)."""
    ibans = [f for f in cluster if f.kind == "iban"]
    for f in cluster:
        if f.kind == "card" and not any(i.start <= f.start and f.end <= i.end for i in ibans):
            return "card"
    if ibans:
        return "iban"
    return min(cluster, key=lambda f: (f.start - f.end, f.start, KINDS.index(f.kind))).kind


def _resolve(found: list[Finding]) -> list[Finding]:
    """Merge overlapping findings into one labelled span each; sorted by position."""
    found.sort(key=lambda f: (f.start, f.end))
    if all(a.end <= b.start for a, b in itertools.pairwise(found)):
        return found
    merged: list[Finding] = []
    cluster = [found[0]]
    end = found[0].end
    for finding in found[1:]:
        if finding.start < end:
            cluster.append(finding)
            end = max(end, finding.end)
            continue
        merged.append(Finding(_label(cluster), cluster[0].start, end))
        cluster, end = [finding], finding.end
    merged.append(Finding(_label(cluster), cluster[0].start, end))
    return merged


def scan_text(text: str) -> list[Finding]:
    """Personal data found in ``text``: disjoint findings in order of position."""
    return list(_scan_cached(text)) if len(text) >= _MIN_TEXT else []


@functools.lru_cache(maxsize=16384)
def _scan_cached(text: str) -> tuple[Finding, ...]:
    """Findings of one string, memoized: an event's strings are scanned once for all its
    destinations, and recurring strings (product names, page URLs) once per process."""
    found = _candidates(text)
    return tuple(_resolve(found) if len(found) > 1 else found)


def _redact(
    text: str, kinds: Collection[Kind], found: Sequence[Finding]
) -> tuple[str, list[Kind], list[Kind]]:
    """Redact until nothing of ``kinds`` is left; the redacted and the kept kinds, in order.

    Redacting a span can reveal a finding that lost an overlap to it, so this rescans until a
    pass finds nothing to redact: that is what makes redaction idempotent. Each pass replaces at
    least two digits, ``@`` or colons by a marker holding one colon, so the loop ends.
    """
    redacted: list[Kind] = []
    while True:
        hits = [f for f in found if f.kind in kinds]
        if not hits:
            return text, redacted, [f.kind for f in found]
        parts: list[str] = []
        position = 0
        for finding in hits:
            parts += (text[position : finding.start], _MARKERS[finding.kind])
            position = finding.end
            redacted.append(finding.kind)
        parts.append(text[position:])
        text = "".join(parts)
        found = scan_text(text)


def redact_text(text: str, redact_kinds: Collection[Kind] = KINDS) -> tuple[str, list[Kind]]:
    """Replace each finding of ``redact_kinds`` by ``[redacted:<kind>]``; the kinds replaced.

    ``redact_text("card 4111 1111 1111 1111, call +1 650 555 1212")`` gives
    ``("card [redacted:card], call [redacted:phone]", ["card", "phone"])``. Overlaps are merged
    and labelled among all kinds before ``redact_kinds`` is applied.
    """
    found = scan_text(text)
    if not found:
        return text, []
    new_text, redacted, _kept = _redact(text, frozenset(redact_kinds), found)
    return new_text, redacted


# --- payloads -----------------------------------------------------------------------------------

# What to redact in a field declared as each kind: everything else, and cards always.
_REDACT_IN_DECLARED: Final[dict[str, frozenset[Kind]]] = {
    kind: (_ALL_KINDS - {kind}) | {"card"} for kind in KINDS
}


def _scan_string(
    value: str, path: str, declared: Mapping[str, str], detections: list[Detection]
) -> str:
    if len(value) < _MIN_TEXT:
        return value
    found = _scan_cached(value)
    if not found:
        return value
    kinds = _REDACT_IN_DECLARED.get(declared.get(path, ""), _ALL_KINDS)
    new_value, redacted, kept = _redact(value, kinds, found)
    detections.extend(Detection(path, kind, True) for kind in redacted)
    detections.extend(Detection(path, kind, False) for kind in kept)
    return new_value


def _scan_number(value: int | float, path: str, detections: list[Detection]) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        number = value
    elif value.is_integer():
        number = int(value)
    else:
        return value
    if _is_card_number(number):
        detections.append(Detection(path, "card", True))
        return _MARKERS["card"]
    return value


_Frame = tuple[Iterator[tuple[Any, Any]], dict[Any, Any] | list[Any], str, bool]


def _at(payload: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = payload
    for part in parts:
        if type(node) is not dict and not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


@functools.lru_cache(maxsize=256)
def _split_skip(skip: frozenset[str]) -> tuple[frozenset[str], tuple[tuple[str, ...], ...]]:
    """Skipped paths as top-level names (skipped by key) and dotted paths, split into their
    keys (resolved per payload); paths inside arrays are left to the full walk."""
    top = frozenset(p for p in skip if "." not in p and "[" not in p)
    nested = tuple(tuple(p.split(".")) for p in skip if "." in p and "[" not in p)
    return top, nested


def _may_hold_findings(payload: Mapping[str, Any], skip: frozenset[str]) -> bool:
    """Whether any value could be reported: a quick walk (no copies, no paths) over memoized
    string scans. False for the usual payload, which then needs no rewriting at all.

    Top-level skipped fields (transformed values, the router's own ids and times) are left out
    by name, nested ones by identity; a skipped path inside an array is not resolved here,
    which can only make the answer True (and the full walk then applies the skip exactly).
    The walk itself is native when ``destinations._speedups`` is built (same answers); it
    passes over strings its ``quiet`` check clears (nothing ``_candidates`` could find: no
    ``@``, no IPv6, and no run or zone with the shape a detector needs, which clears dates,
    versions and ids with digits) without the memoized scan, so a value seen once (an order
    id, a URL) costs neither a scan nor a memo entry.
    """
    top, nested = _split_skip(skip)
    ignored = (
        {id(v) for parts in nested if (v := _at(payload, parts)) is not None} if nested else set()
    )
    values = [v for k, v in payload.items() if k not in top] if top else list(payload.values())
    if _native is not None:
        return bool(_native.may_hold_findings(values, ignored, _scan_cached, _is_card, _MIN_TEXT))
    return _may_hold(values, ignored)


def _is_card(value: int | float) -> bool:
    """An int (or integral float) the full walk would redact as a card number."""
    return _scan_number(value, "", []) is not value


def _may_hold(values: list[Any], ignored: set[int]) -> bool:
    """The pure walk of ``_may_hold_findings``.

    The stack holds iterables of values (a dict's ``values()``, a list), so no node needs an
    ABC ``isinstance`` check; ``None`` and booleans are passed over before the fallback test
    for other containers. Same answer as testing every value against ``Mapping``.
    """
    stack: list[Any] = [values]
    scan = _scan_cached
    while stack:
        for value in stack.pop():
            kind = type(value)
            if kind is str:
                if len(value) >= _MIN_TEXT and scan(value) and id(value) not in ignored:
                    return True
            elif kind is dict:
                if id(value) not in ignored:
                    stack.append(value.values())
            elif kind is int or kind is float:
                if abs(value) >= 10**12 and _is_card(value) and id(value) not in ignored:
                    return True
            elif kind is list:
                if id(value) not in ignored:
                    stack.append(value)
            elif value is None or kind is bool:
                continue
            elif isinstance(value, Mapping):
                stack.append(value.values())
            elif isinstance(value, list | tuple):
                stack.append(value)
    return False


def allowlisted(
    allowlist: Allowlist, event: Mapping[str, Any], declared: Mapping[str, str]
) -> tuple[dict[str, Any], list[Detection]]:
    """``scan_payload(allowlist.apply(event), declared, allowlist.unscanned_paths)``, the same
    answers: when the native copy saw no value the net could report (``quiet`` strings, no
    12+ digit number), the net's walk is skipped, and the copy is returned as it is."""
    payload, loud = allowlist.apply_checked(event, _MIN_TEXT)
    if not loud:
        return payload, []
    return scan_payload(payload, declared, allowlist.unscanned_paths)


def scan_payload(
    payload: Mapping[str, Any], declared: Mapping[str, str], transformed: Collection[str]
) -> tuple[dict[str, Any], list[Detection]]:
    """A redacted copy of ``payload`` and what was found where (see the module docstring).

    Strings are scanned; an integer (or an integral float) that is a Luhn-valid 13 to 19 digit
    number becomes the string ``[redacted:card]``. Dict keys, booleans and ``None`` are kept;
    tuples come back as lists. Detections come in document order (per string: the redacted
    ones, then the kept ones). The input is never changed; when something is reported the
    result is a fresh copy, otherwise a shallow copy that may share containers with it. The
    walk keeps its own stack, so no nesting depth can overflow
    the interpreter's.
    """
    skip = transformed if isinstance(transformed, frozenset) else frozenset(transformed)
    if not _may_hold_findings(payload, skip):
        return dict(payload), []
    detections: list[Detection] = []
    root: dict[str, Any] = {}
    # A frame: the source's remaining items, the copy being filled, the path of the items
    # (the container's path plus "[]" for a list), and whether to scan (not under a
    # transformed path).
    stack: list[_Frame] = [(iter(payload.items()), root, "", "" not in skip)]
    while stack:
        items, target, base, scan = stack[-1]
        for key, value in items:
            path = (f"{base}.{key}" if base else str(key)) if isinstance(target, dict) else base
            live = scan and path not in skip
            child: dict[Any, Any] | list[Any] | None = None
            copied: Any
            if isinstance(value, str):
                copied = _scan_string(value, path, declared, detections) if live else value
            elif isinstance(value, int | float):  # bool included: _scan_number keeps it
                copied = _scan_number(value, path, detections) if live else value
            elif isinstance(value, Mapping):
                copied = child = {}
                child_items: Iterator[tuple[Any, Any]] = iter(value.items())
            elif isinstance(value, list | tuple):
                copied = child = []
                child_items = enumerate(value)
            else:
                copied = value  # None (or anything else that is not JSON-like)
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
            if child is not None:
                child_base = path if isinstance(child, dict) else f"{path}[]"
                stack.append((child_items, child, child_base, live))
                break  # descend; this frame's iterator resumes after the child is done
        else:
            stack.pop()
    return root, detections
