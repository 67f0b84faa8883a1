"""CPU per event of the ingest's audit path, in process: no HTTP, no Redis.

    .venv/bin/python -m bench.audit_path_bench [--batches 60] [--rounds 5]
    cd /tmp && PYTHONPATH=/tmp/base:/path/to/this/tree python -m bench.audit_path_bench

The second line measures another checkout's ``router`` (``git archive main router consent
destinations tests | tar -x -C /tmp/base``) with this bench: run it from outside both trees
(``-m`` puts the working directory first on ``sys.path``). Run both one after the other, more
than once: the machine's noise is larger than most differences.

The audit path is what the router does per event for the audit trail: ``decision_notes``
(per destination its shared part, memoized, and the event's keyed tokens), ``AuditWriter.
record_decisions`` (grouping them), and the flush (``decisions`` records in canonical JSON,
chained with SHA-256, their subject index positions), with the Redis calls answered by a stub
that costs nothing. The events are the ``distinct100`` workload of ``bench.inproc`` (100
people per request, each with their consent in the event), sanitized and planned with
``bench/routing.yaml`` before timing, then frozen out of the garbage collector's reach as
``router serve`` freezes its start-up heap; every round has events of its own, so no memo is
warm from the round before. Prints the best round's microseconds per event, in total and per
step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

from bench import payload
from router import cli
from router.compliance.audit_log import AuditLog, AuditWriter
from router.core import plan as plan_module
from router.core.plan import plan_request
from router.core.sanitize import Event, sanitize
from router.core.schema import WIRE_EVENT_DECODER
from router.core.signals import signals_from_headers
from router.routing import load_routing

HERE = Path(__file__).resolve().parent
KEY = b"bench-audit-key"


class _Redis:
    """Answers the audit log's two scripts as a fresh Redis would: a lane, then every append
    accepted (no witness)."""

    async def eval(self, script: str, numkeys: int, *args: Any) -> list[Any]:
        return [1] if "INCR" in script else [1, b"", b"", b""]


def _requests(batches: int, tag: str) -> list[list[tuple[Any, ...]]]:
    """The ``decision_notes`` calls of each request, as the planner makes them."""
    os.environ.setdefault("BENCH_WRITE_KEY", "bench-write-key")
    routing = load_routing(HERE / "routing.yaml")
    template = payload.distinct_batch("bench-write-key", size=100)
    signals = signals_from_headers([], routing.policy.geo_header)
    now = datetime.now(UTC)
    calls: list[tuple[Any, ...]] = []
    real = plan_module.decision_notes

    def record(*args: Any, **kwargs: Any) -> list[Any]:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    out: list[list[tuple[Any, ...]]] = []
    for n in range(batches):
        parts = [template.parts[0]]
        for index, part in enumerate(template.parts[1:]):
            parts += [f"{tag}-{n}-{index}", part]
        body = json.loads("".join(parts))
        events: list[Event] = []
        for raw in body["batch"]:
            event = sanitize(
                WIRE_EVENT_DECODER.decode(json.dumps(raw)),
                route_type=None,
                received_at=now,
                new_id=lambda: "unused",
            )
            assert isinstance(event, Event)
            events.append(event)
        calls.clear()
        with mock.patch.object(plan_module, "decision_notes", record):
            plan_request(
                events, [e.subject_ids for e in events], routing=routing, signals=signals,
                audit_key=KEY,
            )  # fmt: skip
        if not calls:
            raise SystemExit(
                "the planner was not intercepted (a compiled plan.py?): run from the tree"
            )
        out.append([(*args, kwargs) for args, kwargs in calls])
    return out


def _round(requests: list[list[tuple[Any, ...]]]) -> dict[str, float]:
    """CPU seconds of each step over the requests."""
    writer = AuditWriter(AuditLog(_Redis(), key=KEY))  # type: ignore[arg-type]
    build: Callable[..., list[Any]] = plan_module.decision_notes
    entries_s = record_s = 0.0
    for calls in requests:
        t0 = time.process_time()
        entries: list[Any] = []
        for *args, kwargs in calls:
            entries += build(*args, **kwargs)
        t1 = time.process_time()
        writer.record_decisions(entries)
        t2 = time.process_time()
        entries_s += t1 - t0
        record_s += t2 - t1
    t0 = time.process_time()
    asyncio.run(writer.flush())
    return {"entries": entries_s, "record": record_s, "flush": time.process_time() - t0}


def main() -> int:
    """Measure ``--rounds`` rounds and print the best per step."""
    parser = argparse.ArgumentParser(prog="python -m bench.audit_path_bench")
    parser.add_argument("--batches", type=int, default=60, help="requests of 100 events")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tag = payload.run_tag(time.time_ns() // 1000)
    rounds = [_requests(args.batches, f"{tag}-{r}") for r in range(args.rounds + 1)]
    cli._freeze_heap()  # as `router serve` does: the inputs are start-up heap, out of the GC
    _round(rounds[0])  # warm-up
    results = [_round(r) for r in rounds[1:]]
    events = args.batches * 100
    best = min(results, key=lambda r: sum(r.values()))
    steps = "  ".join(f"{k} {1e6 * v / events:5.1f}" for k, v in best.items())
    totals = "/".join(f"{1e6 * sum(r.values()) / events:.1f}" for r in results)
    print(f"audit path: {1e6 * sum(best.values()) / events:5.1f} us per event ({steps})")
    print(f"every round: {totals}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
