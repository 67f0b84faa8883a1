# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native field-path walker: the same answers as ``router.core.paths``' pure walkers, faster.

Built by ``pip install`` (setup.py, Cython) when a C compiler and the Python headers are
there; ``router.core.paths`` falls back to its pure-Python walker otherwise. Pure: no I/O.
tests/unit/test_speedups.py checks that both give the same answer on generated JSON.
"""

from cpython.datetime cimport (
    PyDateTime_DATE_GET_HOUR,
    PyDateTime_DATE_GET_MICROSECOND,
    PyDateTime_DATE_GET_MINUTE,
    PyDateTime_DATE_GET_SECOND,
    PyDateTime_GET_DAY,
    PyDateTime_GET_MONTH,
    PyDateTime_GET_YEAR,
    datetime,
    datetime_tzinfo,
    import_datetime,
)
from cpython.set cimport PyFrozenSet_New, PySet_Add, PySet_GET_SIZE

import_datetime()
from datetime import timezone

cdef object _UTC = timezone.utc

cdef str WILDCARD = "*"
cdef int MAX_NAME = 64
cdef int MAX_DIGIT_RUN = 4


cdef inline bint _field_name(str name):
    """``[A-Za-z_$][A-Za-z0-9_$-]{0,63}`` in full and no run of 5 ASCII digits (the pure
    module's two regular expressions)."""
    cdef Py_ssize_t n = len(name)
    cdef Py_ssize_t i
    cdef Py_UCS4 c
    cdef int run = 0
    if n == 0 or n > MAX_NAME:
        return False
    for i in range(n):
        c = name[i]
        if c >= u'0' and c <= u'9':
            if i == 0:
                return False
            run += 1
            if run > MAX_DIGIT_RUN:
                return False
            continue
        run = 0
        if (c >= u'a' and c <= u'z') or (c >= u'A' and c <= u'Z') or c == u'_' or c == u'$':
            continue
        if c == u'-' and i > 0:
            continue
        return False
    return True


cpdef str safe_segment(object name):
    """A key as it may appear in a field path: itself if it looks like a field name, else
    ``*``."""
    if isinstance(name, str) and _field_name(<str>name):
        return <str>name
    return WILDCARD


cdef class _Path:
    """One path of the trie of paths seen: its text (hash computed once), the paths under it
    as an object (by key) and as an array (``[]``). Strings are built once per path, not per
    event."""

    cdef str text
    cdef str dot
    cdef dict names
    cdef _Path items

    def __cinit__(self, str text, str dot):
        self.text = text
        self.dot = dot
        self.names = {}
        self.items = None


cdef Py_ssize_t MAX_NODES = 65536
"""Paths kept at most; past it the trie starts again (the shapes that recur come back)."""
cdef Py_ssize_t _nodes = 0
cdef _Path _root_dict = _Path("", "")
cdef _Path _root_list = _Path("[]", "[].")


cdef inline void _count_node():
    global _nodes, _root_dict, _root_list
    _nodes += 1
    if _nodes > MAX_NODES:
        _nodes = 0
        _root_dict = _Path("", "")
        _root_list = _Path("[]", "[].")


cdef inline _Path _named(_Path parent, object name):
    """The path of ``parent``'s child ``name``. ``names`` holds children by segment, and a
    field-like key is its own segment: one lookup finds it, with no ``safe_segment`` scan."""
    cdef _Path node = <_Path>parent.names.get(name)
    if node is not None:
        return node
    cdef str segment = safe_segment(name)
    node = <_Path>parent.names.get(segment)
    if node is None:
        text = parent.dot + segment
        node = _Path(text, text + ".")
        _count_node()
        parent.names[segment] = node
    return node


cdef inline _Path _each(_Path parent):
    cdef _Path node = parent.items
    if node is None:
        text = parent.text + "[]"
        node = _Path(text, text + ".")
        _count_node()
        parent.items = node
    return node


cdef int _dict_paths(
    dict node, _Path at, int depth, object found, Py_ssize_t max_paths, int max_depth
) except -1:
    cdef _Path path
    depth += 1
    for name, child in node.items():
        if PySet_GET_SIZE(found) >= max_paths:
            return 0
        path = _named(at, name)
        if type(child) is dict and child and depth < max_depth:
            _dict_paths(<dict>child, path, depth, found, max_paths, max_depth)
        elif type(child) is list and child and depth < max_depth:
            _list_paths(<list>child, _each(path), depth, found, max_paths, max_depth)
        else:
            PySet_Add(found, path.text)
    return 0


cdef int _list_paths(
    list items, _Path at, int depth, object found, Py_ssize_t max_paths, int max_depth
) except -1:
    depth += 1
    for child in items:
        if PySet_GET_SIZE(found) >= max_paths:
            return 0
        if type(child) is dict and child and depth < max_depth:
            _dict_paths(<dict>child, at, depth, found, max_paths, max_depth)
        elif type(child) is list and child and depth < max_depth:
            _list_paths(<list>child, _each(at), depth, found, max_paths, max_depth)
        else:
            PySet_Add(found, at.text)
    return 0


def field_paths(object value, Py_ssize_t max_paths, int max_depth):
    """Leaf paths of a JSON-like value in allowlist syntax, keys normalized (see paths.py)."""
    # Filled in place before anyone sees it (what PySet_Add allows on a new frozenset): no
    # set to copy into one.
    found = PyFrozenSet_New(<object>NULL)
    if type(value) is dict:
        _dict_paths(<dict>value, _root_dict, 0, found, max_paths, max_depth)
    elif type(value) is list:
        _list_paths(<list>value, _root_list, 0, found, max_paths, max_depth)
    return found


TRUSTED = 1
SHALLOW = 2

cdef unsigned char _ORDINARY = 0, _NOT_ASCII = 1, _QUOTE = 2, _BRACKET = 3, _ESCAPE = 4
cdef unsigned char _BYTE_CLASS[256]
for _byte in range(256):
    _BYTE_CLASS[_byte] = (
        _NOT_ASCII if _byte >= 0x7f
        else _QUOTE if _byte == 0x22
        else _BRACKET if _byte == 0x7b or _byte == 0x5b
        else _ESCAPE if _byte == 0x5c
        else _ORDINARY
    )


def source_flags(
    bytes raw, Py_ssize_t max_string_chars, Py_ssize_t max_depth, Py_ssize_t max_key_chars
):
    """``sanitize.clean_source`` (``TRUSTED``) and, when it holds, ``sanitize.shallow_source``
    (``SHALLOW``) of an event's raw JSON, in one pass over its bytes: printable ASCII with no
    escape of ``\\u``, ``\\b`` or ``\\f`` and no longer than the string cap; then at most
    ``max_depth`` opening brackets and no quote followed by more than ``max_key_chars`` bytes
    without a quote. A table sorts the bytes, so an ordinary one costs a lookup."""
    cdef Py_ssize_t n = len(raw)
    cdef const unsigned char* p = raw
    cdef Py_ssize_t i, brackets = 0, quote = -1
    cdef bint long_run = False
    cdef unsigned char kind, after
    if n > max_string_chars:
        return 0
    for i in range(n):
        kind = _BYTE_CLASS[p[i]]
        if kind == _ORDINARY:
            continue
        if kind == _QUOTE:
            if quote >= 0 and i - quote - 1 > max_key_chars:
                long_run = True
            quote = i
        elif kind == _BRACKET:
            brackets += 1
        elif kind == _NOT_ASCII:
            return 0
        elif i + 1 < n:  # a backslash, then u, b or f
            after = p[i + 1]
            if after == 0x75 or after == 0x62 or after == 0x66:
                return 0
    if quote >= 0 and n - quote - 1 > max_key_chars:
        long_run = True
    if brackets <= max_depth and not long_run:
        return TRUSTED | SHALLOW
    return TRUSTED


cdef inline void _digits(char *out, int value, int width):
    cdef int i
    for i in range(width - 1, -1, -1):
        out[i] = 48 + value % 10
        value //= 10


def iso_millis(datetime moment):
    """``moment.isoformat(timespec="milliseconds")`` with ``Z`` for ``+00:00``
    (``sanitize.iso``'s format) when ``moment`` is in ``datetime.UTC``; ``None`` for any other
    zone or none (the caller converts first)."""
    if datetime_tzinfo(moment) is not _UTC:
        return None
    cdef char text[24]
    _digits(text, PyDateTime_GET_YEAR(moment), 4)
    text[4] = 45  # -
    _digits(text + 5, PyDateTime_GET_MONTH(moment), 2)
    text[7] = 45
    _digits(text + 8, PyDateTime_GET_DAY(moment), 2)
    text[10] = 84  # T
    _digits(text + 11, PyDateTime_DATE_GET_HOUR(moment), 2)
    text[13] = 58  # :
    _digits(text + 14, PyDateTime_DATE_GET_MINUTE(moment), 2)
    text[16] = 58
    _digits(text + 17, PyDateTime_DATE_GET_SECOND(moment), 2)
    text[19] = 46  # .
    _digits(text + 20, PyDateTime_DATE_GET_MICROSECOND(moment) // 1000, 3)
    text[23] = 90  # Z
    return text[:24].decode("ascii")


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void* PyUnicode_DATA(object)

cdef extern from "string.h":
    void* memchr(const void*, int, size_t)


cdef bint _plain(object value, int depth):
    cdef type kind = type(value)
    if kind is str:
        return PyUnicode_IS_ASCII(value) and memchr(
            PyUnicode_DATA(value), 0x7f, <size_t>PyUnicode_GET_LENGTH(value)
        ) == NULL
    if kind is int or kind is bool or value is None:
        return True
    if depth <= 0:
        return False
    if kind is dict:
        for key, item in (<dict>value).items():
            if type(key) is not str or not _plain(key, 0) or not _plain(item, depth - 1):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:
            if not _plain(item, depth - 1):
                return False
        return True
    return False


def plain_json(object value, int max_depth):
    """``audit_chain.pure_plain_json``: only exact dicts with string keys, lists, tuples,
    strings of ASCII without DEL, ints, bools and None, nested at most ``max_depth`` deep."""
    return _plain(value, max_depth)
