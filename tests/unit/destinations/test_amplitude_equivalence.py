"""The Amplitude encoder reads each object of the payload once: the same events, byte for byte,
as the path-by-path reading it replaced (kept here as the reference), on varied payloads."""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from destinations.amplitude import (
    _CONTEXT_FIELDS,
    MAX_STRING_CHARS,
    AmplitudeConnector,
    AmplitudeSettings,
)
from destinations.base import Delivery, DropReason, EventPayload
from destinations.iso import CURRENCY_CODES
from destinations.payload import id_text, is_number, mapping, millis, path_value

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)


def reference_event(
    connector: AmplitudeConnector, delivery: Delivery
) -> dict[str, Any] | DropReason:
    """``encode_event`` before it read each object once (path_value for every field)."""
    payload = delivery.payload
    event: dict[str, Any] = {}
    ids = connector._ids(payload)
    if isinstance(ids, DropReason):
        return ids
    event.update(ids)
    if delivery.type == "track":
        if not delivery.event:
            return DropReason("missing_event", "track without an event name")
        if delivery.event in {"$identify", "$groupidentify"} or delivery.event.startswith(
            "[Amplitude]"
        ):
            return DropReason("reserved_event_name", "event name reserved by Amplitude")
        event["event_type"] = delivery.event[:MAX_STRING_CHARS]
    elif delivery.type in {"page", "screen"}:
        event["event_type"] = (
            connector.settings.page_event_type
            if delivery.type == "page"
            else connector.settings.screen_event_type
        )
    elif delivery.type == "identify":
        traits = mapping(payload.get("traits"))
        if not traits:
            return DropReason("no_traits", "identify without traits sets nothing")
        event["event_type"] = "$identify"
        event["user_properties"] = {"$set": traits}
    else:
        return DropReason("unsupported_type", f"{delivery.type} is not sent to Amplitude")
    event["time"] = millis(delivery.timestamp)
    event["insert_id"] = delivery.message_id[:MAX_STRING_CHARS]
    if delivery.type != "identify":
        properties = dict(mapping(payload.get("properties")))
        name = id_text(payload.get("name"))
        if name and delivery.type in {"page", "screen"}:
            properties.setdefault("name", name)
        if properties:
            event["event_properties"] = properties
        user_properties = mapping(path_value(payload, "context.traits"))
        if user_properties:
            event["user_properties"] = dict(user_properties)
        if delivery.type == "track":
            revenue = path_value(payload, "properties.revenue")
            raw = path_value(payload, "properties.currency")
            currency = raw.strip().upper() if isinstance(raw, str) else None
            valid = currency in CURRENCY_CODES
            if is_number(revenue) and (raw is None or valid):
                event["revenue"] = revenue
                if valid:
                    event["currency"] = currency
    for field, path in _CONTEXT_FIELDS:
        value = id_text(path_value(payload, path))
        if value:
            event[field] = value[:MAX_STRING_CHARS]
    for field, path in (
        ("location_lat", "context.location.latitude"),
        ("location_lng", "context.location.longitude"),
    ):
        value = path_value(payload, path)
        if is_number(value):
            event[field] = value
    return event


def _leaf(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            "",
            " ",
            "value",
            "x" * 1100,
            "eur",
            0,
            7,
            1.5,
            3.0,
            True,
            [],
            ["a"],
            {},
            {"k": "v"},
            MappingProxyType({"k": 1}),
        ]
    )


def _maybe(rng: random.Random, value: Any) -> Any:
    return value if rng.random() < 0.7 else _leaf(rng)


def _payload(rng: random.Random) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for _, path in _CONTEXT_FIELDS:
        parts = path.split(".")[1:]
        node = context
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[parts[-1]] = _leaf(rng) if rng.random() < 0.3 else f"{parts[-1]}-value"
    location = context.setdefault("location", {})
    if isinstance(location, dict):
        location["latitude"] = _maybe(rng, 48.85)
        location["longitude"] = _maybe(rng, 2)
    context["traits"] = _maybe(rng, {"plan": "pro", "seats": 3})
    for key in list(context):
        if rng.random() < 0.1:
            context[key] = _leaf(rng)
    payload: dict[str, Any] = {
        "userId": _maybe(rng, "user-12345"),
        "anonymousId": _maybe(rng, "anon-12345"),
        "name": _maybe(rng, "Checkout"),
        "traits": _maybe(rng, {"email": "x"}),
        "properties": _maybe(
            rng, {"revenue": _maybe(rng, 12.5), "currency": _maybe(rng, "eur"), "n": 1}
        ),
        "context": _maybe(rng, context),
    }
    return {k: v for k, v in payload.items() if rng.random() < 0.9}


def test_encode_event_matches_the_path_by_path_reference() -> None:
    """2,000 varied payloads of every type: identical events (or drops) and key order."""
    rng = random.Random(20261122)
    connectors = [
        AmplitudeConnector("amp", AmplitudeSettings(api_key="key-123")),
        AmplitudeConnector("amp", AmplitudeSettings(api_key="key-123", min_id_length=1)),
    ]
    types = ["track", "page", "screen", "identify", "group"]
    events = [None, "", "Order Completed", "$identify", "[Amplitude] x"]
    for n in range(2000):
        delivery = Delivery(
            message_id=f"m{n}",
            type=rng.choice(types),
            timestamp=NOW,
            payload=_payload(rng),
            event=rng.choice(events),
        )
        connector = connectors[n % 2]
        encoded = connector.encode_event(delivery, NOW, [])
        got = encoded.body if isinstance(encoded, EventPayload) else encoded
        expected = reference_event(connector, delivery)
        assert got == expected
        if isinstance(got, dict):
            assert isinstance(expected, Mapping)
            assert list(got) == list(expected)
