# cython: language_level=3, boundscheck=False, wraparound=False
"""Native walkers of the allowlist copy and the PII net's quick check: the same answers as
the pure functions of ``destinations.fields`` and ``destinations.dlp``, faster.

Built by ``pip install`` (setup.py, Cython) when a C compiler and the Python headers are
there; both modules fall back to their pure-Python walkers otherwise. Pure: no I/O. The
callbacks (string scan, number check, transform) are the pure modules' own functions, so
what counts as personal data is decided in one place. tests/unit/test_speedups.py checks
that both builds give the same answers on generated JSON.
"""

from collections.abc import Mapping

from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_KIND, PyUnicode_READ


cdef inline bint _digit(Py_UCS4 c):
    return c >= 48 and c <= 57


cdef inline bint _in_run(Py_UCS4 c):
    return _digit(c) or c == 32 or c == 46 or c == 47 or c == 40 or c == 41 or c == 45


cdef inline bint _letter(Py_UCS4 c):
    return (c >= 65 and c <= 90) or (c >= 97 and c <= 122)


cdef inline bint _word(Py_UCS4 c):
    return _digit(c) or _letter(c) or c == 95


cdef struct Text:
    # A str's characters, read without the indexing checks of ``text[i]``.
    int kind
    void *data
    Py_ssize_t n


cdef inline Py_UCS4 _at(const Text *t, Py_ssize_t i):
    """The character at ``i``, or 0 outside the text."""
    return PyUnicode_READ(t.kind, t.data, i) if 0 <= i < t.n else 0


cdef inline Py_ssize_t _digits_at(const Text *t, Py_ssize_t i, Py_ssize_t end):
    """How many ASCII digits in a row start at ``i`` (before ``end``)."""
    cdef Py_ssize_t j = i
    while j < end and _digit(_at(t, j)):
        j += 1
    return j - i


cdef bint _nanp_at(const Text *t, Py_ssize_t i, Py_ssize_t end):
    """``[2-9]dd S [2-9]dd S dddd`` at ``i`` (one separator ``S`` of `` .-``): the North
    American form of ``dlp._PHONE_NATIONAL``, its look-arounds left out."""
    cdef Py_UCS4 sep
    if i + 12 > end or not (50 <= _at(t, i) <= 57) or _digits_at(t, i, i + 3) != 3:
        return False
    sep = _at(t, i + 3)
    if sep != 32 and sep != 46 and sep != 45:
        return False
    if not (50 <= _at(t, i + 4) <= 57) or _digits_at(t, i + 4, i + 7) != 3:
        return False
    return _at(t, i + 7) == sep and _digits_at(t, i + 8, i + 12) == 4


cdef bint _ssn_at(const Text *t, Py_ssize_t i, Py_ssize_t end):
    """``ddd-dd-dddd`` at ``i``: ``dlp._SSN``'s shape, its exclusions left out."""
    return (
        i + 11 <= end
        and _digits_at(t, i, i + 3) == 3
        and _at(t, i + 3) == 45
        and _digits_at(t, i + 4, i + 6) == 2
        and _at(t, i + 6) == 45
        and _digits_at(t, i + 7, i + 11) == 4
    )


cdef bint _ipv4_at(const Text *t, Py_ssize_t i, Py_ssize_t end):
    """``dlp._IPV4`` at ``i``: four groups of 1 to 3 digits joined by dots, then neither a
    word character nor a dot and a digit."""
    cdef Py_ssize_t group, count
    cdef Py_UCS4 after
    for group in range(4):
        count = _digits_at(t, i, end)
        if count < 1 or count > 3:
            return False
        i += count
        if group < 3:
            if i >= end or _at(t, i) != 46:
                return False
            i += 1
    after = _at(t, i)
    return not (_word(after) or (after == 46 and _digit(_at(t, i + 1))))


cdef bint _zone_may_hold(const Text *t, Py_ssize_t start, Py_ssize_t end, Py_ssize_t digits):
    """Whether ``dlp._zone_findings`` could find something in the zone ``[start, end)`` (a
    run of 8 or more digits), by the same gates and the shapes its patterns need: a card
    needs 13 digits, a ``+`` phone a ``+``/``%2`` in the 3 characters before, an area code a
    ``(``; national phones and SSNs need a grouped zone of 9 or more digits, and (their
    look-behinds) a start not glued to a word or to a digit and separator, where a trunk
    ``0``, a North American number or an SSN's shape begins. A match of those lies inside
    the zone: the characters around a run are not digits or separators of it."""
    cdef Py_ssize_t i, lo = start - 3 if start >= 3 else 0
    cdef Py_UCS4 c, prev, prev2, after
    cdef bint grouped = False
    if digits >= 13:
        return True
    for i in range(lo, start):
        c = _at(t, i)
        if c == 43 or c == 40 or (c == 37 and i + 1 < start and _at(t, i + 1) == 50):  # + ( %2
            return True
    for i in range(start, end):
        c = _at(t, i)
        if c == 40:  # (
            return True
        if not _digit(c):
            grouped = True
    if not grouped or digits < 9:
        return False
    for i in range(start, end):
        c = _at(t, i)
        if not _digit(c):
            continue
        prev = _at(t, i - 1)
        prev2 = _at(t, i - 2)
        if _word(prev):
            continue
        # dlp._SSN's look-behind: not after a digit and a dash
        if not (prev == 45 and _digit(prev2)) and _ssn_at(t, i, end):
            return True
        # dlp._PHONE_NATIONAL's: not after a digit and one of " ./-"
        if (prev == 32 or prev == 46 or prev == 47 or prev == 45) and _digit(prev2):
            continue
        if c == 48:  # a trunk 0 (or the 00 of the international prefix)
            return True
        if _nanp_at(t, i, end):
            return True
        # "1" and a separator before a North American number
        after = _at(t, i + 1)
        if c == 49 and (after == 32 or after == 46 or after == 45) and _nanp_at(t, i + 2, end):
            return True
    return False


cdef bint _ipv4_may_hold(const Text *t, Py_ssize_t start, Py_ssize_t end):
    """Whether ``dlp._ipv4_findings`` could find an address in the run ``[start, end)``: the
    shape of four dotted groups at a digit that starts alone (``_ipv4_starts_alone``: not
    after a word character or a dot, nor after ``Name/``)."""
    cdef Py_ssize_t i
    cdef Py_UCS4 prev
    for i in range(start, end):
        if not _digit(_at(t, i)):
            continue
        prev = _at(t, i - 1)
        if _word(prev) or prev == 46 or (prev == 47 and _word(_at(t, i - 2))):
            continue
        if _ipv4_at(t, i, end):
            return True
    return False


cdef bint _iban_may_start(const Text *t):
    """Whether ``dlp._IBAN_CHECK_DIGITS`` could match: two letters that start a word, then two
    digits (the country code and the rest are checked by the full scan)."""
    cdef Py_ssize_t i
    cdef Py_UCS4 before
    for i in range(t.n - 3):
        if (
            _letter(_at(t, i))
            and _letter(_at(t, i + 1))
            and _digit(_at(t, i + 2))
            and _digit(_at(t, i + 3))
        ):
            before = _at(t, i - 1)
            if not (_digit(before) or _letter(before)):
                return True
    return False


cpdef bint quiet(str text):
    """Whether ``dlp._candidates`` certainly finds nothing in ``text``: no ``@``, no ``%40``,
    neither ``::`` nor 7 colons (no IPv6 to try); every *run* (``dlp._RUN``: a digit then 6 or
    more of ``0-9 ./()-``) with 3 dots holds no dotted quad that starts alone (no IPv4), every
    zone (a run of 8 or more digits) has nothing its phone, SSN and card detectors need
    (``_zone_may_hold``), and a text with a zone has no IBAN start. Each test is one the scan
    makes itself, or a shape its patterns need, so a string ``quiet`` clears has no finding;
    the PII net's quick walk passes such strings over without the memoized scan
    (tests/unit/test_speedups.py checks this against ``dlp._candidates`` on generated text,
    and that it clears everything ``_candidates``' own early exits clear)."""
    cdef Text t
    t.kind = PyUnicode_KIND(text)
    t.data = PyUnicode_DATA(text)
    t.n = len(text)
    cdef Py_UCS4 c, prev = 0, prev2 = 0
    cdef Py_ssize_t colons = 0, length = 0, digits = 0, dots = 0, i, start = 0
    cdef bint run = False  # in a run of 0-9 ./()- that started with a digit
    cdef bint zoned = False
    for i in range(t.n + 1):
        c = PyUnicode_READ(t.kind, t.data, i) if i < t.n else 0
        if c == 64:  # @
            return False
        if c == 58:  # :
            colons += 1
            if prev == 58 or colons >= 7:
                return False
        elif c == 48 and prev == 52 and prev2 == 37:  # %40
            return False
        if c != 0 and _in_run(c):
            if run:
                length += 1
                if _digit(c):
                    digits += 1
                elif c == 46:
                    dots += 1
            elif _digit(c):
                run = True
                start = i
                length = digits = 1
                dots = 0
        elif run:
            run = False
            if length >= 7:
                if dots >= 3 and _ipv4_may_hold(&t, start, i):
                    return False
                if digits >= 8:
                    zoned = True
                    if _zone_may_hold(&t, start, i, digits):
                        return False
        prev2 = prev
        prev = c
    return not (zoned and t.n >= 15 and _iban_may_start(&t))


def may_hold_findings(
    list values, object ignored, object scan, object is_card, Py_ssize_t min_text
):
    """Whether any of ``values`` (recursively) could be reported (``dlp._may_hold_findings``
    after its skip handling): a string of at least ``min_text`` characters with findings
    (``scan``; strings ``quiet`` says hold none are not scanned), an int or float of 12+
    digits ``is_card`` says is a card number. Values whose ``id`` is in ``ignored`` (a set,
    or ``None``) and everything under them are passed over."""
    cdef list stack = [values]
    cdef bint check_ids = bool(ignored)
    while stack:
        for value in stack.pop():
            kind = type(value)
            if kind is str:
                if len(<str>value) >= min_text and not quiet(<str>value) and scan(value):
                    if not check_ids or id(value) not in ignored:
                        return True
            elif kind is dict:
                if not check_ids or id(value) not in ignored:
                    stack.append(list((<dict>value).values()))
            elif kind is int or kind is float:
                if abs(value) >= 1_000_000_000_000 and is_card(value):
                    if not check_ids or id(value) not in ignored:
                        return True
            elif kind is list:
                if not check_ids or id(value) not in ignored:
                    stack.append(value)
            elif value is None or kind is bool:
                continue
            elif isinstance(value, Mapping):
                stack.append(list(value.values()))
            elif isinstance(value, (list, tuple)):
                stack.append(list(value))
    return False


cdef class Rule:
    """One compiled allowlist node (``fields._Node`` sealed): read without attribute lookups."""

    cdef readonly object transform
    cdef readonly bint leaf
    cdef readonly bint whole
    cdef readonly Rule each
    cdef readonly tuple rules  # ((name, Rule or None), ...)
    cdef frozenset names  # the names of ``rules``

    def __init__(self, transform, bint leaf, bint whole, Rule each, tuple rules):
        self.transform = transform
        self.leaf = leaf
        self.whole = whole
        self.each = each
        self.rules = rules
        self.names = frozenset([name for name, _ in rules])


cdef bint _loud(object value, Py_ssize_t min_text):
    """Whether ``may_hold_findings`` could say True of ``value``: a string of ``min_text`` or
    more characters ``quiet`` does not clear, a number of 12+ digits, anything but JSON types
    (said loud: the full check decides), or a container holding one of those."""
    kind = type(value)
    if kind is str:
        return len(<str>value) >= min_text and not quiet(<str>value)
    if kind is dict:
        for item in (<dict>value).values():
            if _loud(item, min_text):
                return True
        return False
    if kind is list:
        for item in <list>value:
            if _loud(item, min_text):
                return True
        return False
    if kind is int or kind is float:
        return abs(value) >= 1_000_000_000_000
    return not (value is None or kind is bool)


cdef struct Check:
    # The PII net's quick check, made while copying (``apply_checked``); ``loud`` once a
    # copied value might hold a finding. Transformed values are not checked (the net leaves
    # them alone), nor the top-level names in ``skip``.
    Py_ssize_t min_text
    bint loud
    PyObject *skip  # a frozenset, or NULL


cdef inline void _check(Check *check, object value, object name):
    if check is NULL or check.loud:
        return
    if name is not None and check.skip is not NULL and name in <frozenset>check.skip:
        return
    if _loud(value, check.min_text):
        check.loud = True


cdef object _apply(
    Rule node, object value, bytes key, object transform, object dropped, Check *check, bint top
):
    cdef list items
    cdef dict out
    cdef dict source
    cdef Rule each
    cdef Rule child
    if node.transform is not None:
        return transform(node.transform, value, key)
    if node.leaf:
        _check(check, value, None)
        return value
    kind = type(value)
    if kind is list:
        each = node.each
        if each is None:
            if node.whole:
                _check(check, value, None)
                return value
            return dropped
        items = []
        for item in <list>value:
            result = _apply(each, item, key, transform, dropped, check, False)
            if result is not dropped:
                items.append(result)
        return items if items or node.whole else dropped
    if kind is dict:
        source = <dict>value
        if node.whole:
            out = dict(source)
            if check is not NULL and not check.loud:
                for name, item in source.items():
                    if name not in node.names:  # the rules below look at their own
                        _check(check, item, name if top else None)
        else:
            out = {}
        for name, rule in node.rules:
            item = source.get(name, _ABSENT)
            if item is _ABSENT:
                continue
            if rule is None:
                out[name] = item
                _check(check, item, name if top else None)
                continue
            result = _apply(<Rule>rule, item, key, transform, dropped, check, False)
            if result is dropped:
                out.pop(name, None)
            else:
                out[name] = result
        return out if out or node.whole else dropped
    if node.whole:
        _check(check, value, None)
        return value
    return dropped


cdef object _ABSENT = object()


cdef class Copier:
    """The allowlist copy of ``fields._apply`` (the same answers) for one allowlist, its key,
    transform (``fields.apply_transform``), ``dropped`` marker and skip set bound once; and
    the PII net's quick check made while copying (``apply_checked``)."""

    cdef Rule root
    cdef bytes key
    cdef object transform
    cdef object dropped
    cdef frozenset skip

    def __init__(self, Rule root, bytes key, object transform, object dropped, frozenset skip):
        self.root = root
        self.key = key
        self.transform = transform
        self.dropped = dropped
        self.skip = skip

    def apply(self, object value):
        """The copy of ``value`` (``{}`` when nothing is left)."""
        result = _apply(self.root, value, self.key, self.transform, self.dropped, NULL, True)
        return result if type(result) is dict else {}

    def apply_checked(self, object value, Py_ssize_t min_text):
        """The copy (``{}`` when nothing is left), and whether the net's quick walk could
        find anything in it: False when every copied value that is neither transformed nor
        under a top-level name in ``skip`` is one ``_loud`` clears (then
        ``dlp.scan_payload`` finds nothing in it)."""
        cdef Check check
        check.min_text = min_text
        check.loud = False
        check.skip = <PyObject *>self.skip
        result = _apply(self.root, value, self.key, self.transform, self.dropped, &check, True)
        return (result if type(result) is dict else {}), check.loud


include "hmac.pxi"
