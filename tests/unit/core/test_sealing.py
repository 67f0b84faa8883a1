"""Envelopes of encryption at rest (``router.core.sealing``): round trips, the key ring, and
every way a value fails to open."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.core.sealing import (
    KeyRing,
    KeyRingError,
    Sealer,
    Undecryptable,
    context,
    is_sealed,
    key_id_of,
    new_key_entry,
)

K1 = "k1:" + base64.b64encode(b"1" * 32).decode()
K2 = "k2:" + base64.b64encode(b"2" * 32).decode()
WHERE = context("queue", "hook", "d")


def _sealer(text: str) -> Sealer:
    return Sealer(KeyRing.parse(text))


@given(st.binary(max_size=2048))
def test_sealed_values_open_to_what_was_sealed(plaintext: bytes) -> None:
    """Any bytes round-trip, and the envelope hides them (fresh nonce each time)."""
    sealer = _sealer(K1)
    sealed = sealer.seal(plaintext, WHERE)
    assert is_sealed(sealed)
    assert sealer.open(sealed, WHERE) == plaintext
    assert sealer.seal(plaintext, WHERE) != sealed
    if len(plaintext) >= 8:
        assert plaintext not in sealed


@given(st.binary(max_size=300))
def test_any_bytes_open_or_fail_as_undecryptable(stored: bytes) -> None:
    """Whatever is stored, opening returns the plaintext or raises Undecryptable: never
    another exception (a decoder is only as good as its worst input)."""
    reasons = {"unknown_envelope", "malformed_envelope", "unknown_key", "authentication_failed"}
    if is_sealed(stored):
        with pytest.raises(Undecryptable) as caught:
            _sealer(K1).open(stored, WHERE)
        assert caught.value.reason in reasons
    else:
        assert _sealer(K1).open(stored, WHERE) == stored  # plaintext reads as it is


def test_the_first_key_seals_and_every_key_opens() -> None:
    """Newest first: k2 seals; what k1 sealed still opens with the ring k2,k1."""
    old = _sealer(K1).seal(b"{}", WHERE)
    ring = _sealer(f"{K2},{K1}")
    assert key_id_of(ring.seal(b"{}", WHERE)) == "k2"
    assert ring.open(old, WHERE) == b"{}"
    assert not ring.is_current(old)
    assert ring.is_current(ring.reseal(old, WHERE))


def test_plaintext_from_before_encryption_still_reads() -> None:
    """Migration: a JSON value written with encryption off opens as itself."""
    assert _sealer(K1).open(b'{"a":1}', WHERE) == b'{"a":1}'
    assert not _sealer(K1).is_current(b'{"a":1}')
    assert Sealer().seal(b'{"a":1}', WHERE) == b'{"a":1}'


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s, w: (s, context("queue", "other-hook", "d")), "authentication_failed"),
        (lambda s, w: (s, context("dlq", "hook", "d")), "authentication_failed"),
        (lambda s, w: (s[:-1] + bytes([s[-1] ^ 1]), w), "authentication_failed"),
        (lambda s, w: (s[:3] + b"k9" + s[5:], w), "unknown_key"),
        (lambda s, w: (s[:1] + b"\x07" + s[2:], w), "unknown_envelope"),
        (lambda s, w: (s[:10], w), "malformed_envelope"),
    ],
    ids=["other-destination", "other-role", "tampered", "unknown-key", "version", "truncated"],
)
def test_moved_tampered_or_unknown_entries_do_not_open(mutate: object, reason: str) -> None:
    """The context is associated data: an entry moved to another destination or stream, a
    flipped bit, an unknown key id or version all fail with a bounded reason."""
    sealed = _sealer(K1).seal(b'{"userId":"u"}', WHERE)
    stored, where = mutate(sealed, WHERE)  # type: ignore[operator]
    with pytest.raises(Undecryptable) as caught:
        _sealer(K1).open(stored, where)
    assert caught.value.reason == reason


def test_without_keys_sealed_values_are_undecryptable() -> None:
    """Encryption turned off again: sealed entries are reported, not passed on as data."""
    with pytest.raises(Undecryptable):
        Sealer().open(_sealer(K1).seal(b"{}", WHERE), WHERE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k1", "expected id:base64"),
        ("bad id:AAAA", "expected id:base64"),
        ("k1:not base64!", "not base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "must be 32 bytes"),
        (f"{K1},{K1}", "appears twice"),
    ],
)
def test_a_malformed_ring_is_refused_without_echoing_keys(text: str, message: str) -> None:
    """Each problem names the entry by position and never prints key material."""
    with pytest.raises(KeyRingError) as caught:
        KeyRing.parse(text)
    assert message in str(caught.value)
    assert "entry" in str(caught.value)
    assert base64.b64encode(b"1" * 32).decode() not in str(caught.value)


def test_blank_ring_means_off_and_generated_entries_parse() -> None:
    """No keys: off. ``router keys generate`` entries (standard base64) parse back."""
    assert KeyRing.parse(" , ") is None
    ring = KeyRing.parse(new_key_entry("k3"))
    assert ring is not None
    assert ring.current == "k3"
    assert len(ring.keys["k3"]) == 32
    url_safe = "k4:" + base64.urlsafe_b64encode(b"\xff" * 32).decode().rstrip("=")
    assert KeyRing.parse(url_safe) is not None


@given(st.text(max_size=200))
def test_any_ring_text_parses_or_is_refused_cleanly(text: str) -> None:
    """The ring parser never raises anything but KeyRingError, and a ring it accepts has its
    first key current and 32-byte keys only."""
    message = ""
    try:
        ring = KeyRing.parse(text)
    except KeyRingError as error:
        ring, message = None, str(error)
    assert not message or message.startswith("ROUTER_ENCRYPTION_KEYS entry ")
    if ring is not None:
        assert ring.key_ids[0] == ring.current
        assert all(len(key) == 32 for key in ring.keys.values())


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=4, unique=True))
def test_generated_style_rings_round_trip(keys: list[bytes]) -> None:
    """A ring written as the README says parses back to the same keys, newest first."""
    text = ",".join(f"k{n}:{base64.b64encode(key).decode()}" for n, key in enumerate(keys))
    ring = KeyRing.parse(text)
    assert ring is not None
    assert ring.current == "k0"
    assert [ring.keys[f"k{n}"] for n in range(len(keys))] == keys
