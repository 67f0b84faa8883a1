"""Audit subject tokens: one token per person whatever the spelling of the id, never the id."""

from __future__ import annotations

from hypothesis import given
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
