"""Encryption at rest: AES-256-GCM envelopes for what rests in Redis with personal data. Pure
(no I/O but ``os.urandom`` for nonces).

What is sealed: the items of queued deliveries, dead letters, dry-run outbox records and
quarantine entries (``router.queue.items`` and ``router.compliance.quarantine`` say which
field). Each is sealed where it is written and opened where it is read, with a ``context``: the
role of the stream, the destination and the field name, as the associated data of the cipher.
An entry copied to another destination's stream, or from a queue into an outbox, does not open
there.

The context names the role (``queue``, ``dlq``...), not the Redis key, so a deployment whose
keys are renamed (``router migrate`` to cluster hash tags) still opens what it sealed before.

Envelope (bytes), versioned so that it can change and so that plaintext written before
encryption was turned on still reads (its JSON never starts with a zero byte)::

    0x00  0x01  len(key id)  key id (ASCII)  nonce (12 bytes)  ciphertext + GCM tag (16 bytes)

The header (first four parts) is authenticated too: the associated data is the header followed
by the context.

Key ring (``ROUTER_ENCRYPTION_KEYS``): ``id:base64,id:base64,...``, newest FIRST. The first key
seals; every key opens. A key is 32 random bytes (standard or URL-safe base64); an id is 1 to 32
of ``A-Z a-z 0-9 _ -``. No keys: nothing is sealed and plaintext is read as before.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC: Final = 0
VERSION: Final = 1
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
KEY_BYTES: Final = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class KeyRingError(ValueError):
    """``ROUTER_ENCRYPTION_KEYS`` is malformed; the message names the entry by position, never
    its key material."""


class Undecryptable(Exception):  # noqa: N818 - a bad entry is a value-like outcome, named as such
    """A sealed value that does not open: unknown key id, tampered bytes, wrong context (moved
    to another stream or destination), or a malformed envelope. ``reason`` is bounded."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Key id -> AES-256 key; ``current`` seals."""

    current: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, text: str) -> KeyRing | None:
        """The ring written as ``id:base64,...`` (newest first); ``None`` when ``text`` is blank."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for position, part in enumerate(p.strip() for p in text.split(",")):
            if not part:
                continue
            where = f"ROUTER_ENCRYPTION_KEYS entry {position + 1}"
            key_id, sep, encoded = part.partition(":")
            key_id = key_id.strip()
            if not sep or not _KEY_ID.fullmatch(key_id):
                raise KeyRingError(f"{where}: expected id:base64 with an id of 1-32 [A-Za-z0-9_-]")
            if key_id in keys:
                raise KeyRingError(f"{where}: key id {key_id!r} appears twice")
            keys[key_id] = _decode_key(encoded.strip(), where)
            order.append(key_id)
        if not order:
            return None
        return cls(current=order[0], keys=keys)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every id, the current one first."""
        return (self.current, *(k for k in self.keys if k != self.current))


def _decode_key(encoded: str, where: str) -> bytes:
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError(f"{where}: the key is not base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyRingError(f"{where}: a key must be {KEY_BYTES} bytes, this one has {len(raw)}")
    return raw


def new_key_entry(key_id: str) -> str:
    """A fresh ``id:base64`` entry for the ring (``router keys generate``)."""
    if not _KEY_ID.fullmatch(key_id):
        raise KeyRingError("a key id is 1-32 of [A-Za-z0-9_-]")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def context(role: str, destination: str = "", field: str = "") -> bytes:
    """The associated data naming where a sealed value belongs."""
    return f"{role}\x00{destination}\x00{field}".encode()


def is_sealed(value: bytes) -> bool:
    """Whether a stored value is an envelope (else: plaintext from before encryption)."""
    return bool(value) and value[0] == MAGIC


def key_id_of(value: bytes) -> str | None:
    """The key id of an envelope; ``None`` for plaintext or a malformed header."""
    if not is_sealed(value) or len(value) < 3:
        return None
    size = value[2]
    try:
        return bytes(value[3 : 3 + size]).decode("ascii") if len(value) >= 3 + size else None
    except UnicodeDecodeError:
        return None


class Sealer:
    """Seals with the ring's current key and opens with any of its keys. Without a ring it
    seals nothing (values stay plaintext) and opens only plaintext."""

    def __init__(self, ring: KeyRing | None = None) -> None:
        self.ring = ring
        self._ciphers = {k: AESGCM(v) for k, v in ring.keys.items()} if ring else {}
        self._headers = {
            k: bytes([MAGIC, VERSION, len(k)]) + k.encode("ascii") for k in self._ciphers
        }

    @property
    def enabled(self) -> bool:
        """Whether values are sealed."""
        return self.ring is not None

    def seal(self, plaintext: bytes, where: bytes) -> bytes:
        """The envelope of ``plaintext`` for context ``where`` (``plaintext`` itself when off)."""
        if self.ring is None:
            return plaintext
        key_id = self.ring.current
        header = self._headers[key_id]
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + self._ciphers[key_id].encrypt(nonce, plaintext, header + where)

    def open(self, stored: bytes, where: bytes) -> bytes:
        """The plaintext of an envelope (a plaintext value is returned as it is);
        ``Undecryptable`` when it does not open in this context."""
        if not is_sealed(stored):
            return stored
        if len(stored) < 3 or stored[1] != VERSION:
            raise Undecryptable("unknown_envelope")
        key_id = key_id_of(stored)
        if key_id is None:
            raise Undecryptable("malformed_envelope")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise Undecryptable("unknown_key")
        start = 3 + len(key_id)
        header, nonce = stored[:start], stored[start : start + NONCE_BYTES]
        body = stored[start + NONCE_BYTES :]
        if len(nonce) != NONCE_BYTES or len(body) < TAG_BYTES:
            raise Undecryptable("malformed_envelope")
        try:
            return cipher.decrypt(nonce, body, bytes(header) + where)
        except InvalidTag:
            raise Undecryptable("authentication_failed") from None

    def is_current(self, stored: bytes) -> bool:
        """Whether a stored value is as this sealer would write it now: sealed with the current
        key when on, plaintext when off (``router keys rotate`` rewrites the others)."""
        if self.ring is None:
            return not is_sealed(stored)
        return key_id_of(stored) == self.ring.current

    def reseal(self, stored: bytes, where: bytes) -> bytes:
        """``stored`` sealed with the current key (``Undecryptable`` when it does not open)."""
        return self.seal(self.open(stored, where), where)
