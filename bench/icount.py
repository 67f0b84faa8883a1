"""Instructions per event of the ingest's per-event work, counted by callgrind: deterministic.

    .venv/bin/python -m bench.icount                          # this tree
    .venv/bin/python -m bench.icount --baseline /tmp/base     # + another checkout, side by side

On a shared VM the CPU time of one tree moves by 30-60 % from round to round (``bench.inproc``
shows it), which hides a change of 10 %. An instruction count does not move: the same Python,
the same events and ``PYTHONHASHSEED=0`` give the same count, whatever else the machine runs.

Counted: what the ingest does per event between the body and the enqueue, in process and
without Redis: ``parse_body``, ``sanitize``, the subject hashes and ``RequestPlanner.add``
with the audit's decision records and the monitor's field paths on (as ``router serve`` runs
it), over batches of 100 events of ``bench/payload.py`` (``distinct100``: 100 people;
``batch100``: one person repeated, consent in the events) on ``bench/routing.yaml``. Not
counted: HTTP, Redis round trips, the audit trail's encoding and the enqueue (see
``bench.inproc`` and ``bench.audit_path_bench`` for those). Each tree runs under callgrind
twice, with ``--small`` and ``--large`` batches after the same warm-up; the difference divided
by the extra events is the count per event, start-up and warm-up cancelling out.

``--baseline PATH``: a checkout with ``router``, ``consent``, ``destinations`` and no ``bench``
(``git archive <rev> router consent destinations | tar -x -C PATH``, plus the built
``_speedups`` modules copied in when this tree has them): it runs with this tree's ``bench/``.
Needs ``valgrind`` (Debian package). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = ("distinct100", "batch100")
SIZE = 100
WARM_UP = 3


def _child(workload: str, batches: int) -> None:
    """Warm up, then parse, sanitize and plan ``batches`` batches (run under callgrind)."""
    from bench import payload  # noqa: PLC0415 - this tree's bench, the measured tree's router
    from consent.resolve import RequestSignals  # noqa: PLC0415
    from router.core.outcomes import Rejection  # noqa: PLC0415
    from router.core.plan import RequestPlanner  # noqa: PLC0415
    from router.core.sanitize import Limits, sanitize  # noqa: PLC0415
    from router.edge.ingest import parse_body  # noqa: PLC0415
    from router.queue.keys import subject_hash  # noqa: PLC0415
    from router.routing import load_routing  # noqa: PLC0415

    routing = load_routing(HERE / "routing.yaml")
    limits = routing.file.limits
    event_limits = Limits(max_string_chars=limits.max_string_chars, max_depth=limits.max_depth)
    if workload == "distinct100":
        template = payload.distinct_batch("bench-write-key", size=SIZE)
    else:
        template = payload.batch("bench-write-key", size=SIZE, in_event_consent=True)
    received_at = datetime(2026, 12, 6, tzinfo=UTC)

    def body(n: int) -> bytes:
        out = [template.parts[0]]
        for index, part in enumerate(template.parts[1:]):
            out += [f"q{n}x-{index}", part]  # letters around the counters: no digit runs
        return "".join(out).encode()

    def ingest(raw_body: bytes) -> None:
        parsed = parse_body(raw_body, None, limits.max_event_bytes, limits.max_batch_events)
        events = [
            sanitize(
                item,
                route_type=None,
                received_at=received_at,
                new_id=lambda: "generated-id",
                limits=event_limits,
                batch_context=parsed.context,
                batch_integrations=parsed.integrations,
                batch_sent_at=parsed.sent_at,
                raw=raw,
            )
            for raw, item in parsed.items
        ]
        accepted = [e for e in events if not isinstance(e, Rejection)]
        subjects = [tuple(subject_hash(i, b"") for i in e.subject_ids) for e in accepted]
        planner = RequestPlanner(
            routing, RequestSignals(), audit_key=b"bench-audit-key", collect_paths=True
        )
        planner.add(accepted, subjects)

    for n in range(WARM_UP):
        ingest(body(1_000_000 + n))
    bodies = [body(n) for n in range(batches)]
    gc.disable()
    for raw_body in bodies:
        ingest(raw_body)


def _count(tree: str, workload: str, batches: int, valgrind: str) -> int:
    """Instructions of one child run of ``tree`` under callgrind."""
    argv = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    argv += [sys.executable, "-m", "bench.icount", "--child", workload, str(batches)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "PYTHONHASHSEED": "0"}
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{tree}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    """Count this tree (and ``--baseline``); print instructions per event."""
    parser = argparse.ArgumentParser(prog="python -m bench.icount")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--baseline", help="another checkout to count the same way")
    parser.add_argument("--small", type=int, default=2, help="batches of the first run")
    parser.add_argument("--large", type=int, default=6, help="batches of the second run")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is missing: apt-get install valgrind")
    if args.large <= args.small:
        raise SystemExit("--large must be more batches than --small")
    trees = [("this tree", str(HERE.parent))]
    if args.baseline:
        trees.insert(0, ("baseline", args.baseline))
    extra_events = (args.large - args.small) * SIZE
    print("instructions per event (callgrind, deterministic; lower is better)")
    header = f"{'workload':<14}" + "".join(f"{name:>14}" for name, _ in trees)
    print(header + (f"{'change':>10}" if args.baseline else ""))
    for workload in args.workloads:
        counts = []
        for name, tree in trees:
            print(f"  counting {workload} in {name} ({tree})", file=sys.stderr, flush=True)
            small = _count(tree, workload, args.small, valgrind)
            large = _count(tree, workload, args.large, valgrind)
            counts.append((large - small) / extra_events)
        line = f"{workload:<14}" + "".join(f"{c / 1000:>13.1f}k" for c in counts)
        if args.baseline:
            line += f"{(counts[1] - counts[0]) / counts[0]:>+10.1%}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
