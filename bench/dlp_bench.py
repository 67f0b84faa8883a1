"""Benchmark of the DLP scanner on a typical minimized payload.

Runs, in the same process and the same run, a baseline that only walks and copies the payload
and ``scan_payload`` on the same payload, then prints strings/s for both side by side and the
ratio between them. Run it with ``.venv/bin/python bench/dlp_bench.py [--seconds N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from destinations.dlp import scan_payload

# A Segment-shaped "Order Completed" after minimization: 20 fields (19 strings and a number),
# with an email and an IP in declared fields and a phone number in a free-text note.
PAYLOAD: dict[str, Any] = {
    "messageId": "ajs-next-1763793421-5f1c2a9e-6b0d-4c1e-9a53-2f8e1b7c4d90",
    "anonymousId": "f81d4fac-3c1a-4e4f-9b2c-6a4d1b2c3d4e",
    "userId": "3f1a9c2e7b4d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f",  # tokenized
    "type": "track",
    "event": "Order Completed",
    "timestamp": "2026-11-22T06:37:01.123Z",
    "context": {
        "ip": "203.0.113.42",
        "userAgent": (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
        ),
        "page": {
            "url": "https://shop.example.com/checkout/complete?order=ORD-2026-000123&utm_source=news",
            "title": "Thank you for your order",
        },
    },
    "traits": {"email": "jane.doe@example.com"},
    "properties": {
        "order_id": "ORD-2026-000123",
        "revenue": 1299.99,
        "currency": "USD",
        "coupon": "WINTER-25",
        "note": "Please call +1 650 555 1212 before delivery",
        "products": [
            {"product_id": "p-507f1f77", "sku": "SKU-45790-32"},
            {"product_id": "p-507f1f78", "sku": "SKU-45790-33"},
        ],
    },
}
DECLARED = {"traits.email": "email", "context.ip": "ip"}
TRANSFORMED = frozenset({"userId"})


def walk(value: Any) -> Any:
    """The baseline: copy the payload the way ``scan_payload`` does, without scanning."""
    if isinstance(value, dict):
        return {key: walk(item) for key, item in value.items()}
    if isinstance(value, list):
        return [walk(item) for item in value]
    return value


def count_strings(value: Any) -> int:
    if isinstance(value, dict):
        return sum(count_strings(item) for item in value.values())
    if isinstance(value, list):
        return sum(count_strings(item) for item in value)
    return int(isinstance(value, str))


def calibrate(run: Callable[[], object]) -> int:
    """How many calls of ``run`` take at least 50 ms."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            run()
        if time.perf_counter() - start >= 0.05:
            return calls
        calls *= 2


def measure(runs: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Calls per second of each run: the best of rounds that alternate between the runs.

    Alternating makes both runs see the same machine (other processes, frequency scaling), so
    their ratio stays meaningful on a busy host.
    """
    batches = {name: calibrate(run) for name, run in runs.items()}
    best = dict.fromkeys(runs, float("inf"))
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name, run in runs.items():
            calls = batches[name]
            start = time.perf_counter()
            for _ in range(calls):
                run()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return {name: 1.0 / per_call for name, per_call in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time in all")
    args = parser.parse_args()

    strings = count_strings(PAYLOAD)
    _, detections = scan_payload(PAYLOAD, DECLARED, TRANSFORMED)
    rates = measure(
        {
            "walk": lambda: walk(PAYLOAD),
            "scan": lambda: scan_payload(PAYLOAD, DECLARED, TRANSFORMED),
        },
        args.seconds,
    )
    baseline, scanned = rates["walk"], rates["scan"]

    found = [(d.path, d.kind, "redacted" if d.redacted else "kept") for d in detections]
    print(f"payload: {strings} strings; detections: {found}")
    print(f"{'':<6}{'payloads/s':>12}{'strings/s':>12}{'us/payload':>12}{'us/string':>11}")
    for name, rate in rates.items():
        print(
            f"{name:<6}{rate:>12,.0f}{rate * strings:>12,.0f}"
            f"{1e6 / rate:>12.1f}{1e6 / rate / strings:>11.2f}"
        )
    print(f"scan costs {baseline / scanned:.1f}x the bare walk")


if __name__ == "__main__":
    main()
