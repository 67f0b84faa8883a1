"""The quarantine: rejected events, kept for an operator to debug, without their values.

Stream ``rt:quarantine``, one entry per rejected event (``quarantine_write``):

- ``source``, ``route``, ``index`` (in its batch), ``code``, ``path``, ``message``: the rejection
  as the client was told (messages name types and limits, never values), the path with
  value-like keys replaced by ``*``;
- ``size``: the event's size in bytes; ``json``: ``1`` when it parsed as JSON;
- ``shape``: a JSON object mapping each field path of the event (allowlist syntax, keys that
  look like values replaced by ``*``, at most ``MAX_SHAPE_PATHS`` paths) to its JSON type(s):
  ``{"userId": "string", "properties.total": "number|string"}``; never a value;
- ``subjects``: the hashed ids (``consent.ids.subject_key`` of ``userId`` and ``anonymousId``,
  comma-separated) so erasure finds a person's entries (``erase_quarantined``) without the ids.

With encryption at rest on (``ROUTER_ENCRYPTION_KEYS``), every field but ``subjects`` is sealed
into one ``e`` (a JSON object of them): erasure still finds entries by their hashes.

Retention: at most ``QUARANTINE_MAXLEN`` entries (approximately), and none older than
``ROUTER_QUARANTINE_RETENTION_DAYS`` (default 7): every quarantine write trims the older ones
in the same pipeline, and every read trims before reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import redis.asyncio as aioredis

from consent.ids import normalize_id, subject_key
from router.core.outcomes import Rejection
from router.core.paths import WILDCARD, safe_segment
from router.core.sealing import Sealer, Undecryptable
from router.queue.enqueuer import Write
from router.queue.items import PLAINTEXT, QUARANTINE_ROLE, sealed_for
from router.queue.keys import QUARANTINE, QUARANTINE_MAXLEN

MAX_SHAPE_PATHS: Final = 128
MAX_SHAPE_DEPTH: Final = 16
ERASE_PAGE: Final = 1000


def _type_of(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def shape_of(value: Any) -> dict[str, str]:
    """Field paths of a parsed JSON value and their JSON types (several joined by ``|``)."""
    found: dict[str, set[str]] = {}

    def walk(node: Any, path: str, depth: int) -> None:
        if len(found) >= MAX_SHAPE_PATHS and path not in found:
            return
        if isinstance(node, dict) and node and depth < MAX_SHAPE_DEPTH:
            for key, child in node.items():
                segment = safe_segment(key)
                walk(child, f"{path}.{segment}" if path else segment, depth + 1)
        elif isinstance(node, list) and node and depth < MAX_SHAPE_DEPTH:
            for child in node:
                walk(child, f"{path}[]", depth + 1)
        else:
            found.setdefault(path or "(root)", set()).add(_type_of(node))

    walk(value, "", 0)
    return {path: "|".join(sorted(types)) for path, types in sorted(found.items())}


def safe_rejection_path(path: str, event: Any) -> str:
    """A rejection's path with each key checked against the event it names: a key that looks
    like a value (or that cannot be found, e.g. in a batch's shared context) ends the path with
    ``*``. Walking the event keeps keys holding dots whole (``a.b@example.com`` is one key)."""
    out: list[str] = []
    node, rest = event, path
    while rest:
        if rest[0] == ".":
            out.append(".")
            rest = rest[1:]
            continue
        if rest[0] == "[":
            end = rest.find("]")
            inner = rest[1:end] if end > 0 else ""
            if end < 0 or not (inner.isdigit() or inner == "..."):
                out.append("[*]")
                break
            out.append(f"[{inner}]")
            rest = rest[end + 1 :]
            index = int(inner) if inner.isdigit() else -1
            node = node[index] if isinstance(node, list) and 0 <= index < len(node) else None
            continue
        keys = [
            k
            for k in (node if isinstance(node, dict) else ())
            if isinstance(k, str) and k and rest.startswith(k) and rest[len(k) : len(k) + 1] in "[."
        ]
        if not keys:
            out.append(WILDCARD)
            break
        key = max(keys, key=len)
        out.append(safe_segment(key))
        node, rest = node[key], rest[len(key) :]
    return "".join(out)


def _id_text(value: Any) -> str | None:
    """An id as ingest reads it (a string, or a number written as Segment SDKs write it)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value) if value.is_integer() else value
    if isinstance(value, str | int | float):
        text = normalize_id(str(value))
        return text or None
    return None


def subjects_of(parsed: Any, secret: bytes = b"") -> list[str]:
    """The hashed subjects of a rejected event (its ``userId`` and ``anonymousId``)."""
    if not isinstance(parsed, dict):
        return []
    ids = (_id_text(parsed.get(name)) for name in ("userId", "anonymousId"))
    return list(dict.fromkeys(subject_key(i, secret) for i in ids if i))


def _parse(raw: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError):
        return False, None


def quarantine_write(
    source: str,
    route: str,
    index: int,
    rejection: Rejection,
    raw: bytes,
    *,
    now: datetime,
    retention_days: float,
    sealer: Sealer = PLAINTEXT,
    subject_secret: bytes = b"",
) -> Write:
    """The redacted quarantine entry of a rejected event (trimming what is past retention)."""
    parsed_ok, parsed = _parse(raw)
    fields: dict[str, bytes | str] = {
        "source": source,
        "route": route,
        "index": str(index),
        "code": rejection.code,
        "path": safe_rejection_path(rejection.path, parsed),
        "message": rejection.message,
        "size": str(len(raw)),
        "json": "1" if parsed_ok else "0",
        "shape": json.dumps(shape_of(parsed) if parsed_ok else {}, separators=(",", ":")),
    }
    subjects = ",".join(subjects_of(parsed, subject_secret))
    if sealer.enabled:
        sealed = sealer.seal(json.dumps(fields).encode(), sealed_for(QUARANTINE_ROLE, "", "e"))
        fields = {"e": sealed}
    fields["subjects"] = subjects
    return Write(QUARANTINE, fields, maxlen=QUARANTINE_MAXLEN, minid=min_id(now, retention_days))


def min_id(now: datetime, retention_days: float) -> str:
    """The oldest stream id the retention keeps."""
    return str(int((now - timedelta(days=retention_days)).timestamp() * 1000))


async def trim_quarantine(client: aioredis.Redis, now: datetime, retention_days: float) -> int:
    """Drop the entries older than the retention; how many."""
    return int(await client.xtrim(QUARANTINE, minid=min_id(now, retention_days), approximate=False))


def _decode(entry_id: bytes, fields: dict[bytes, bytes], sealer: Sealer) -> dict[str, Any]:
    record: dict[str, Any] = {"id": entry_id.decode()}
    if b"e" in fields:
        try:
            opened = json.loads(sealer.open(fields[b"e"], sealed_for(QUARANTINE_ROLE, "", "e")))
        except Undecryptable as exc:
            return {**record, "undecryptable": exc.reason}
        fields = {k.encode(): str(v).encode() for k, v in opened.items()}
    for name, value in fields.items():
        key, text = name.decode(), value.decode("utf-8", "replace")
        if key == "shape":
            try:
                record[key] = json.loads(text)
            except ValueError:
                record[key] = None
        elif key == "subjects":
            continue  # hashes serve erasure; an operator debugging input does not need them
        elif key in {"index", "size"} and text.isdigit():
            record[key] = int(text)
        elif key == "json":
            record[key] = text == "1"
        else:
            record[key] = text
    return record


async def read_quarantine(
    client: aioredis.Redis,
    limit: int,
    *,
    now: datetime,
    retention_days: float,
    sealer: Sealer = PLAINTEXT,
) -> list[dict[str, Any]]:
    """The newest ``limit`` entries as JSON-ready dicts (after trimming to the retention); a
    sealed entry that does not open reads as ``{"id", "undecryptable": reason}``."""
    await trim_quarantine(client, now, retention_days)
    entries = await client.xrevrange(QUARANTINE, count=limit)
    return [_decode(entry_id, fields, sealer) for entry_id, fields in entries]


async def erase_quarantined(client: aioredis.Redis, hashes: Iterable[str]) -> int:
    """Delete every entry of these hashed subjects; how many (a scan of the bounded stream)."""
    wanted = set(hashes)
    if not wanted:
        return 0
    removed = 0
    start = "-"
    while True:
        entries: Sequence[Any] = await client.xrange(QUARANTINE, min=start, count=ERASE_PAGE)
        matches = [
            entry_id
            for entry_id, fields in entries
            if wanted.intersection(fields.get(b"subjects", b"").decode().split(","))
        ]
        if matches:
            removed += int(await client.xdel(QUARANTINE, *matches))
        if len(entries) < ERASE_PAGE:
            return removed
        start = "(" + entries[-1][0].decode()
