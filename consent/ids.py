"""Subject ids: the one normalization and the one hash every part of the router uses. Pure.

An id reaches us from an SDK event, ``POST /v1/consent``, a consent event, ``POST
/admin/erase`` or ``router erase``. Each must land on the same key, or a withdrawal or an
erasure is stored under another hash and silently does nothing. So every id goes through
``normalize_id`` (control characters removed, NFC, surrounding whitespace stripped), and
``subject_key`` applies it before hashing, so no caller can forget it.

Keyed (since 0.2): with a secret, a subject key is HMAC-SHA256 (under the secret) of the
SHA-256 hex of the normalized id, so the hashes in Redis cannot be reversed by hashing a
dictionary of emails or ids. The router passes
its ``ROUTER_SUBJECT_KEY`` in; without one the key is plain SHA-256, as before.

This module lives in ``consent/`` because both ``consent.store`` and ``router`` hash ids, and
``consent`` never imports ``router``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from types import ModuleType
from typing import Final, Protocol

_native: ModuleType | None
try:  # SHA-256 and HMAC-SHA256 in C (native/sha256.h), when pip could build them (setup.py)
    import consent._speedups as _native
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""C0 and C1 control characters except tab, line feed and carriage return (as sanitizing
strips them from every string of an event)."""


def normalize_id(value: str) -> str:
    """The canonical form of a subject id: control characters removed, then NFC, then stripped.

    Idempotent. Control characters go before NFC: removing one between a letter and a
    combining mark must still let them compose (``"e\\x00\\u0301"`` is ``"é"``).
    """
    if value.isascii() and value.isprintable():  # the usual id: nothing to do but strip
        return value.strip()
    value = _CONTROL.sub("", value)
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    return value.strip()


@functools.lru_cache(maxsize=8192)
def subject_key(identifier: str, secret: bytes = b"") -> str:
    """How a subject id is stored in Redis: ``keyed`` SHA-256 hex of the normalized id under
    ``secret`` (the plain SHA-256 hex when it is empty), never the id.

    Memoized (in memory only): the same subjects send event after event."""
    unkeyed = sha256_hex(normalize_id(identifier))
    return keyed(unkeyed, secret) if secret else unkeyed


def keyed(unkeyed: str, secret: bytes) -> str:
    """The keyed subject key of an unkeyed one (the SHA-256 hex of an id).

    The HMAC is taken over the SHA-256 hex rather than over the id so that a deployment which
    stored unkeyed hashes can re-key them without knowing the ids (``router migrate-subjects``).
    """
    return hmac_key(secret).hex(unkeyed)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """``hmac.digest(key, message, "sha256")``, from states prepared once per key."""
    return hmac_key(key).digest(message)


class KeyedHash(Protocol):
    """HMAC-SHA256 under one key, prepared once: ``consent._speedups.HmacSha256`` when built,
    else ``PureHmac``."""

    def digest(self, message: bytes) -> bytes: ...

    def hex(self, text: str, size: int = 32) -> str: ...


_BLOCK: Final = 64
"""SHA-256's block size: an HMAC key is padded (or first hashed) to it."""
_INNER_PAD: Final = bytes(b ^ 0x36 for b in range(256))
_OUTER_PAD: Final = bytes(b ^ 0x5C for b in range(256))


class PureHmac:
    """``KeyedHash`` through hashlib: SHA-256 after the key's inner and outer pad (RFC 2104)
    prepared once, two state copies per message instead of the padding and four hashes."""

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(_BLOCK, b"\0")
        self.inner = hashlib.sha256(padded.translate(_INNER_PAD))
        self.outer = hashlib.sha256(padded.translate(_OUTER_PAD))

    def digest(self, message: bytes) -> bytes:
        state = self.inner.copy()
        state.update(message)
        digest = self.outer.copy()
        digest.update(state.digest())
        return digest.digest()

    def hex(self, text: str, size: int = 32) -> str:
        """The hex of the first ``size`` bytes of the HMAC of ``text`` in UTF-8."""
        if not 0 <= size <= 32:
            raise ValueError("size must be between 0 and 32")
        return self.digest(text.encode())[:size].hex()


@functools.lru_cache(maxsize=16)
def hmac_key(key: bytes) -> KeyedHash:
    """The prepared HMAC-SHA256 of ``key`` (the router uses a handful of keys)."""
    return PureHmac(key) if _native is None else _native.HmacSha256(key)


def sha256_hex(text: str) -> str:
    """``hashlib.sha256(text.encode()).hexdigest()`` (native when built)."""
    if _native is None:
        return hashlib.sha256(text.encode()).hexdigest()
    return _native.sha256_hex(text)  # type: ignore[no-any-return]
