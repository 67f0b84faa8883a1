"""``carries_signals``: which contexts the ingest may resolve once for several events."""

from __future__ import annotations

from typing import Any

import pytest

from consent.resolve import READERS, carries_signals


@pytest.mark.parametrize(
    "context",
    [
        {},
        {"ip": "203.0.113.1", "page": {"url": "https://x.example"}},
        {"consent": {}},
        {"consent": "not a map"},
        {"consent": {"unrelated": True}},
        {"location": {"country": "DE"}},
    ],
)
def test_contexts_without_reader_keys_carry_no_signal(context: dict[str, Any]) -> None:
    assert not carries_signals(context)


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.signal.value)
def test_every_key_of_every_reader_counts(reader: Any) -> None:
    """A key any reader looks at, in ``context.consent`` or ``context``, is a signal."""
    for key in reader.consent_keys:
        assert carries_signals({"consent": {key: None}})
    for key in reader.context_keys:
        assert carries_signals({key: None})
