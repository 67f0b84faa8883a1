"""The consent API's body parser is pure: every body is a request or a Rejection with a
bounded code and a field path, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.core.consent_input import ConsentRequest, parse_consent_body
from router.core.outcomes import RejectCode, Rejection
from router.routing import parse_routing

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = parse_routing("sources: [{id: web, write_key: k}]\ndestinations: []\n").policy
GOOD = {"userId": "u1", "categories": {"analytics": True}}


def _parse(body: dict[str, Any]) -> ConsentRequest | Rejection:
    return parse_consent_body(json.dumps(body).encode(), POLICY, NOW)


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"categories": {"analytics": True}}, RejectCode.MISSING_IDENTITY, "userId"),
        ({**GOOD, "categories": {"nope": True}}, RejectCode.UNKNOWN_CATEGORIES, "categories"),
        ({**GOOD, "source": "Bad Source"}, RejectCode.INVALID_SOURCE, "source"),
        ({**GOOD, "timestamp": "yesterday"}, RejectCode.INVALID_TIMESTAMP, "timestamp"),
        ({**GOOD, "timestamp": "2001-01-01T00:00:00Z"}, RejectCode.CONSENT_EXPIRED, "timestamp"),
        ({"userId": "u1"}, RejectCode.INVALID_FIELD, "categories"),
        (
            {**GOOD, "categories": {"analytics": "yes"}},
            RejectCode.INVALID_FIELD,
            "categories[...]",
        ),
    ],
)
def test_each_refusal_has_a_code_and_a_path(
    body: dict[str, Any], code: RejectCode, path: str
) -> None:
    rejection = _parse(body)
    assert isinstance(rejection, Rejection)
    assert (rejection.code, rejection.path) == (code, path)
    assert rejection.message


def test_a_valid_body_is_hashed_subjects_and_a_record() -> None:
    request = _parse({**GOOD, "anonymousId": "a1"})
    assert isinstance(request, ConsentRequest)
    assert request.ids == ["u1", "a1"]
    assert len(request.subjects) == 2
    assert all(len(s) == 64 for s in request.subjects)
    assert request.record.updated_at == NOW


@given(st.binary(max_size=300))
def test_any_bytes_are_a_request_or_a_rejection(body: bytes) -> None:
    result = parse_consent_body(body, POLICY, NOW)
    assert isinstance(result, ConsentRequest | Rejection)
    if isinstance(result, Rejection):
        assert result.code in RejectCode


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["userId", "anonymousId", "categories", "timestamp", "source", "x"]),
        json_values,
    )
)
def test_any_json_object_is_a_request_or_a_rejection(body: dict[str, Any]) -> None:
    result = _parse(body)
    assert isinstance(result, ConsentRequest | Rejection)
