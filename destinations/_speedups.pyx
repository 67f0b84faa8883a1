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


cdef inline bint _in_run(Py_UCS4 c):
    return (c >= 48 and c <= 57) or c == 32 or c == 46 or c == 47 or c == 40 or c == 41 or c == 45


cpdef bint quiet(str text):
    """Whether ``dlp._candidates`` certainly finds nothing in ``text``: no ``@``, no ``%40``,
    neither ``::`` nor 7 colons (no IPv6 to try), and every *run* (``dlp._RUN``: a digit then
    6 or more of ``0-9 ./()-``) has fewer than 3 dots (no IPv4 to try) and fewer than 8
    digits (not a zone: no phone, SSN, card or IBAN to try). The PII net's quick walk passes
    such strings over without the memoized scan (tests/unit/test_speedups.py checks this
    against ``dlp._candidates`` and its own early exits on generated text)."""
    cdef Py_UCS4 c, prev = 0, prev2 = 0
    cdef Py_ssize_t colons = 0, length = 0, digits = 0, dots = 0
    cdef bint run = False  # in a run of 0-9 ./()- that started with a digit
    for c in text:
        if c == 64:  # @
            return False
        if c == 58:  # :
            colons += 1
            if prev == 58 or colons >= 7:
                return False
        elif c == 48 and prev == 52 and prev2 == 37:  # %40
            return False
        if _in_run(c):
            if run:
                length += 1
                if c <= 57 and c >= 48:
                    digits += 1
                    if digits >= 8:
                        return False
                elif c == 46:
                    dots += 1
                if dots >= 3 and length >= 7:
                    return False
            elif c >= 48 and c <= 57:
                run = True
                length = digits = 1
                dots = 0
        else:
            run = False
        prev2 = prev
        prev = c
    return True


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
