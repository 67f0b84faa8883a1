"""Consent resolution throughput on one core, side by side with a baseline from the same run.

    .venv/bin/python -m bench.consent_bench [--seconds S]

Scenarios (each resolves one event's consent and evaluates two destinations):
- baseline: building the context dict and evaluating against a fixed state (the floor);
- segment: ``context.consent.categoryPreferences``;
- tcf: a TC string on the event, decoded every time (no cache);
- stored (cached): no signal on the event, the subject's stored record read through the
  ConsentStore's in-process cache (a real redis-server is started for the first read).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from consent.policy import ConsentPolicy, evaluate
from consent.records import ConsentRecord
from consent.resolve import RequestSignals, resolve_consent
from consent.store import ConsentStore, subject_key
from tests.redis_server import free_port
from tests.unit.consent.tcf_encoder import encode_tc_string
from tests.unit.consent.test_tcf import BASE

POLICY = ConsentPolicy(
    ids={"C0002": "analytics", "C0004": "advertising"},
    tcf={"analytics": (1, 8, 9, 10), "advertising": (1, 2, 3, 4, 7)},
)
SIGNALS = RequestSignals()
TC = encode_tc_string(dataclasses.replace(BASE, purpose_consents=frozenset(range(1, 11))))


def measure(name: str, step: Callable[[], object], seconds: float) -> tuple[str, float]:
    """Calls per second of ``step`` over about ``seconds``."""
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            step()
        count += 1000
    return name, count / (time.perf_counter() - started)


async def measure_async(
    name: str, step: Callable[[], Awaitable[object]], seconds: float
) -> tuple[str, float]:
    """Calls per second of an async ``step``."""
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            await step()
        count += 1000
    return name, count / (time.perf_counter() - started)


def decide(context: dict[str, Any], **kwargs: Any) -> bool:
    """Resolve and evaluate two destinations."""
    state = resolve_consent(context, SIGNALS, POLICY, **kwargs)
    return evaluate(state, ("analytics",)).allowed and evaluate(state, ("advertising",)).allowed


async def stored_scenario(seconds: float) -> tuple[str, float]:
    """Lookups of one cached subject, then resolve with the stored record."""
    binary = shutil.which("redis-server")
    if binary is None:
        return "stored (cached)", float("nan")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(  # noqa: ASYNC220 - a benchmark's fixture, before timing starts
            [binary, "--port", str(port), "--dir", directory, "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = aioredis.Redis(port=port)
            for _ in range(100):
                try:
                    await client.ping()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            store = ConsentStore(client)
            await store.start()
            await store.wait_live()
            subject = subject_key("user-1")
            now = datetime.now(UTC)
            record = ConsentRecord.build(
                {"analytics": True, "advertising": True},
                source="api",
                updated_at=now,
                received_at=now,
                max_age_days=395,
            )
            await store.write([subject], record)
            await store.get_hashed([subject])

            async def step() -> bool:
                stored = await store.get_hashed([subject])
                return decide({}, stored=stored, event_time=now, now=now)

            result = await measure_async("stored (cached)", step, seconds)
            await store.aclose()
            await client.aclose()
            return result
        finally:
            server.terminate()
            server.wait(timeout=10)


def main() -> None:
    """Run every scenario and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    fixed = resolve_consent({"consent": {"categoryPreferences": {"C0002": True}}}, SIGNALS, POLICY)
    rows = [
        measure(
            "baseline",
            lambda: evaluate(fixed, ("analytics",)).allowed and {"consent": {}},
            args.seconds,
        ),
        measure(
            "segment",
            lambda: decide({"consent": {"categoryPreferences": {"C0002": True, "C0004": True}}}),
            args.seconds,
        ),
        measure("tcf", lambda: decide({"consent": {"tcString": TC}}), args.seconds),
        asyncio.run(stored_scenario(args.seconds)),
    ]
    base = rows[0][1]
    print(f"{'scenario':<18} {'resolutions/s':>14} {'us/resolution':>14} {'x baseline':>11}")
    for name, rate in rows:
        print(f"{name:<18} {rate:>14,.0f} {1e6 / rate:>14.2f} {base / rate:>11.1f}")


if __name__ == "__main__":
    main()
