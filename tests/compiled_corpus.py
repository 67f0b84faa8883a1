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
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from consent.ids import subject_key
from router.core import jsonscan
from router.core.explain import explain
from router.core.outcomes import Rejection
from router.core.paths import field_paths, removed, safe_path
from router.core.plan import RequestPlan, plan_request
from router.core.sanitize import Event, sanitize
from router.core.schema import WIRE_EVENT_DECODER, WireEvent
from router.core.signals import signals_from_headers
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
    "consent.resolve",
    "consent.tcf",
    "consent.gpp",
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
        "audit": plan.decision_audit,
        "paths": sorted(plan.paths),
    }


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
