"""An iterative JSON splitter, for bodies too deep for the recursive decoder. Pure.

When one event of a batch is nested thousands of levels deep, msgspec cannot even skip over it
to find the batch's other events. This scanner finds value boundaries with a loop and a depth
counter, so the batch is split into raw events and only the deep one is rejected.
``depth_path`` finds how deep a body is the same way, before any recursive decoder sees it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_WS = frozenset(b" \t\r\n")
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")


class ScanError(ValueError):
    """The bytes are not a JSON object with the expected shape."""


def _skip_ws(buf: bytes, i: int) -> int:
    while i < len(buf) and buf[i] in _WS:
        i += 1
    return i


def _string_end(buf: bytes, i: int) -> int:
    """Index after the closing quote of the string starting at ``buf[i] == '"'``."""
    i += 1
    while i < len(buf):
        char = buf[i]
        if char == 0x5C:  # backslash
            i += 2
            continue
        if char == 0x22:  # quote
            return i + 1
        i += 1
    raise ScanError("unterminated string")


def value_end(buf: bytes, i: int) -> int:
    """Index after the JSON value starting at ``i`` (no recursion, any depth)."""
    i = _skip_ws(buf, i)
    if i >= len(buf):
        raise ScanError("missing value")
    if buf[i] == 0x22:
        return _string_end(buf, i)
    if buf[i] not in _OPEN:
        while i < len(buf) and buf[i] not in _WS and buf[i] not in b",]}":
            i += 1
        return i
    depth = 0
    while i < len(buf):
        char = buf[i]
        if char == 0x22:
            i = _string_end(buf, i)
            continue
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ScanError("unterminated value")


def object_members(buf: bytes) -> dict[bytes, bytes]:
    """The raw values of a top-level JSON object's members (keys as raw JSON strings)."""
    i = _skip_ws(buf, 0)
    if i >= len(buf) or buf[i] != 0x7B:
        raise ScanError("expected an object")
    members: dict[bytes, bytes] = {}
    i = _skip_ws(buf, i + 1)
    if i < len(buf) and buf[i] == 0x7D:
        return members
    while i < len(buf):
        if buf[i] != 0x22:
            raise ScanError("expected a key")
        key_end = _string_end(buf, i)
        key = buf[i:key_end]
        i = _skip_ws(buf, key_end)
        if i >= len(buf) or buf[i] != 0x3A:
            raise ScanError("expected ':'")
        start = _skip_ws(buf, i + 1)
        end = value_end(buf, start)
        members[key] = buf[start:end]
        i = _skip_ws(buf, end)
        if i < len(buf) and buf[i] == 0x2C:
            i = _skip_ws(buf, i + 1)
            continue
        if i < len(buf) and buf[i] == 0x7D:
            return members
        raise ScanError("expected ',' or '}'")
    raise ScanError("unterminated object")


def array_items(buf: bytes) -> list[bytes]:
    """The raw elements of a JSON array."""
    i = _skip_ws(buf, 0)
    if i >= len(buf) or buf[i] != 0x5B:
        raise ScanError("expected an array")
    items: list[bytes] = []
    i = _skip_ws(buf, i + 1)
    if i < len(buf) and buf[i] == 0x5D:
        return items
    while i < len(buf):
        end = value_end(buf, i)
        items.append(buf[i:end])
        i = _skip_ws(buf, end)
        if i < len(buf) and buf[i] == 0x2C:
            i = _skip_ws(buf, i + 1)
            continue
        if i < len(buf) and buf[i] == 0x5D:
            return items
        raise ScanError("expected ',' or ']'")
    raise ScanError("unterminated array")


_DELIMITERS = frozenset(b" \t\r\n,]}:")
_NON_FINITE = frozenset((b"NaN", b"-NaN", b"+NaN", b"Infinity", b"-Infinity", b"+Infinity"))
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _escape_unit(buf: bytes, i: int) -> int | None:
    """The UTF-16 unit of a ``\\uXXXX`` escape starting at ``buf[i] == '\\'``, else ``None``."""
    digits = buf[i + 2 : i + 6]
    if buf[i + 1 : i + 2] != b"u" or len(digits) != 4 or not all(c in _HEX for c in digits):
        return None
    return int(digits, 16)


def _string_defect(buf: bytes, i: int) -> tuple[int, str | None]:
    """End of the string at ``buf[i] == '"'`` and what is wrong inside it, if anything:
    ``control_char`` (a raw byte below 0x20), ``lone_surrogate`` (a ``\\uD800``-``\\uDFFF``
    escape without its pair), ``invalid_utf8``."""
    start = i
    i += 1
    defect: str | None = None
    while i < len(buf):
        char = buf[i]
        if char == 0x22:
            if defect is None:
                try:
                    buf[start + 1 : i].decode("utf-8")
                except UnicodeDecodeError:
                    defect = "invalid_utf8"
            return i + 1, defect
        if char < 0x20:
            defect = defect or "control_char"
        elif char == 0x5C:
            unit = _escape_unit(buf, i)
            if unit is not None and 0xD800 <= unit <= 0xDFFF:
                low = _escape_unit(buf, i + 6) if unit < 0xDC00 else None
                if low is None or not 0xDC00 <= low <= 0xDFFF:
                    defect = defect or "lone_surrogate"
                else:
                    i += 6
            i += 2
            continue
        i += 1
    raise ScanError("unterminated string")


def _key_text(raw: bytes) -> str:
    try:
        text = json.loads(raw)
    except ValueError:
        return raw[1:-1].decode("utf-8", "replace")
    return text if isinstance(text, str) else ""


def defect(buf: bytes) -> tuple[str, str] | None:
    """The first value that makes ``buf`` invalid JSON although its structure is sound, as
    ``(kind, field path)``: ``non_finite`` (``NaN``, ``Infinity`` or a number out of double
    range), ``lone_surrogate``, ``control_char``, ``invalid_utf8``. ``None`` when there is no
    such value or the structure itself is broken. Iterative: any depth, one pass."""
    path: list[str | int] = []  # keys and indexes of the containers entered
    kinds: list[bool] = []  # True for an object
    i = _skip_ws(buf, 0)
    try:
        while i < len(buf):
            char = buf[i]
            if char in b"{[":
                kinds.append(char == 0x7B)
                path.append(0)
                i = _skip_ws(buf, i + 1)
                if i < len(buf) and buf[i] in b"]}":
                    continue
                if char == 0x7B:
                    i = _member_key(buf, i, path)
                continue
            if char in b"]}":
                if not kinds:
                    return None
                kinds.pop()
                path.pop()
                i = _after_value(buf, i + 1, kinds, path)
                continue
            if char == 0x22:
                end, found = _string_defect(buf, i)
            else:
                end = i
                while end < len(buf) and buf[end] not in _DELIMITERS:
                    end += 1
                if end == i:  # a delimiter where a value belongs: broken structure
                    return None
                token = buf[i:end]
                found = "non_finite" if _non_finite(token) else None
            if found is not None:
                return found, _render(path)
            i = _after_value(buf, end, kinds, path)
    except _KeyDefectError as key_defect:  # not `found`: a str | None above (mypyc types it)
        return str(key_defect), _render(path)
    except ScanError:
        return None
    return None


def depth_path(buf: bytes, limit: int) -> str | None:
    """The path (``event.properties.a[2]``) of the first array or object nested ``limit`` or
    more levels below the top-level value, or None when there is none (no recursion: any
    depth). Malformed JSON is not reported here (the decoder will); it may yield None."""
    if buf.count(b"{") + buf.count(b"[") <= limit:
        return None  # fewer brackets than levels: cannot be that deep
    stack: list[list[Any]] = []  # per open container: [is_object, key or index]
    i, size = 0, len(buf)
    try:
        while i < size:
            char = buf[i]
            if char == 0x22:
                end = _string_end(buf, i)
                top = stack[-1] if stack else None
                if top is not None and top[0] and top[1] is None:
                    top[1] = _key_text(buf[i:end])
                i = end
                continue
            if char in _OPEN:
                if len(stack) >= limit:
                    return _render(["" if key is None else key for _, key in stack])
                stack.append([char == 0x7B, None if char == 0x7B else 0])
            elif char in _CLOSE:
                if stack:
                    stack.pop()
            elif char == 0x2C and stack:  # comma
                top = stack[-1]
                top[1] = None if top[0] else top[1] + 1
            i += 1
    except ScanError:
        return None
    return None


class _KeyDefectError(Exception):
    """A member name is itself defective (raised out of the scanning loop)."""


def _non_finite(token: bytes) -> bool:
    if token in _NON_FINITE:
        return True
    if not token or token[0] not in b"-0123456789":
        return False
    try:
        return math.isinf(float(token))
    except ValueError:
        return False


def _member_key(buf: bytes, i: int, path: list[str | int]) -> int:
    """Read ``"key":`` at ``i``; the key becomes the path's last segment."""
    if i >= len(buf) or buf[i] != 0x22:
        raise ScanError("expected a key")
    end, found = _string_defect(buf, i)
    path[-1] = _key_text(buf[i:end])
    if found is not None:
        raise _KeyDefectError(found)
    i = _skip_ws(buf, end)
    if i >= len(buf) or buf[i] != 0x3A:
        raise ScanError("expected ':'")
    return _skip_ws(buf, i + 1)


def _after_value(buf: bytes, i: int, kinds: list[bool], path: list[str | int]) -> int:
    """Past a value: a comma moves to the container's next member or element."""
    i = _skip_ws(buf, i)
    if i < len(buf) and buf[i] == 0x2C and kinds:
        i = _skip_ws(buf, i + 1)
        if kinds[-1]:
            return _member_key(buf, i, path)
        index = path[-1]
        path[-1] = index + 1 if isinstance(index, int) else 0
    return i


def _render(path: list[str | int]) -> str:
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text = f"{text}.{segment}" if text else segment
    # The path goes back to the client in a JSON answer: no raw control characters, and no
    # lone surrogate (which no encoder can write as UTF-8).
    return _UNPRINTABLE.sub("\ufffd", text)


_UNPRINTABLE = re.compile("[\x00-\x1f" + chr(0xD800) + "-" + chr(0xDFFF) + "]")
