# cython: language_level=3, boundscheck=False, wraparound=False
"""Native helpers of consent/: the memo key of an event's consent signals (``signal_key``, the
same keys as ``consent.resolve.signal_key`` over ``consent.memo.frozen``) and SHA-256 /
HMAC-SHA256 for the subject hashes (native/sha256.h through native/hmac.pxi; see
consent/ids.py). Pure: no I/O. tests/unit/test_native_hashes.py and
tests/unit/consent/test_memo.py check them against the pure functions."""

cdef object _UNKEYABLE = object()
cdef int _MAX_DEPTH = 1000  # deeper: RecursionError, as the pure function raises


cdef object _frozen(object value, int depth):
    """``consent.memo.frozen``, or ``_UNKEYABLE`` where it raises ``Unkeyable``."""
    kind = type(value)
    if kind is str or value is None:
        return value
    if kind is bool or kind is int or kind is float:
        return (kind, value)
    if kind is not dict and kind is not list:
        return _UNKEYABLE
    if depth >= _MAX_DEPTH:
        raise RecursionError("a consent value nested too deep to key")
    cdef list parts = []
    if kind is list:
        for item in <list>value:
            key = _frozen(item, depth + 1)
            if key is _UNKEYABLE:
                return _UNKEYABLE
            parts.append(key)
        return (list, tuple(parts))
    for name, item in (<dict>value).items():
        if type(name) is not str:
            name_key = _frozen(name, depth + 1)
            if name_key is _UNKEYABLE:
                return _UNKEYABLE
            name = (type(name), name_key)
        key = _frozen(item, depth + 1)
        if key is _UNKEYABLE:
            return _UNKEYABLE
        parts.append((name, key))
    return (dict, tuple(parts))


def signal_key(object context, tuple names):
    """``(frozen(context.get("consent")), ((name, frozen(context[name])), ...))`` for the
    ``names`` in ``context``, in their order; ``None`` when a value is not JSON."""
    consent = _frozen(context.get("consent"), 0)
    if consent is _UNKEYABLE:
        return None
    cdef list parts = []
    for name in names:
        if name in context:
            key = _frozen(context[name], 0)
            if key is _UNKEYABLE:
                return None
            parts.append((name, key))
    return (consent, tuple(parts))


include "hmac.pxi"
