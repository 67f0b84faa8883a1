"""The encoder contract every connector of the registry keeps, on a varied batch: each event is
requested or dropped exactly once, drop reasons are bounded codes, encoding is deterministic,
and nothing but the delivery reaches a request body."""

from __future__ import annotations

import hashlib
import inspect
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from destinations import base
from destinations.base import Connector, Delivery
from destinations.registry import CONNECTORS
from tests.conftest import HOOK_SECRET

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SETTINGS: dict[str, dict[str, Any]] = {
    "webhook": {"url": "https://hooks.example/in", "secret": HOOK_SECRET},
    "ga4": {"measurement_id": "G-TEST1234", "api_secret": "ga-secret"},
    "meta_capi": {"pixel_id": "123456789", "access_token": "meta-token"},
    "amplitude": {"api_key": "amp-key", "max_body_bytes": 8192},
    "mixpanel": {"project_token": "mp-token", "max_body_bytes": 8192},
    "tiktok": {"access_token": "tt-token", "pixel_code": "PIXEL1", "max_body_bytes": 8192},
}
BOUNDED_REASON = re.compile(r"[a-z][a-z0-9_]{0,39}")


def connector(type_name: str) -> Connector[Any]:
    cls = CONNECTORS[type_name]
    return cls(f"{type_name}-1", cls.settings_model.model_validate(SETTINGS[type_name]))


def payload(n: int) -> dict[str, Any]:
    """A rich event whose every string value holds a canary unique to event ``n``."""
    return {
        "userId": f"user-canary-{n:04d}",
        "anonymousId": f"anon-canary-{n:04d}",
        "traits": {"email": f"canary{n}@example.com"},
        "context": {
            "ip": "203.0.113.9",
            "userAgent": f"Agent/canary-{n}",
            "page": {"url": f"https://shop.example/canary-{n}", "title": f"title-canary-{n}"},
            "traits": {"phone": "+1 415 555 0100", "email": f"canary{n}@ctx.example.org"},
        },
        "properties": {
            "order_id": f"order-canary-{n}",
            "revenue": 12.5,
            "currency": "EUR",
            "note": f"note-canary-{n}",
        },
    }


def batch() -> list[Delivery]:
    """Every type, events too old and in the future, missing ids, one too large, two people."""
    deliveries = []
    for n in range(40):
        kind = ("track", "page", "screen", "identify", "group")[n % 5]
        body = payload(n % 7)
        if n % 11 == 3:
            del body["userId"], body["anonymousId"]
        if n == 17:
            body["properties"]["note"] = "x" * 20_000
        age = timedelta(days=10) if n % 13 == 5 else timedelta(minutes=n)
        when = NOW + timedelta(hours=3) if n == 29 else NOW - age
        deliveries.append(
            Delivery(
                message_id=f"m{n}",
                type=kind,
                timestamp=when,
                payload=body,
                event="Order Completed" if n % 2 else ("" if n == 8 else "Clicked"),
            )
        )
    return deliveries


def test_every_registered_type_has_contract_settings() -> None:
    """A new connector joins this contract by giving its settings here."""
    assert set(SETTINGS) == set(CONNECTORS)


@pytest.mark.parametrize("type_name", sorted(CONNECTORS))
def test_each_event_is_requested_or_dropped_exactly_once(type_name: str) -> None:
    """The indices of the requests and of the drops partition the batch."""
    deliveries = batch()
    encoded = connector(type_name).encode(deliveries, NOW)
    sent = [i for request in encoded.requests for i in request.indices]
    dropped = [drop.index for drop in encoded.dropped]
    assert sorted(sent + dropped) == list(range(len(deliveries)))
    assert {o.index for o in encoded.omitted} <= set(sent)
    assert set(encoded.matched) <= set(sent)


@pytest.mark.parametrize("type_name", sorted(CONNECTORS))
def test_drop_reasons_are_bounded_codes_written_in_the_code(type_name: str) -> None:
    """A reason is a short snake_case literal of the connector (or the shared packer), never
    built from event data, so it is safe as a metric label."""
    sources = inspect.getsource(CONNECTORS[type_name]) + inspect.getsource(base)
    sources += inspect.getsource(inspect.getmodule(CONNECTORS[type_name]))  # type: ignore[arg-type]
    for drop in connector(type_name).encode(batch(), NOW).dropped:
        assert BOUNDED_REASON.fullmatch(drop.reason), drop.reason
        assert f'"{drop.reason}"' in sources, drop.reason


@pytest.mark.parametrize("type_name", sorted(CONNECTORS))
def test_encoding_is_deterministic(type_name: str) -> None:
    """The same batch at the same ``now`` gives the same requests, byte for byte."""
    first = connector(type_name).encode(batch(), NOW)
    again = connector(type_name).encode(batch(), NOW)
    assert msgspec.json.encode(first) == msgspec.json.encode(again)


def _leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    return [(path, node)] if isinstance(node, str) and "canary" in node else []


def _without(node: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    copy = dict(node)
    if len(path) == 1:
        del copy[path[0]]
    else:
        copy[path[0]] = _without(copy[path[0]], path[1:])
    return copy


def _traces(value: str) -> list[bytes]:
    """The value as it could appear on the wire: as is, or hashed (normalized)."""
    plain = value.strip().lower()
    return [value.encode(), hashlib.sha256(plain.encode()).hexdigest().encode()]


@pytest.mark.parametrize("type_name", sorted(CONNECTORS))
def test_only_payload_fields_reach_the_body(type_name: str) -> None:
    """A value taken out of the payload is nowhere in the requests: bodies are made of the
    payload (and settings), not of anything else the connector could hold."""
    full = payload(1)
    for path, value in _leaves(full):
        delivery = Delivery(
            message_id="m1",
            type="track",
            timestamp=NOW,
            payload=_without(full, path),
            event="Order Completed",
        )
        encoded = connector(type_name).encode([delivery], NOW)
        wire = b"".join(r.body + r.url.encode() for r in encoded.requests)
        for trace in _traces(value):
            assert trace not in wire, (path, value)
