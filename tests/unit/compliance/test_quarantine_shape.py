"""The quarantine's redaction: field paths and JSON types, never values. Pure."""

from __future__ import annotations

import json

from router.compliance.quarantine import safe_rejection_path, shape_of, subjects_of
from router.queue.keys import subject_hash


def test_shape_lists_paths_and_types_without_values() -> None:
    """Each leaf path gets its JSON type(s); value-like keys become ``*``; no value remains."""
    event = {
        "userId": "jane@example.com",
        "properties": {"total": 3, "items": [{"id": "a"}, {"id": 4}], "+33612345678": "x"},
        "context": {},
        "flags": [],
        "n": None,
        "ok": True,
    }
    shape = shape_of(event)
    assert shape == {
        "context": "object",
        "flags": "array",
        "n": "null",
        "ok": "boolean",
        "properties.*": "string",
        "properties.items[].id": "number|string",
        "properties.total": "number",
        "userId": "string",
    }
    assert "jane" not in json.dumps(shape)


def test_shape_is_bounded_in_depth_and_paths() -> None:
    """Deep nesting stops at a bounded depth, and at most 128 paths are kept."""
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    assert max(p.count(".") for p in shape_of(deep)) < 16
    wide = {f"field_{i}": i for i in range(500)}
    assert len(shape_of(wide)) == 128


def test_rejection_paths_keep_indexes_and_hide_value_like_keys() -> None:
    """Array indexes stay; a key that looks like a value, even one holding dots, is ``*``."""
    event = {
        "properties": {"products": [{"price": "x"}] * 4, "john.smith@example.com": 1.5},
        "traits": {"a": 1},
    }
    assert safe_rejection_path("properties.products[3].price", event) == (
        "properties.products[3].price"
    )
    assert safe_rejection_path("properties.john.smith@example.com", event) == "properties.*"
    assert safe_rejection_path("traits[...]", event) == "traits[...]"
    assert safe_rejection_path("properties[jane]", event) == "properties[*]"
    assert safe_rejection_path("context.jane.doe", event) == "*"  # not in the event
    assert safe_rejection_path("", event) == ""


def test_subjects_are_hashed_as_ingest_hashes_them() -> None:
    """userId and anonymousId (strings or numbers) become the hashes ingest looks up."""
    assert subjects_of({"userId": " jose\u0301 ", "anonymousId": 42.0}) == [
        subject_hash("jos\u00e9"),
        subject_hash("42"),
    ]
    assert subjects_of({"userId": True, "anonymousId": ""}) == []
    assert subjects_of(["not", "an", "object"]) == []
