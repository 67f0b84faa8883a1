"""An iterative JSON splitter, for bodies too deep for the recursive decoder. Pure.

When one event of a batch is nested thousands of levels deep, msgspec cannot even skip over it
to find the batch's other events. This scanner finds value boundaries with a loop and a depth
counter, so the batch is split into raw events and only the deep one is rejected.
``depth_path`` finds how deep a body is the same way, before any recursive decoder sees it.
"""

from __future__ import annotations

import json
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


def _key_text(raw: bytes) -> str:
    """A raw JSON key as text (as given when it does not decode)."""
    try:
        text = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip('"')
    return text if isinstance(text, str) else str(text)


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
                    return _path(stack)
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


def _path(stack: list[list[Any]]) -> str:
    parts = [f".{key}" if is_object else f"[{key}]" for is_object, key in stack]
    return "".join(parts).lstrip(".")
