"""One normalization for every subject id: what consent, erasure and ingest hash is the same."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from consent.ids import hmac_sha256, keyed, normalize_id, subject_key
from router.compliance.erasure import Identifiers
from router.core.consent_input import ConsentRequest, parse_consent_body
from router.core.outcomes import Rejection
from router.core.sanitize import Event, sanitize
from router.core.schema import WIRE_EVENT_DECODER, EventType
from router.edge.admin import parse_erase_body
from router.queue.keys import subject_hash
from router.routing import parse_routing

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROUTING = parse_routing("sources: [{id: web, write_key: k}]\ndestinations: []\n")

ids = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])),
    # letters with combining marks, controls and spaces: the ids that used to diverge
    st.text(alphabet="ae \t\n\x00\x1f\x7f\x85\xa0\u0301\u0308\u0327\u2000\u3000\ufeffé"),
)


def ingested(user_id: str, *, ensure_ascii: bool) -> Event | Rejection:
    """The event ingest makes of ``{"userId": user_id}`` as an SDK would encode it."""
    raw = json.dumps(
        {"type": "track", "event": "x", "userId": user_id}, ensure_ascii=ensure_ascii
    ).encode()
    return sanitize(
        WIRE_EVENT_DECODER.decode(raw),
        route_type=None,
        received_at=NOW,
        new_id=lambda: "m-1",
        raw=raw,
    )


@settings(max_examples=400, deadline=None)
@given(ids, st.booleans())
@example("jose\u0301", True)
@example("user\u0000-1", True)
@example(" e\x00\u0301 ", False)
def test_consent_and_erasure_hash_what_ingest_looks_up(user_id: str, ensure_ascii: bool) -> None:
    """For any id, the consent API and erasure store the hash ingest looks the id up by."""
    event = ingested(user_id, ensure_ascii=ensure_ascii)
    if isinstance(event, Rejection):  # no identity left, or too long: never looked up
        assert event.code in {"missing_identity", "invalid_id"}
        return
    assert event.user_id is not None
    looked_up = subject_hash(event.user_id)

    body = json.dumps({"userId": user_id, "categories": {"analytics": False}})
    consent = parse_consent_body(body.encode(), ROUTING.policy, NOW)
    assert isinstance(consent, ConsentRequest)
    assert consent.subjects == [looked_up]

    erased = parse_erase_body(json.dumps({"userId": user_id}).encode())
    assert erased.hashes() == [looked_up]
    assert Identifiers.of([user_id]).hashes() == [looked_up]


@settings(max_examples=400, deadline=None)
@given(ids)
def test_normalizing_is_idempotent(value: str) -> None:
    """A normalized id normalizes to itself, so hashing a normalized id changes nothing."""
    once = normalize_id(value)
    assert normalize_id(once) == once
    assert subject_key(value) == subject_key(once)


def test_decomposed_and_composed_ids_are_one_subject() -> None:
    """NFD and NFC spellings, control characters and spaces hash alike; other ids do not."""
    assert subject_key("jose\u0301") == subject_key("jos\u00e9") == subject_key(" jos\u00e9\x00")
    assert subject_key("e\x00\u0301") == subject_key("\u00e9")
    assert subject_key("jose") != subject_key("jos\u00e9")


@given(st.binary(max_size=100), st.binary(max_size=200))
@example(b"k" * 64, b"id")
@example(b"k" * 65, b"id")
@example(b"", b"")
def test_hmac_sha256_from_prepared_states_is_hmac(key: bytes, message: bytes) -> None:
    """The prepared-pad HMAC behind subject keys and audit tokens is RFC 2104 HMAC-SHA256,
    for keys shorter and longer than a block (then hashed first)."""
    assert hmac_sha256(key, message) == hmac.digest(key, message, "sha256")
    assert keyed(message.hex(), key) == hmac.new(key, message.hex().encode(), "sha256").hexdigest()


@given(st.one_of(st.none(), st.just(""), ids), st.one_of(st.none(), st.just(""), ids))
def test_subject_ids_are_the_non_empty_ids_user_first(
    user_id: str | None, anonymous_id: str | None
) -> None:
    event = Event(
        type=EventType.TRACK,
        message_id="m-1",
        timestamp=NOW,
        received_at=NOW,
        data={},
        user_id=user_id,
        anonymous_id=anonymous_id,
    )
    assert event.subject_ids == tuple(i for i in (user_id, anonymous_id) if i)
