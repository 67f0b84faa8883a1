"""CPU per event of the ingest handler, in process: no HTTP, no load generator.

    .venv/bin/python -m bench.inproc                       # this tree, every workload
    .venv/bin/python -m bench.inproc --baseline /tmp/base  # + another checkout, alternating
    .venv/bin/python -m bench.inproc --profile distinct100 # + cProfile's top functions

The application is built as ``router serve --no-workers`` builds it (``create_app``, a real
``redis-server`` in a temporary directory, ``bench/routing.yaml``), and the ingest handler is
called on pre-built requests: ``make_mocked_request`` with the body already in its stream, so
aiohttp's parser and the sockets cost nothing and CPU time per event is the router's own work
(the enqueuer's Redis round trips are awaited, their client-side CPU is counted).

``--gc off freeze serve`` measures each workload under each garbage collector setting (in the
same process, one after the other): ``off`` Python's defaults, ``freeze`` the start-up heap
frozen, ``serve`` what ``router serve`` does (this tree: frozen, then ``GC_THRESHOLDS``).

Workloads (``bench/payload.py``): ``single`` (one ``/v1/track`` of the bench user, whose
consent is stored), ``single-distinct`` (``/v1/track`` of a new person each time, consent in
the event: every request misses the consent cache), ``batch100`` (one person's event repeated:
flatters every memo), ``distinct100`` (every event a different user, anonymous id, order id and
URL, consent in each event), ``distinct100-ids`` (the same with ids holding numbers as real ones
do, ``<run>-100012-1003``: ten digits in a grouped run, each id a string the PII net must clear
or scan; ``distinct100``'s ids hold at most 7 digits in a run). Requests run ``--concurrency``
at a time (64, like wrk's connections).

``--baseline PATH`` runs the same measurement on another checkout (``PATH`` put first on
``sys.path`` in a child process; it needs ``router``, ``consent``, ``destinations``, ``tests``
and no ``bench``: ``git archive main router consent destinations tests | tar -x -C PATH``)
alternately with this tree, ``--rounds`` times, and prints both side by side: the only fair
comparison on a shared machine. Figures are measured and printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
WRITE_KEY = "bench-write-key"
WORKLOADS = ("single", "single-distinct", "batch100", "distinct100", "distinct100-ids")


def _bodies(workload: str, requests: int, run: str) -> tuple[str, list[bytes]]:
    if workload.startswith("single"):
        template = payload.single(WRITE_KEY, in_event_consent=workload == "single-distinct")
        if workload == "single-distinct":
            event = json.loads(template.sample_body)
            path = "/v1/track"
            bodies = []
            for n in range(requests):
                event.update(
                    messageId=f"{run}-{n}", userId=f"user-{run}-{n}", anonymousId=f"anon-{run}-{n}"
                )
                event["properties"]["order_id"] = f"ORD-{run}-{n}"
                event["context"]["page"]["url"] = f"https://shop.example.com/c?order={run}-{n}"
                bodies.append(json.dumps(event, separators=(",", ":")).encode())
            return path, bodies
    elif workload == "batch100":
        template = payload.batch(WRITE_KEY, size=100, in_event_consent=False)
    else:
        template = payload.distinct_batch(WRITE_KEY, size=100)
    bodies = []
    for n in range(requests):
        out = [template.parts[0]]
        for index, part in enumerate(template.parts[1:]):
            if workload == "distinct100-ids":
                out += [f"{run}-{100_000 + n}-{1_000 + index}", part]
            else:
                out += [f"{run}-{n}-{index}", part]
        bodies.append("".join(out).encode())
    return template.path, bodies


from bench import payload  # noqa: E402 - bench/ comes from this tree in every child


def _collector(mode: str) -> None:
    """The garbage collector as ``mode`` says: ``off`` (Python's defaults, nothing frozen),
    ``freeze`` (start-up heap frozen, default thresholds), ``serve`` (what the tree's
    ``router serve`` does after start-up)."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    if mode == "freeze":
        gc.collect()
        gc.freeze()
    elif mode == "serve":
        from router import cli  # noqa: PLC0415

        cli._freeze_heap()


async def _measure(
    workload: str,
    requests: int,
    concurrency: int,
    profile: bool,
    redis_url: str,
    collector: str,
) -> dict[str, Any]:
    from aiohttp import web  # noqa: PLC0415
    from aiohttp.streams import StreamReader  # noqa: PLC0415
    from aiohttp.test_utils import make_mocked_request  # noqa: PLC0415
    from multidict import CIMultiDict  # noqa: PLC0415

    from router.settings import Settings  # noqa: PLC0415

    try:  # the layout of router/edge and router/runtime.py
        from router.edge.app import create_app  # noqa: PLC0415
        from router.edge.ingest import ingest  # noqa: PLC0415
        from router.edge.state import STATE  # noqa: PLC0415
        from router.routing import load_routing  # noqa: PLC0415
        from router.runtime import build_runtime  # noqa: PLC0415

        def make_app(settings: Settings, routing: Any) -> web.Application:
            return create_app(build_runtime(settings, routing, serve=True, workers=False))
    except ImportError:  # a baseline checkout from before it (flat router/)
        from router.app import create_app as create_flat  # type: ignore[no-redef]  # noqa: PLC0415
        from router.config import load_routing  # type: ignore[no-redef]  # noqa: PLC0415
        from router.ingest import STATE, ingest  # type: ignore[no-redef]  # noqa: PLC0415

        def make_app(settings: Settings, routing: Any) -> web.Application:
            return create_flat(settings, routing, workers=False)  # type: ignore[call-arg]

    os.environ.update(ROUTER_REDIS_URL=redis_url, BENCH_WRITE_KEY=WRITE_KEY)
    settings = Settings(config=HERE / "routing.yaml", audit_key="bench-audit-key")
    routing = load_routing(settings.config)
    app = make_app(settings, routing)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        state = app[STATE]
        assert state.consent is not None
        await state.consent.wait_live()
        from consent.records import ConsentRecord  # noqa: PLC0415
        from consent.store import subject_key  # noqa: PLC0415

        now = __import__("datetime").datetime.now(__import__("datetime").UTC)
        record = ConsentRecord.build(
            payload.STORED_CONSENT, source="bench", updated_at=now, received_at=now,
            max_age_days=395,
        )  # fmt: skip
        await state.consent.write(
            [subject_key(payload.USER_ID), subject_key(payload.ANONYMOUS_ID)], record
        )
        loop = asyncio.get_running_loop()
        headers = CIMultiDict(
            {
                "Authorization": payload.auth_header(WRITE_KEY),
                "Content-Type": "application/json",
            }
        )

        def request(path: str, body: bytes) -> web.Request:
            reader = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
            reader.feed_data(body)
            reader.feed_eof()
            h = headers.copy()
            h["Content-Length"] = str(len(body))
            return make_mocked_request(
                "POST",
                path,
                headers=h,
                match_info={"kind": path.rsplit("/", 1)[1]},
                app=app,
                payload=reader,
                loop=loop,
            )

        async def drive(path: str, bodies: list[bytes]) -> int:
            # Mocked requests are expensive to build (unittest.mock): all built before timing.
            requests = [request(path, b) for b in bodies]
            gc.collect()
            events = 0
            cpu0 = time.process_time()
            if profiler is not None:
                profiler.enable()
            for start in range(0, len(requests), concurrency):
                answers = await asyncio.gather(
                    *(ingest(r) for r in requests[start : start + concurrency])
                )
                for answer in answers:
                    assert answer.status == 200, answer.text
            if profiler is not None:
                profiler.disable()
            spent[0] = time.process_time() - cpu0
            for body in bodies:
                events += body.count(b'"messageId"')
            return events

        spent = [0.0]
        profiler: cProfile.Profile | None = None
        _collector(collector)
        warm_path, warm = _bodies(workload, max(concurrency, requests // 5), "warm")
        await drive(warm_path, warm)
        path, bodies = _bodies(workload, requests, "r" + payload.run_tag(time.time_ns() // 1000))
        profiler = cProfile.Profile() if profile else None
        wall0 = time.perf_counter()
        events = await drive(path, bodies)
        cpu, wall = spent[0], time.perf_counter() - wall0
        out: dict[str, Any] = {
            "workload": workload,
            "gc": collector,
            "events": events,
            "requests": len(bodies),
            "cpu_us_per_event": 1e6 * cpu / events,
            "events_per_cpu_s": events / cpu,
            "wall_s": wall,
        }
        if profiler is not None:
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text)
            top = int(os.environ.get("BENCH_PROFILE_TOP", "30"))  # lines of each listing
            stats.sort_stats("tottime").print_stats(top)
            stats.sort_stats("cumulative").print_stats(r"(router|consent|destinations)/", top)
            out["profile"] = text.getvalue()
        return out
    finally:
        _collector("off")
        await runner.cleanup()


def _child(args: argparse.Namespace) -> int:
    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(HERE.parent))  # bench/ itself always comes from this tree
    sys.path.insert(0, str(tree))
    from tests.redis_server import RedisServer  # noqa: PLC0415

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            for workload in args.workloads:
                for collector in args.gc:
                    results.append(
                        asyncio.run(
                            _measure(
                                workload,
                                args.requests if workload.startswith("single") else args.batches,
                                args.concurrency,
                                workload in args.profile,
                                server.url,
                                collector,
                            )
                        )
                    )
        finally:
            server.stop()
    print("INPROC_JSON " + json.dumps(results))
    return 0


def _run_tree(tree: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    argv = [sys.executable, "-m", "bench.inproc", "--child", "--tree", tree]
    argv += ["--workloads", *args.workloads, "--requests", str(args.requests)]
    argv += ["--batches", str(args.batches), "--concurrency", str(args.concurrency)]
    argv += ["--gc", *args.gc]
    if args.profile:
        argv += ["--profile", *args.profile]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: exit {done.returncode}\n{done.stderr[-3000:]}")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("INPROC_JSON "))
    result: list[dict[str, Any]] = json.loads(line.removeprefix("INPROC_JSON "))
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure this tree (and ``--baseline``, alternately); print CPU us per event."""
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--requests", type=int, default=2000, help="single-event requests")
    parser.add_argument("--batches", type=int, default=60, help="batch requests")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", help="another checkout to measure alternately")
    parser.add_argument("--profile", nargs="*", default=[], choices=WORKLOADS)
    parser.add_argument(
        "--gc",
        nargs="+",
        default=["serve"],
        choices=["off", "freeze", "serve"],
        help="garbage collector settings to measure each workload under (default: serve's)",
    )
    parser.add_argument("--tree", default=str(HERE.parent), help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    trees = [("this tree", str(HERE.parent))]
    if args.baseline:
        trees.insert(0, ("baseline", args.baseline))
    runs: dict[str, list[list[dict[str, Any]]]] = {name: [] for name, _ in trees}
    profile = args.profile
    for round_ in range(args.rounds):
        args.profile = profile if round_ + 1 == args.rounds else []  # the last round only
        for name, tree in trees:
            print(f"round {round_ + 1}: {name} ({tree})", file=sys.stderr, flush=True)
            runs[name].append(_run_tree(tree, args))
    print(f"CPU us per event (lower is better), {args.rounds} rounds alternating, best shown")
    header = f"{'workload':<26}" + "".join(f"{name:>22}" for name, _ in trees)
    if args.baseline:
        header += f"{'speed-up':>10}"
    print(header)
    labels = [
        r["workload"] + ("" if len(args.gc) == 1 else f" gc={r['gc']}")
        for r in runs[trees[0][0]][0]
    ]
    for index, workload in enumerate(labels):
        best = [min(r[index]["cpu_us_per_event"] for r in runs[name]) for name, _ in trees]
        every = [
            "/".join(f"{r[index]['cpu_us_per_event']:.0f}" for r in runs[name]) for name, _ in trees
        ]
        line = f"{workload:<26}" + "".join(
            f"{b:>9.1f} ({e:>10})" for b, e in zip(best, every, strict=True)
        )
        if args.baseline:
            line += f"{best[0] / best[1]:>9.2f}x"
        print(line)
    for name, _ in trees:
        for result in runs[name][-1]:
            if "profile" in result:
                print(f"\n--- cProfile of {name}, {result['workload']} ---\n{result['profile']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
