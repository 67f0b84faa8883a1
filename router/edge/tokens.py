"""The operator API's bearer tokens: roles, the token table, parsing ``ROUTER_ADMIN_TOKENS``.

Only hashes are stored; a presented token is hashed and compared with every stored hash in
constant time. ``tokens_of(settings)`` is the process's table (``ROUTER_ADMIN_TOKENS`` plus
``ROUTER_OPERATOR_TOKEN`` as an operator token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from router.settings import Settings


class Role(StrEnum):
    """What a token may do."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    AUDITOR = "auditor"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who called: the role and a short, non-secret id of the token (its hash's prefix)."""

    role: Role
    token_id: str


@dataclass(frozen=True, slots=True)
class TokenTable:
    """Token hashes and their roles."""

    entries: tuple[tuple[str, Role], ...] = ()

    def authenticate(self, token: str) -> Identity | None:
        """The identity of a presented token; every stored hash is compared (constant time)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        found: Identity | None = None
        for stored, role in self.entries:
            if hmac.compare_digest(stored, digest):
                found = Identity(role, stored[:12])
        return found


def tokens_of(settings: Settings) -> TokenTable:
    """The token table of the process: ``ROUTER_ADMIN_TOKENS``, plus ``ROUTER_OPERATOR_TOKEN``
    as an ``operator`` token. ``ValueError`` when ``ROUTER_ADMIN_TOKENS`` is invalid."""
    entries: list[tuple[str, Role]] = []
    if settings.operator_token is not None and settings.operator_token.get_secret_value():
        entries.append((token_hash(settings.operator_token.get_secret_value()), Role.OPERATOR))
    if settings.admin_tokens is not None and settings.admin_tokens.get_secret_value().strip():
        entries += parse_tokens(settings.admin_tokens.get_secret_value()).entries
    return TokenTable(tuple(entries))


def parse_tokens(value: str) -> TokenTable:
    """``ROUTER_ADMIN_TOKENS``: a JSON object of hash -> role, or a path to a file holding it.

    Raises ``ValueError`` naming every bad entry (never echoing a value that might be a token).
    """
    text = value.strip()
    if not text.startswith("{"):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"ROUTER_ADMIN_TOKENS: cannot read the file: {exc.strerror}") from exc
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError("ROUTER_ADMIN_TOKENS: not a JSON object") from exc
    if not isinstance(raw, dict):
        raise ValueError("ROUTER_ADMIN_TOKENS: not a JSON object")
    problems: list[str] = []
    entries: list[tuple[str, Role]] = []
    roles = {r.value for r in Role}
    for position, (digest, role) in enumerate(raw.items()):
        if not (isinstance(digest, str) and len(digest) == 64 and _is_hex(digest)):
            problems.append(f"entry {position}: the key must be a SHA-256 hex digest")
        elif role not in roles:
            problems.append(f"entry {position}: unknown role (roles: {', '.join(sorted(roles))})")
        else:
            entries.append((digest.lower(), Role(role)))
    if problems:
        raise ValueError("ROUTER_ADMIN_TOKENS: " + "; ".join(problems))
    return TokenTable(tuple(entries))


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def token_hash(token: str) -> str:
    """What to store in ``ROUTER_ADMIN_TOKENS`` for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


# --- state ---------------------------------------------------------------------------------------
