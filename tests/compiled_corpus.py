"""A corpus through the pure core, printed: what ``tests/integration/test_compiled_build.py``
compares between the pure build and the mypyc build (``scripts/build-compiled.sh``).

    python -m tests.compiled_corpus [--events N]     # run from the tree to measure

Generated events (a fixed seed) of every shape the core handles: integers where floats are
usual (``12345``, ``-7``, ``2**53 + 1``, ``10**20``), floats, card numbers, emails, phones
and IPs in free text, nested lists, consent signals of every kind (valid, malformed, absent),
timestamps with offsets and without, rejected events. Each goes through decoding, sanitizing,
planning (single and in batches: the consent memo, consent events changing later events),
the audit's decision records, ``explain``, field paths and the defect scanner. Every output
is one JSON line; the first line says which modules run compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from consent import cache as cache_ops
from consent.cache import record_key
from consent.ids import hmac_sha256, keyed, normalize_id, subject_key
from consent.memo import BoundedMemo, Unkeyable, frozen
from consent.records import ConsentRecord, UnreadableRecordError, merge_records, narrow
from consent.store import history_key
from router.compliance.subject_tokens import IndexGroups, group_for_index, index_arguments
from router.core import jsonscan
from router.core.explain import explain
from router.core.outcomes import Rejection
from router.core.paths import field_paths, removed, safe_path
from router.core.plan import RequestPlan, plan_request
from router.core.sanitize import Event, sanitize
from router.core.schema import WIRE_EVENT_DECODER, WireEvent
from router.core.signals import signals_from_headers
from router.observability.metrics import Stats, render_prometheus
from router.queue import keys
from router.queue.enqueuer import Deliveries, Write
from router.queue.items import ITEM_ENCODER, decode_queued, decoded, entry_for, entry_items
from tests.conftest import routing_from
from tests.unit.consent.tcf_encoder import encode_tc_string
from tests.unit.consent.test_gpp import USNAT_ALL_SET, USNAT_ALL_SET_NO_GPC
from tests.unit.consent.test_tcf import BASE

NOW = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
COMPILED = (
    "router.core.plan",
    "router.core.sanitize",
    "router.core.paths",
    "router.core.jsonscan",
    "router.core.audit_records",
    "router.compliance.subject_tokens",
    "consent.resolve",
    "consent.tcf",
    "consent.gpp",
    "consent.ids",
    "consent.memo",
    "consent.cache",
    "consent.records",
    "router.queue.keys",
    "router.queue.items",
    "router.queue.enqueuer",
    "router.observability.metrics",
    "destinations.dlp",
    "destinations.fields",
)
NUMBERS: list[Any] = [12345, 0, -7, 1, 2**53 + 1, 10**20, 1.5, 12345.0, -0.25, 1e-7, 3e21, 30]
TEXTS = [
    "plain",
    "4111 1111 1111 1111",
    "jane.doe@example.com",
    "+49 151 12345678",
    "(650) 555-1212",
    "DE89 3704 0044 0532 0130 00",
    "078-05-1120",
    "203.0.113.42",
    "2001:db8::1",
    "  padded\u0301  ",
    "a\u0000b",
    "x" * 300,
    "",
]
TC = [
    encode_tc_string(dataclasses.replace(BASE, purpose_consents=frozenset(range(1, 11)))),
    encode_tc_string(dataclasses.replace(BASE, purpose_consents=frozenset())),
    "CPSG_8A!!not-base64",
]
GPP = [USNAT_ALL_SET, USNAT_ALL_SET_NO_GPC, "DBABMA~garbage", ""]


def _scalar(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(NUMBERS)
    if roll < 0.9:
        return rng.choice(TEXTS)
    return rng.choice([True, False, None])


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 3 and roll < 0.3:
        keys = ["product_id", "price", "quantity", "sku", "email", "x y", "12345", "nested"]
        return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return _scalar(rng)


def _consent(rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(9)
    prefs = {c: rng.random() < 0.6 for c in ("C0001", "C0002", "C0003", "C0004")}
    if kind == 0:
        return {"categoryPreferences": prefs}
    if kind == 1:
        return {"categoryPreferences": {"C0002": "yes"}}  # malformed: fails closed
    if kind == 2:
        return {"tcString": rng.choice(TC)}
    if kind == 3:
        return {"gppString": rng.choice(GPP), "gppSid": [7]}
    if kind == 4:
        return {"usPrivacy": rng.choice(["1YYN", "1YNN", "1---", "bad"])}
    if kind == 5:
        mode = rng.choice(["granted", "denied", 3])
        return {"googleConsentMode": {"analytics_storage": mode, "ad_storage": "denied"}}
    if kind == 6:
        return {"gpc": rng.choice([True, False])}
    return {}


def _event(rng: random.Random, n: int) -> dict[str, Any]:
    user = f"user-{rng.randrange(30)}"
    stamp = NOW - timedelta(seconds=rng.randrange(-60, 10**6))
    event: dict[str, Any] = {
        "type": rng.choice(["track", "track", "page", "identify", "screen"]),
        "messageId": f"m-{n}",
        "anonymousId": f"anon-{user}",
        "timestamp": rng.choice([stamp.isoformat(), stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")])
        if rng.random() < 0.95
        else rng.choice(["2026-13-40", 12345]),
        "properties": {
            "order_id": f"o-{n}",
            "revenue": rng.choice(NUMBERS),
            "total": rng.choice(NUMBERS),
            "currency": rng.choice(["EUR", "usd", "euro", 12345]),
            "products": [
                {"product_id": rng.choice(TEXTS + NUMBERS), "price": rng.choice(NUMBERS)}
                for _ in range(rng.randrange(3))
            ],
            "free": _value(rng),
        },
        "context": {
            "ip": rng.choice(TEXTS),
            "page": {"url": f"https://shop.example/p?{n}", "title": rng.choice(TEXTS)},
            "consent": _consent(rng),
            "location": {"country": rng.choice(["DE", "US", "FR", None])},
        },
        "traits": {"email": rng.choice(TEXTS), "phone": rng.choice(TEXTS)},
    }
    if event["type"] == "track":
        event["event"] = rng.choice(
            ["Order Completed", "Product Viewed", "Segment Consent Preference Updated"]
        )
    if rng.random() < 0.7:
        event["userId"] = user
    if rng.random() < 0.05:
        del event["anonymousId"]  # sometimes no identity at all
    if rng.random() < 0.2:
        event["integrations"] = {"All": rng.choice([True, False]), "webhook": False}
    return event


def _encoded(plan: RequestPlan) -> dict[str, Any]:
    return {
        "deliveries": {
            d: [
                {
                    "delivery": msgspec.to_builtins(r.delivery),
                    "subjects": r.subjects,
                    "requires": r.requires,
                    "pii": r.pii,
                }
                for r in routed
            ]
            for d, routed in plan.deliveries.items()
        },
        "skipped": sorted((d, r.value, n) for (d, r), n in plan.skipped.items()),
        "detections": sorted((tuple(k), n) for k, n in plan.detections.items()),
        "pii": {d: sorted(k) for d, k in sorted(plan.pii.items())},
        "updates": [(s, r.encode()) for s, r in plan.updates],
        "audit": plan.decision_records(),
        "paths": sorted(plan.paths),
    }


IDS = [
    "user-1",
    "  user-1 ",
    "e\x00\u0301",
    "e\u0301",
    "\u00e9",
    "Jane.Doe@Example.com",
    "a\tb\nc",
    "\x85\u200bzero-width",
    "\U0001f600",
    "",
    " ",
    "x" * 300,
    "12345",
]
HMAC_KEYS = [b"k", b"corpus-subject-key", b"x" * 64, b"y" * 65, bytearray(b"z")]


def _ids(rng: random.Random) -> list[Any]:
    """Subject ids (``consent.ids``, ``router.queue.keys``): normalized, hashed, keyed."""
    out: list[Any] = []
    ids = [*IDS, *("".join(rng.choice(IDS) for _ in range(3)) for _ in range(40))]
    for value in ids:
        secret = rng.choice([b"", b"corpus-subject-key"])
        out.append(
            [
                "id",
                normalize_id(value),
                subject_key(value),
                subject_key(value, secret),
                keys.subject_hash(value, secret),
                keyed(subject_key(value), b"corpus-subject-key"),
                [hmac_sha256(bytes(k), value.encode()).hex() for k in HMAC_KEYS],
            ]
        )
    return out


def _memo(rng: random.Random, values: list[Any]) -> list[Any]:
    """``frozen`` keys of JSON values (which are equal, which are not) and a ``BoundedMemo``."""
    out: list[Any] = []
    odd = [(1, 2), {1, 2}, frozenset(), b"x", {"a": (1,)}, [1, [2, {3}]], {1: 2}, {True: 1}]
    keys_seen: list[Any] = []
    for value in [*values, *odd, 1, 1.0, True, None, "1", [1], {"a": 1, "b": 2}, {"b": 2, "a": 1}]:
        try:
            key = frozen(value)
        except Unkeyable as exc:
            out.append(["unkeyable", str(exc)])
            continue
        hash(key)
        same = [n for n, seen in enumerate(keys_seen) if seen == key]
        out.append(["frozen", repr(key), same[:5]])
        keys_seen.append(key)
    memo: BoundedMemo[int] = BoundedMemo(rng.randrange(1, 6))
    for n in range(200):
        key = frozen(rng.choice(values[:8]))
        if rng.random() < 0.5:
            out.append(["memo put", memo.put(key, n), len(memo)])
        else:
            out.append(["memo get", memo.get(key), len(memo)])
    return out


def _records(rng: random.Random) -> list[Any]:
    """Consent records (``consent.records``): built, merged, narrowed, encoded, decoded."""
    out: list[Any] = []
    records: list[ConsentRecord | None] = [None]
    for _ in range(60):
        votes = {c: rng.random() < 0.5 for c in rng.sample(["C1", "C2", "C3", "C4"], 3)}
        at = NOW - timedelta(seconds=rng.randrange(-100, 10**6), microseconds=rng.randrange(10**6))
        record = ConsentRecord.build(
            votes,
            source=rng.choice(["api", "segment_event", "gpp"]),
            updated_at=at,
            received_at=NOW,
            max_age_days=rng.choice([1, 30, 395]),
        )
        records.append(record)
        encoded = record.encode()
        out.append(["record", encoded, ConsentRecord.decode(encoded) == record])
    for _ in range(60):
        chosen = rng.sample(records, rng.randrange(4))
        merged = merge_records(chosen)
        if merged is None:
            out.append(["merged", None])
        else:
            granted, denied = sorted(merged.granted), sorted(merged.denied)
            out.append(["merged", granted, denied, merged.source, merged.updated_at.isoformat()])
        current, write = rng.choice(records), rng.choice(records[1:])
        assert write is not None
        kept, refused = narrow(current, write)
        out.append(["narrow", None if kept is None else kept.encode(), sorted(refused)])
    corrupt = [b"{", b"[]", b'{"granted":1}', b'{"granted":[],"denied":[],"source":"a"}', b"\xff"]
    corrupt.append(b'{"granted":[1],"denied":[],"source":2,"updated_at_ms":"9",')
    corrupt[-1] += b'"received_at_ms":1e3,"expires_at_ms":10}'
    corrupt.append(corrupt[-1].replace(b"1e3", b"10").replace(b"10}", b"1e400}"))
    for raw in corrupt:
        try:
            out.append(["decoded", ConsentRecord.decode(raw).encode()])
        except UnreadableRecordError as exc:
            out.append(["unreadable", repr(exc.__cause__)])
    out.append(["unreadable record", ConsentRecord.unreadable(NOW).encode()])
    return out


def _cache(rng: random.Random) -> list[Any]:
    """The consent store's cache bookkeeping (``consent.cache``): lookups, reads in flight
    invalidated or not, expiry, eviction, keys and replies."""
    out: list[Any] = []
    cache: OrderedDict[str, cache_ops.Entry] = OrderedDict()
    reading: dict[str, int] = {}
    dirty: set[str] = set()
    names = [f"s{n}" for n in range(12)]
    for step in range(150):
        now = NOW + timedelta(hours=step)
        subjects = [rng.choice(names) for _ in range(rng.randrange(6))]
        found: dict[str, ConsentRecord | None] = {}
        suppressed: set[str] = set()
        misses = cache_ops.take_cached(cache, subjects, now, found, suppressed)
        cache_ops.begin_reads(reading, misses)
        if misses and rng.random() < 0.3:
            dirty.add(rng.choice(misses))
        marks = rng.choice([None, "rt:suppressed"])
        keys = cache_ops.read_keys(misses, marks)
        replies: list[bytes | None] = [
            ConsentRecord.build(
                {"C1": True}, source="api", updated_at=now, received_at=now, max_age_days=1
            )
            .encode()
            .encode()
            if record and rng.random() < 0.6
            else (b"1" if not record and rng.random() < 0.3 else None)
            for record in (key.startswith("rt:consent:") for key in keys)
        ]
        read = cache_ops.split_replies(misses, replies, marks is not None)
        fresh = cache_ops.end_reads(reading, dirty, misses)
        cache_ops.remember(
            cache,
            misses,
            read,
            now,
            decode=lambda raw, _: ConsentRecord.decode(raw),
            found=found,
            suppressed=suppressed,
            keep=fresh,
        )
        cache_ops.evict(cache, rng.randrange(3, 9))
        out.append(
            [
                "cache",
                misses,
                keys,
                {s: None if r is None else r.encode() for s, r in sorted(found.items())},
                sorted(suppressed),
                sorted(fresh),
                list(cache),
                sorted(reading),
                sorted(dirty),
            ]
        )
    return out


def _index(plan: RequestPlan) -> list[Any]:
    """The subject index positions (``router.compliance.subject_tokens``) of a plan's
    decisions, as ``decision`` records and as one ``decisions`` record per shared part."""
    records: list[tuple[str, dict[str, Any]]] = [
        (str(kind), data) for kind, data in plan.decision_records()
    ]
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for shared, part in plan.decision_audit:
        groups.setdefault(shared.key, {**shared.data, "events": []})["events"].append(part)
    records += [("decisions", data) for data in groups.values()]
    index: IndexGroups = {}
    for ordinal, (kind, data) in enumerate(records, 1):
        group_for_index(kind, data, index, str(ordinal))
    keys_, args = index_arguments("rt:{audit}", index)
    listed = [[*tokens, honoured, ordinals] for (tokens, honoured), ordinals in index.items()]
    return [["index groups", listed], ["index keys", keys_, args]]


def _keys_and_items(rng: random.Random, plan: RequestPlan) -> list[Any]:
    """Redis keys (``router.queue.keys``, ``consent.store``), queue entries of a plan's
    deliveries (``router.queue.items``) and the enqueuer's writes."""
    out: list[Any] = []
    for destination in ["ops-hook", "ga4", "a/b", ""]:
        partition = rng.randrange(3)
        out.append(
            [
                "keys",
                keys.queue_key(destination, partition),
                keys.dlq_key(destination, partition),
                keys.outbox_key(destination),
                keys.aggregate_key(destination, "who", rng.choice([None, 1700000000, "*"])),
                keys.audit_key(keys.AUDIT, "heads"),
                record_key(destination),
                history_key(destination),
            ]
        )
    for value in ["1-1", "2/3-4", "0/1-1", "x/1-1", "9/1-1", "1-", "", "12345-0"]:
        out.append(["dead letter", value, keys.parse_dead_letter_id(value, 3)])
    for destination, routed in plan.deliveries.items():
        encoded = [ITEM_ENCODER.encode(item) for item in routed]
        for items in (encoded[:1], encoded):
            entry = entry_for(items, destination=destination)
            fields = {k: v if isinstance(v, bytes) else v.encode() for k, v in entry.items()}
            raw = entry_items(fields, destination=destination)
            queued = [decode_queued(r) for r in raw]
            out.append(
                [
                    "entry",
                    sorted(entry),
                    raw == items,
                    [None if q is None else msgspec.to_builtins(decoded(q)) for q in queued],
                ]
            )
        write = Deliveries(keys.queue_key(destination), encoded, destination)
        out.append(["write", repr(Write(write.stream, {"n": str(len(write.items))}))])
    out.append(["not queue items", [decode_queued(r) for r in [b"", b"{}", b"[1]", b'{"d":1}']]])
    return out


def _metrics(rng: random.Random) -> list[Any]:
    """Counters (``router.observability.metrics``): series and their Prometheus text."""
    stats = Stats()
    for _ in range(300):
        labels = rng.choice(
            [
                {"source": "web"},
                {"source": "web", "route": "batch"},
                {"route": "batch", "source": "web"},
                {"destination": "ops-hook", "reason": "consent"},
                {"destination": "jane.doe@example.com", "reason": "x"},
                {},
            ]
        )
        amount = rng.choice([0, 1, 7, 10**6, 2**53 + 1])
        stats.add(
            rng.choice(["router_events_received_total", "router_events_skipped_total"]),
            amount,
            **labels,
        )
    try:
        stats.add("router_events_received_total", bogus="1")
    except ValueError as exc:
        refused = str(exc)
    return [
        ["series", stats.series()],
        ["total", stats.get("router_events_received_total", source="web")],
        ["refused", refused],
        ["prometheus", render_prometheus(stats)],
    ]


def corpus(count: int) -> list[Any]:
    """Every output of the corpus, in order."""
    rng = random.Random(14)
    routing = routing_from()
    out: list[Any] = []
    events: list[Event] = []
    for n in range(count):
        raw = msgspec.json.encode(_event(rng, n))
        if rng.random() < 0.05:  # a defect the decoder refuses: the scanner names it
            raw = raw.replace(b'"plain"', b'"pl\x01ain"').replace(b"12345", b"NaN")
        out.append(["defect", jsonscan.defect(raw)])
        try:
            wire: WireEvent = WIRE_EVENT_DECODER.decode(raw)
        except msgspec.DecodeError as exc:
            out.append(["undecodable", str(exc)])
            continue
        outcome = sanitize(wire, route_type=None, received_at=NOW, new_id=lambda: "new", raw=raw)
        if isinstance(outcome, Rejection):
            out.append(["rejected", outcome.code, outcome.path, outcome.message])
            continue
        events.append(outcome)
        paths = field_paths(outcome.data)
        out.append(["event", msgspec.to_builtins(outcome), sorted(paths)])
        out.append(["removed", removed(outcome.data, {"properties": {}}, data_paths=paths)])
        out.append(["safe", [safe_path(p) for p in sorted(paths)]])
        headers = [("Sec-GPC", rng.choice(["1", "0", " 1 "])), ("CF-IPCountry", "DE")]
        signals = signals_from_headers(headers, "cf-ipcountry")
        report = explain(routing, wire, now=NOW, new_id=lambda: "new", signals=signals)
        out.append(["explain", report if isinstance(report, list) else report.code])
    subjects = [tuple(subject_key(i) for i in e.subject_ids) for e in events]
    for start in range(0, len(events), 50):  # batches: memo and consent events in order
        plan = plan_request(
            events[start : start + 50],
            subjects[start : start + 50],
            routing=routing,
            signals=signals_from_headers([], None),
            suppressed=frozenset(subjects[start][:1]),
            audit_key=b"corpus-audit-key",
            collect_paths=True,
        )
        out.append(["batch", _encoded(plan)])
        out += _keys_and_items(rng, plan)
        out += _index(plan)
    out += _ids(rng)
    out += _memo(rng, [msgspec.to_builtins(e.data) for e in events[:200]])
    out += _records(rng)
    out += _cache(rng)
    out += _metrics(rng)
    return out


def compiled_modules() -> list[str]:
    """Which of the core's modules this interpreter runs compiled (extension modules)."""
    return [m for m in COMPILED if not (sys.modules[m].__file__ or "").endswith(".py")]


def main() -> int:
    """Print the corpus's outputs as JSON lines, after the list of compiled modules."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    encoder = msgspec.json.Encoder(order="deterministic")
    lines = [encoder.encode(compiled_modules())]
    lines += [encoder.encode(item) for item in corpus(args.events)]
    sys.stdout.buffer.write(b"\n".join(lines) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
