"""Benchmark of encryption at rest: what sealing costs per stream entry and per event.

In the same process and the same run, for entries of 1, 10 and 100 deliveries (an entry holds
up to ``MAX_ITEMS_PER_ENTRY``), it times the two paths an entry takes with encryption OFF (the
baseline) and ON (AES-256-GCM, ``router.core.sealing``):

- write: ``entry_for`` (pack the encoded items into the entry, and seal it);
- read: ``entry_items`` (open the entry and split it into its items).

Each delivery is the encoded ``QueueItem`` of the minimized payload of ``bench/dlp_bench.py``.
It prints microseconds per entry and per event, side by side, and the added cost. Run it with
``.venv/bin/python -m bench.sealing_bench [--seconds N]`` (default 4 s in all).
"""

from __future__ import annotations

import argparse
import base64
import os
from collections.abc import Callable
from datetime import UTC, datetime

from bench.dlp_bench import PAYLOAD, measure
from destinations.base import Delivery
from router.core.sealing import KeyRing, Sealer
from router.queue.items import ITEM_ENCODER, PLAINTEXT, QueueItem, entry_for, entry_items

SIZES = (1, 10, 100)
DESTINATION = "hook-batch"


def _items(count: int) -> list[bytes]:
    now = datetime.now(UTC)
    return [
        ITEM_ENCODER.encode(
            QueueItem(
                delivery=Delivery(
                    message_id=f"m-{n}",
                    type="track",
                    timestamp=now,
                    payload={**PAYLOAD, "messageId": f"m-{n}"},
                    event="Order Completed",
                ),
                subjects=("a" * 64, "b" * 64),
                requires=("analytics",),
                accepted_at=now,
            )
        )
        for n in range(count)
    ]


def _fields(entry: dict[str, bytes | str]) -> dict[str, bytes]:
    return {k: v if isinstance(v, bytes) else v.encode() for k, v in entry.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time in all")
    args = parser.parse_args()
    ring = KeyRing.parse("bench:" + base64.b64encode(os.urandom(32)).decode())
    sealers = {"off": PLAINTEXT, "on": Sealer(ring)}

    runs: dict[str, Callable[[], object]] = {}
    entry_bytes: dict[int, int] = {}
    for size in SIZES:
        items = _items(size)
        entry_bytes[size] = sum(len(i) for i in items)
        for mode, sealer in sealers.items():
            stored = _fields(entry_for(items, sealer, DESTINATION))
            assert len(entry_items(stored, sealer, DESTINATION)) == size
            runs[f"write {size} {mode}"] = lambda i=items, s=sealer: entry_for(i, s, DESTINATION)
            runs[f"read {size} {mode}"] = lambda f=stored, s=sealer: entry_items(f, s, DESTINATION)
    rates = measure(runs, args.seconds)

    print("encryption at rest: AES-256-GCM, one envelope per stream entry (same run, same data)")
    header = f"{'path':<6}{'events':>7}{'bytes':>9}"
    header += f"{'off us/entry':>14}{'on us/entry':>13}{'off us/event':>14}{'on us/event':>13}"
    print(header + f"{'added us/event':>16}")
    for path in ("write", "read"):
        for size in SIZES:
            off = 1e6 / rates[f"{path} {size} off"]
            on = 1e6 / rates[f"{path} {size} on"]
            print(
                f"{path:<6}{size:>7}{entry_bytes[size]:>9,}{off:>14.2f}{on:>13.2f}"
                f"{off / size:>14.3f}{on / size:>13.3f}{(on - off) / size:>16.3f}"
            )


if __name__ == "__main__":
    main()
