"""Audit subject tokens: one token per person whatever the spelling of the id, never the id."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import example, given
from hypothesis import strategies as st

from consent.ids import normalize_id
from router.core.audit_records import subject_token

KEY = b"audit-key"


def test_spellings_of_one_id_share_a_token() -> None:
    """The store and erasure hash the normalized id; the audit trail must name the same person."""
    assert subject_token("e\x00\u0301", KEY) == subject_token("\u00e9", KEY)
    assert subject_token(" user-1\n", KEY) == subject_token("user-1", KEY)
    assert subject_token("user-1", KEY) != subject_token("user-2", KEY)


@given(st.text(max_size=40))
def test_a_token_is_the_token_of_the_normalized_id(identifier: str) -> None:
    token = subject_token(identifier, KEY)
    assert token == subject_token(normalize_id(identifier), KEY)
    assert len(token) == 32
    assert token != subject_token(identifier, b"another-key")


@given(st.text(max_size=40), st.binary(max_size=100))
@example("user-1", b"k" * 64)
@example("user-1", b"k" * 65)
@example("user-1", b"")
def test_a_token_is_the_hmac_sha256_of_the_normalized_id(identifier: str, key: bytes) -> None:
    """Tokens from the prepared pads equal ``hmac``'s, for keys shorter and longer than a block."""
    expected = hmac.new(key, normalize_id(identifier).encode(), hashlib.sha256).hexdigest()
    assert subject_token(identifier, key) == expected[:32]
