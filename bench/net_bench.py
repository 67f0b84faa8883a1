"""The allowlist copy and the PII net per destination, against a baseline checkout.

``Allowlist.apply`` then ``scan_payload``, as ``router.core.plan`` runs them for each delivered
event, on the bench's "Order Completed" (``bench.payload``) through the two allowlists of
``bench/routing.yaml`` that receive it (``hook-batch`` with its tokenized ``userId`` and
truncated IP, ``amplitude``). Every pass builds fresh events with their own user, anonymous id,
order id and URL (as ``distinct100``), so the memoized string scans start cold, as they do in
the router; the other strings recur and hit the memo, as they do there too. The baseline
checkout and this tree run alternately in child processes (``--rounds``), best and every round
printed side by side::

    git archive main destinations | tar -x -C /tmp/base
    .venv/bin/python -m bench.net_bench --baseline /tmp/base      # about 20 s
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import payload
from destinations import dlp
from destinations.dlp import scan_payload
from destinations.fields import Transform, compile_allowlist

HOOK_FIELDS = [
    "messageId",
    "type",
    "event",
    "anonymousId",
    "timestamp",
    "properties.order_id",
    "properties.revenue",
    "properties.currency",
    "properties.products[].product_id",
    "context.page.url",
]
AMPLITUDE_FIELDS = [
    "messageId",
    "userId",
    "anonymousId",
    "event",
    "timestamp",
    "properties.revenue",
    "properties.currency",
    "properties.order_id",
    "context.locale",
    "context.page.url",
]


def _child(events: int, passes: int) -> float:
    """Best microseconds per event (both destinations) over ``passes`` passes."""
    allowlists = [
        compile_allowlist(
            HOOK_FIELDS,
            {"userId": Transform.TOKENIZE, "context.ip": Transform.TRUNCATE_IP},
            b"bench-only-tokenize-key",
        ),
        compile_allowlist(AMPLITUDE_FIELDS),
    ]
    people = itertools.count()
    now = datetime.now(UTC)
    best = float("inf")
    for _ in range(passes):
        batch = [
            payload.order_completed(
                f"m-{n}", in_event_consent=True, now=now, person=f"{next(people):08x}-bench"
            )
            for n in range(events)
        ]
        start = time.process_time()
        for event in batch:
            for allowlist in allowlists:
                scan_payload(allowlist.apply(event), {}, allowlist.unscanned_paths)
        best = min(best, (time.process_time() - start) / events * 1e6)
    return best


def _run(tree: str | None, args: argparse.Namespace) -> float:
    # "python -m" puts its working directory first on sys.path: the child runs in the tree it
    # measures, with this checkout after it for the bench package.
    here = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree or here, here]))
    command = [sys.executable, "-m", "bench.net_bench", "--child"]
    command += ["--events", str(args.events), "--passes", str(args.passes)]
    out = subprocess.run(
        command, env=env, cwd=tree or here, check=True, capture_output=True, text=True
    ).stdout
    result = json.loads(out)
    print(f"  {result['dlp']}", file=sys.stderr)
    return float(result["us_per_event"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="another checkout (its destinations/) to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=2000, help="events per pass")
    parser.add_argument("--passes", type=int, default=5, help="passes per round (best kept)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"us_per_event": _child(args.events, args.passes), "dlp": dlp.__file__}))
        return 0
    trees: list[tuple[str, str | None]] = [("this tree", None)]
    if args.baseline:
        trees.insert(0, ("baseline", str(Path(args.baseline).resolve())))
    rounds: dict[str, list[float]] = {name: [] for name, _ in trees}
    for number in range(1, args.rounds + 1):
        for name, tree in trees:
            print(f"round {number}: {name}", file=sys.stderr)
            rounds[name].append(_run(tree, args))
    print("CPU us per event, allowlist copy + PII net for 2 destinations (lower is better)")
    for name, values in rounds.items():
        every = "/".join(f"{v:.1f}" for v in values)
        print(f"{name:<12} {min(values):7.2f}  ({every})")
    if args.baseline:
        print(f"speed-up     {min(rounds['baseline']) / min(rounds['this tree']):7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
