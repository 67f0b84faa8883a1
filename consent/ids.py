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
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from _hashlib import HASH

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
    unkeyed = hashlib.sha256(normalize_id(identifier).encode()).hexdigest()
    return keyed(unkeyed, secret) if secret else unkeyed


def keyed(unkeyed: str, secret: bytes) -> str:
    """The keyed subject key of an unkeyed one (the SHA-256 hex of an id).

    The HMAC is taken over the SHA-256 hex rather than over the id so that a deployment which
    stored unkeyed hashes can re-key them without knowing the ids (``router migrate-subjects``).
    """
    return hmac_sha256(secret, unkeyed.encode()).hex()


_BLOCK: Final = 64
"""SHA-256's block size: an HMAC key is padded (or first hashed) to it."""
_INNER_PAD: Final = bytes(b ^ 0x36 for b in range(256))
_OUTER_PAD: Final = bytes(b ^ 0x5C for b in range(256))


@functools.lru_cache(maxsize=16)
def _hmac_pads(key: bytes) -> tuple[HASH, HASH]:
    """SHA-256 after the key's inner and outer pad (RFC 2104), prepared once per key."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(padded.translate(_INNER_PAD)), hashlib.sha256(
        padded.translate(_OUTER_PAD)
    )


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """``hmac.digest(key, message, "sha256")``, from states prepared once per key: two copies
    of SHA-256 states instead of the key's padding and two hashes per call (the router keys
    every subject id of every event, so this runs several times per event)."""
    inner, outer = _hmac_pads(key)
    state = inner.copy()
    state.update(message)
    digest = outer.copy()
    digest.update(state.digest())
    return digest.digest()
