"""``python -m bench``: the whole benchmark, start to finish, every process stopped at the end.

Phases (see ``bench/README.md``):

1. a private ``redis-server`` (temporary dir, ``appendonly yes``, ``appendfsync everysec``), the
   fake receivers and the bare aiohttp baseline;
2. ingest: for single ``/v1/track`` events, then ``/v1/batch`` with 100 events, the same wrk
   load on the baseline and on ``router serve --no-workers`` (a fresh process per scenario);
3. delivery: a ``router worker`` process drains everything the ingest phase accepted, measured
   in its steady window; then the zero-loss check per destination;
4. one process with its workers (``router serve``) under single events, drained and checked;
5. optionally ``--profile`` (py-spy on the ingest and on a worker) and ``--soak SECONDS``.

``--backends single cluster`` runs phases 2-4 once per backend: on the private redis-server,
then on a private 3-master + 3-replica Redis Cluster (``tests/redis_cluster.py``, the same
append-only settings), and prints both side by side.

``--build pure|compiled|both`` picks the router's build: the source tree, or the mypyc build of
``build/compiled/`` (``make compiled``) on ``PYTHONPATH``; by default the compiled one when it
is up to date with the sources, else the pure one. ``both`` measures the two in the same
ingest runs, alternating with the baseline, and prints them side by side.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from bench import payload, profile
from bench.load import LoadResult, ensure_wrk, run_python_load, run_wrk
from bench.procs import (
    Proc,
    Processes,
    cpu_seconds,
    cpus_busy_seconds,
    free_port,
    http_get,
    http_post,
    wait_http,
    wait_port,
)
from bench.report import (
    BackendRun,
    Delivery,
    DestinationCheck,
    Measured,
    Scenario,
    backends_table,
    build_cpu_ratios,
    delivery_table,
    render_targets,
    table,
    targets,
)
from router.queue.keys import dlq_key, queue_key
from tests.redis_cluster import RedisCluster

REPO = Path(__file__).resolve().parent.parent
ROUTING = REPO / "bench" / "routing.yaml"
RESULTS = REPO / "bench" / "results"
WRITE_KEY = "bench-write-key"
AMPLITUDE_KEY = "bench-amplitude-api-key"
SATURATED_SHARE = 0.75
"""A server using less of its core than this during a run was not the bottleneck."""
NOISE_SHARE = 0.10
"""Other load on the server's core above this share of it is reported with the figures."""
EXPECTED: dict[str, bool] = {"hook-batch": True, "amplitude": True, "ads-hook": False}
"""Per destination of ``bench/routing.yaml``: whether it must receive every accepted event
(analytics granted) or none (advertising denied)."""
BACKENDS = ("single", "cluster")
"""``--backends``: one private redis-server; a private 3-master + 3-replica Redis Cluster."""
COMPILED_TREE = REPO / "build" / "compiled"
BUILDS = ("pure", "compiled", "both")
"""``--build``: the source tree; ``build/compiled/`` (mypyc); both, alternating."""


@dataclass
class Options:
    """Command-line options."""

    duration: int
    repeat: int
    connections: int
    threads: int
    warmup: int
    batch_size: int
    drain_timeout: int
    soak: int | None
    scaling: bool
    profile: bool
    pin: bool
    load: str
    json_path: Path | None
    keep_logs: bool
    backends: tuple[str, ...] = ("single",)
    build: str | None = None
    """``--build`` as given; None: compiled when build/compiled/ is up to date, else pure."""


def parse_backends(words: list[str]) -> tuple[str, ...]:
    """``--backends`` words (separated by spaces or commas) -> the backends, in the order
    given, each once; ValueError naming the word that is not one of ``BACKENDS``."""
    out: list[str] = []
    for word in (w.strip() for item in words for w in item.split(",")):
        if not word:
            continue
        if word not in BACKENDS:
            raise ValueError(f"unknown backend {word!r}: choose from {', '.join(BACKENDS)}")
        if word not in out:
            out.append(word)
    if not out:
        raise ValueError(f"no backend given: choose from {', '.join(BACKENDS)}")
    return tuple(out)


def parse_args(argv: list[str] | None) -> Options:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Router vs bare aiohttp: throughput, latency, CPU, RSS, delivery, zero loss.",
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per load run (15)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measured runs per server and scenario, alternating baseline and router; the "
        "best run is reported (use 3 on a shared machine)",
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per server (2)")
    parser.add_argument("--batch-size", type=int, default=100, help="events per batch (100)")
    parser.add_argument("--quick", action="store_true", help="5 s runs, 1 s warm-up")
    parser.add_argument(
        "--drain-timeout", type=int, default=600, help="max seconds to wait for the queues (600)"
    )
    parser.add_argument(
        "--soak",
        type=int,
        metavar="SECONDS",
        help="instead of the scenarios: single events for SECONDS on one process with its "
        "workers, RSS sampled every 10 s (use 300 for the 5-minute target)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="instead of the scenarios: single events on `router serve --processes 1`, then 2, "
        "unpinned, then a worker drains both runs (zero-loss check)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile ingest and a worker with py-spy"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--load", choices=["auto", "wrk", "python"], default="auto", help="load generator"
    )
    parser.add_argument(
        "--json",
        default=str(RESULTS / "latest.json"),
        help="where to write the JSON results ('' for nowhere)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["single"],
        metavar="BACKEND",
        help="run the scenarios on each: single (one redis-server, the default), cluster "
        "(3 masters + 3 replicas); several are printed side by side",
    )
    parser.add_argument(
        "--build",
        choices=BUILDS,
        help="the router's build: pure (the source tree), compiled (build/compiled/, make "
        "compiled), both (the ingest scenarios alternate the two with the baseline; printed "
        "side by side); default: compiled when build/compiled/ is up to date, else pure",
    )
    args = parser.parse_args(argv)
    try:
        backends = parse_backends(args.backends)
    except ValueError as exc:
        parser.error(str(exc))
    if backends != ("single",) and (args.soak or args.scaling):
        parser.error("--backends applies to the scenarios, not to --soak or --scaling")
    if args.build == "both" and (args.soak or args.scaling):
        parser.error("--build both applies to the scenarios, not to --soak or --scaling")
    duration, warmup = (5, 1) if args.quick else (args.duration, args.warmup)
    return Options(
        duration=duration,
        repeat=max(1, args.repeat),
        connections=args.connections,
        threads=args.threads,
        warmup=warmup,
        batch_size=args.batch_size,
        drain_timeout=args.drain_timeout,
        soak=args.soak,
        scaling=args.scaling,
        profile=args.profile,
        pin=not args.no_pin,
        load=args.load,
        json_path=Path(args.json) if args.json else None,
        keep_logs=args.keep_logs,
        backends=backends,
        build=args.build,
    )


def compiled_state() -> tuple[bool, str]:
    """Whether ``build/compiled/`` is there and up to date with the sources, and why not:
    asks make about its stamp (``make -q build/compiled/.built``, the rule ``make run``
    rebuilds by), so both agree on what "up to date" means."""
    if not (COMPILED_TREE / ".built").exists():
        return False, "no build/compiled/ (make compiled)"
    make = shutil.which("make")
    if make is None:
        return False, "make is not installed: cannot tell whether build/compiled/ is up to date"
    done = subprocess.run(
        [make, "-q", "-s", "--no-print-directory", "build/compiled/.built"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        return True, "build/compiled/ is up to date"
    if done.returncode == 1:
        return False, "build/compiled/ is older than the sources (make compiled)"
    return False, f"make could not tell whether build/compiled/ is up to date ({done.returncode})"


def choose_builds(choice: str | None, compiled: tuple[bool, str]) -> tuple[tuple[str, ...], str]:
    """The builds to measure, in order (the last runs every phase that is not alternated),
    and the line saying why; ValueError when an explicit choice needs a compiled build that
    is missing or stale. ``compiled`` is ``compiled_state()``."""
    fresh, why = compiled
    if choice is None:
        if fresh:
            return ("compiled",), f"build: compiled ({why}; --build pure or both to change)"
        return ("pure",), f"build: pure ({why}; --build compiled or both to change)"
    if choice != "pure" and not fresh:
        raise ValueError(f"--build {choice}: {why}")
    if choice == "both":
        return ("pure", "compiled"), (
            "build: both, alternating in each ingest run (pure, compiled; delivery by a "
            "compiled worker)"
        )
    return (choice,), f"build: {choice} (--build {choice})"


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text -> {name: [(labels, value)]}."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        out.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return out


def metric_sum(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **want: str
) -> int:
    """Sum of a counter over the series whose labels include ``want``."""
    return int(
        sum(
            value
            for labels, value in metrics.get(name, [])
            if all(labels.get(k) == v for k, v in want.items())
        )
    )


@dataclass
class Bench:
    """The run's processes, ports and results."""

    opts: Options
    procs: Processes
    tmp: Path
    sut_cpus: set[int] | None = None
    aux_cpus: set[int] | None = None
    redis_port: int = 0
    receivers_port: int = 0
    redis_proc: Proc | None = None
    cluster: RedisCluster | None = None
    backend: str = "single"
    runs: dict[str, BackendRun] = field(default_factory=dict)
    builds: tuple[str, ...] = ("pure",)
    """``--build``: the builds measured; the last one runs the phases that do not alternate."""
    hook_secret: str = ""
    wrk: str | None = None
    in_event_consent: bool = True
    scenarios: list[Scenario] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    delivery_rate: float | None = None
    soak: dict[str, Any] | None = None
    scaling: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    audit_dropped: dict[str, int] = field(default_factory=dict)
    """``router_audit_dropped_total`` summed over a build's ingest runs: audit decisions the
    writer could not keep (a router that keeps up under a saturating load drops none)."""
    meta: dict[str, Any] = field(default_factory=dict)
    _runs: int = 0

    # -- infrastructure -------------------------------------------------------------------

    def pin_layout(self) -> None:
        """System under test on CPU 0, everything else on the other CPUs."""
        cpus = sorted(os.sched_getaffinity(0))
        if self.opts.pin and len(cpus) >= 2:
            self.sut_cpus, self.aux_cpus = {cpus[0]}, set(cpus[1:])
            aux = ",".join(str(c) for c in cpus[1:])
            print(
                f"pinning: system under test (router / worker / baseline) on CPU {cpus[0]}; "
                f"load generator, Redis, receivers, py-spy on CPU {aux}"
            )
        else:
            print(f"pinning: off ({len(cpus)} CPU(s)); every process shares every CPU")

    def start_redis(self) -> None:
        """A private redis-server on a free port, AOF on with fsync every second."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.redis_port = free_port()
        data = self.tmp / "redis"
        data.mkdir()
        argv = [
            exe,
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        self.redis_proc = self.procs.start("redis", argv, cpus=self.aux_cpus)
        wait_port(self.redis_port, self.redis_proc)
        version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        self.meta["redis"] = next((v[2:] for v in version if v.startswith("v=")), "?")
        print(
            f"redis-server {self.meta['redis']}: private, 127.0.0.1:{self.redis_port}, "
            f"dir {data}, appendonly yes, appendfsync everysec (an acknowledged event is at "
            f"most ~1 s from disk), no RDB snapshots"
        )

    def start_cluster(self) -> None:
        """A private 3-master + 3-replica Redis Cluster, the same persistence as the single
        server, its nodes on the auxiliary CPUs."""
        directory = self.tmp / "cluster"
        self.cluster = RedisCluster(directory, extra_args=("--appendfsync", "everysec"))
        self.cluster.start()
        for node in self.cluster.nodes:
            if self.aux_cpus and node.process is not None:
                os.sched_setaffinity(node.process.pid, self.aux_cpus)
        print(
            f"redis cluster: private, 3 masters + 3 replicas on ports "
            f"{', '.join(str(n.port) for n in self.cluster.nodes)}, dir {directory}, "
            "appendonly yes, appendfsync everysec; every node shares the same CPUs"
        )

    def stop_backend(self) -> None:
        """Stop the private redis-server or cluster of the current backend."""
        if self.redis_proc is not None:
            self.procs.stop(self.redis_proc)
            self.redis_proc = None
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def redis_url(self) -> str:
        """The router's ``ROUTER_REDIS_URL`` for the current backend."""
        if self.cluster is not None:
            return self.cluster.url
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def redis_cpu_seconds(self) -> float:
        """CPU time used so far by the Redis process(es) of the current backend."""
        if self.cluster is not None:
            return sum(
                cpu_seconds(n.process.pid) for n in self.cluster.nodes if n.process is not None
            )
        return self.redis_proc.cpu_seconds() if self.redis_proc else 0.0

    def client(self) -> redis.Redis | redis.RedisCluster:
        """A client of the current backend (single-key commands only)."""
        if self.cluster is not None:
            return redis.RedisCluster(
                host="127.0.0.1", port=self.cluster.nodes[0].port, socket_timeout=30
            )
        return redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=30)

    def start_receivers(self) -> None:
        """The fake destinations (one process)."""
        self.hook_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.receivers_port = free_port()
        proc = self.procs.start(
            "receivers",
            [
                sys.executable,
                "-m",
                "bench.receivers",
                "--port",
                str(self.receivers_port),
                "--secret",
                self.hook_secret,
                "--amplitude-key",
                AMPLITUDE_KEY,
            ],
            cpus=self.aux_cpus,
            cwd=REPO,
        )
        wait_http(f"http://127.0.0.1:{self.receivers_port}/stats", proc)
        print(
            f"receivers on 127.0.0.1:{self.receivers_port}: batching webhook (hook-batch, "
            f"batch_size 500), fake Amplitude /2/httpapi (batch_size 1000), ads-hook"
        )

    def receiver_stats(self) -> dict[str, dict[str, Any]]:
        """What each fake destination received."""
        status, body = http_get(f"http://127.0.0.1:{self.receivers_port}/stats")
        if status != 200:
            raise RuntimeError(f"receivers' /stats answered {status}")
        data: dict[str, dict[str, Any]] = json.loads(body)
        return data

    def reset_receivers(self) -> None:
        """Forget what the receivers counted."""
        http_post(f"http://127.0.0.1:{self.receivers_port}/reset", b"", {})

    @property
    def build(self) -> str:
        """The build of the phases that do not alternate builds (delivery, profile, soak)."""
        return self.builds[-1]

    def router_name(self, build: str) -> str:
        """The router of ``build`` in notes and tables: ``router`` when one build is measured,
        else the build's name."""
        return build if len(self.builds) > 1 else "router"

    def router_env(self, build: str | None = None) -> dict[str, str]:
        """The router's environment: private Redis, receivers' URLs, quiet logs; the
        compiled build's tree first on ``PYTHONPATH`` for that build."""
        base = f"http://127.0.0.1:{self.receivers_port}"
        env: dict[str, str] = {}
        if (build or self.build) == "compiled":
            path = os.environ.get("PYTHONPATH")
            env["PYTHONPATH"] = f"{COMPILED_TREE}{os.pathsep}{path}" if path else str(COMPILED_TREE)
        return env | {
            "ROUTER_REDIS_URL": self.redis_url(),
            "ROUTER_LOG_LEVEL": "WARNING",
            "BENCH_WRITE_KEY": WRITE_KEY,
            "BENCH_HOOK_URL": f"{base}/hook/hook-batch",
            "BENCH_ADS_URL": f"{base}/hook/ads-hook",
            "BENCH_AMPLITUDE_URL": f"{base}/2/httpapi",
            "BENCH_HOOK_SECRET": self.hook_secret,
            "BENCH_AMPLITUDE_KEY": AMPLITUDE_KEY,
        }

    def router_command(self) -> list[str]:
        """``.venv/bin/router`` next to this interpreter, else ``python -P -m router.cli``
        (``-P``: the working directory does not come before ``PYTHONPATH``)."""
        exe = Path(sys.executable).parent / "router"
        return [str(exe)] if exe.exists() else [sys.executable, "-P", "-m", "router.cli"]

    def start_router(
        self, name: str, *, workers: bool, processes: int = 1, build: str | None = None
    ) -> tuple[Proc, int]:
        """``router serve --config bench/routing.yaml --port P [--no-workers] [--processes N]``
        in ``build`` (default: the build of the phases that do not alternate); fails unless
        its start-up line names that build."""
        build = build or self.build
        port = free_port()
        argv = [
            *self.router_command(),
            "serve",
            "--config",
            str(ROUTING),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if not workers:
            argv.append("--no-workers")
        if processes > 1:
            argv += ["--processes", str(processes)]
        env = self.router_env(build)
        proc = self.procs.start(name, argv, env=env, cpus=self.sut_cpus, cwd=REPO)
        wait_http(f"http://127.0.0.1:{port}/readyz", proc)
        started = [line for line in proc.tail(200).splitlines() if "router listening" in line]
        if not started or f"; {build} build)" not in started[-1]:
            raise RuntimeError(f"{name} was to run the {build} build:\n{proc.tail()}")
        return proc, port

    def start_worker(self, name: str) -> Proc:
        """``router worker --config bench/routing.yaml``, in the build of the phases that do
        not alternate."""
        argv = [*self.router_command(), "worker", "--config", str(ROUTING)]
        return self.procs.start(name, argv, env=self.router_env(), cpus=self.sut_cpus, cwd=REPO)

    def start_baseline(self) -> tuple[Proc, int]:
        """The bare aiohttp handler (uvloop, one process)."""
        port = free_port()
        argv = [sys.executable, "-m", "bench.baseline", "--port", str(port)]
        proc = self.procs.start("baseline", argv, cpus=self.sut_cpus, cwd=REPO)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        return proc, port

    def accepted(self, port: int) -> int:
        """``router_events_accepted_total`` of a router process."""
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return metric_sum(parse_metrics(body.decode()), "router_events_accepted_total")

    def settled_accepted(self, port: int, timeout_s: float = 60.0) -> int:
        """The accepted count once it stops moving: requests the load generator gave up on
        at the end of a run may still be in the router, and they count once enqueued."""
        deadline = time.monotonic() + timeout_s
        last, stable_since = self.accepted(port), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            now_count = self.accepted(port)
            if now_count != last:
                last, stable_since = now_count, time.monotonic()
            elif time.monotonic() - stable_since >= 1.0:
                return last
        self.notes.append(f"the accepted count on port {port} still moved after {timeout_s:g}s")
        return last

    def count_audit_dropped(self, port: int, build: str, label: str) -> None:
        """Add a router's ``router_audit_dropped_total`` (read after its load) to its build's
        count, with a note when it dropped any."""
        _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        dropped = metric_sum(parse_metrics(body.decode()), "router_audit_dropped_total")
        self.audit_dropped[build] = self.audit_dropped.get(build, 0) + dropped
        if dropped:
            self.notes.append(
                f"{label} ({build}): the audit writer dropped {dropped:,} decisions "
                "(router_audit_dropped_total): it did not keep up"
            )

    def skipped(self, port: int, destination: str) -> int:
        """``router_events_skipped_total`` at ingest for one destination."""
        _, body = http_get(f"http://127.0.0.1:{port}/metrics")
        return metric_sum(
            parse_metrics(body.decode()),
            "router_events_skipped_total",
            destination=destination,
            stage="ingest",
        )

    # -- consent --------------------------------------------------------------------------

    def probe_stored_consent(self, port: int) -> None:
        """Store the user's consent with ``POST /v1/consent`` if the router has it.

        When it does not exist yet (404), the events carry the same choice in
        ``context.consent.categoryPreferences`` instead.
        """
        # The body follows router/privacy.py: {"userId"?, "anonymousId"?, "categories"}.
        # While the endpoint did not exist (404), the fallback below put the same choice in
        # the events; it stays for routers built before it.
        body = json.dumps(
            {
                "userId": payload.USER_ID,
                "anonymousId": payload.ANONYMOUS_ID,
                "categories": payload.STORED_CONSENT,
                "source": "bench",
            }
        ).encode()
        status, answer = http_post(
            f"http://127.0.0.1:{port}/v1/consent",
            body,
            {
                "Content-Type": "application/json",
                "Authorization": payload.auth_header(WRITE_KEY),
            },
        )
        if 200 <= status < 300:
            self.in_event_consent = False
            message = "stored with POST /v1/consent (the events carry no consent of their own)"
        else:
            self.in_event_consent = True
            detail = answer[:200].decode(errors="replace")
            message = (
                f"TODO: POST /v1/consent answered {status} ({detail}); the stored-consent API "
                "is not there yet, so the events carry the consent in "
                "context.consent.categoryPreferences (C0001, C0002 granted; C0004 denied)"
            )
        print(f"consent: {message}")
        self.meta["consent"] = message

    # -- load -----------------------------------------------------------------------------

    def workloads(self) -> tuple[payload.Workload, payload.Workload, payload.Workload]:
        """Single events, batches of one person's event (consent where the probe decided),
        batches of distinct people (consent in each event)."""
        single = payload.single(WRITE_KEY, in_event_consent=self.in_event_consent)
        batch = payload.batch(
            WRITE_KEY, size=self.opts.batch_size, in_event_consent=self.in_event_consent
        )
        distinct = payload.distinct_batch(WRITE_KEY, size=self.opts.batch_size)
        return single, batch, distinct

    def drive(self, workload: payload.Workload, port: int, seconds: int, label: str) -> LoadResult:
        """One load run (wrk, or the Python fallback)."""
        self._runs += 1
        run_id = f"r{payload.run_tag(int(time.time()) * 1000 + self._runs)}{label}"
        base = f"http://127.0.0.1:{port}"
        if self.wrk is not None:
            return run_wrk(
                self.wrk,
                self.procs,
                workload,
                base,
                connections=self.opts.connections,
                threads=self.opts.threads,
                duration_s=seconds,
                run_id=run_id,
                workdir=self.tmp,
                cpus=self.aux_cpus,
            )
        return run_python_load(
            self.procs,
            workload,
            base,
            connections=self.opts.connections,
            processes=max(2, len(self.aux_cpus or {0, 1})),
            duration_s=seconds,
            run_id=run_id,
            workdir=self.tmp,
            cpus=self.aux_cpus,
        )

    def measure(
        self,
        proc: Proc,
        port: int,
        workload: payload.Workload,
        label: str,
        *,
        router: bool,
        warm: bool = True,
        build: str = "",
    ) -> Measured:
        """Warm up, then one measured run with the server's CPU, peak RSS and accepted count."""
        if warm and self.opts.warmup:
            self.drive(workload, port, self.opts.warmup, f"{label}-warm")
        # Start from an idle server: the warm-up's last requests may still be in the router.
        before_events = self.settled_accepted(port) if router else 0
        time.sleep(0.2)
        cpu0 = proc.cpu_seconds()
        busy0 = cpus_busy_seconds(self.sut_cpus) if self.sut_cpus else 0.0
        redis0 = self.redis_cpu_seconds()
        result = self.drive(workload, port, self.opts.duration, label)
        # Counted at the end of the load window: what the router accepted during it.
        cpu = proc.cpu_seconds() - cpu0
        foreign = (
            cpus_busy_seconds(self.sut_cpus) - busy0 - cpu if self.sut_cpus is not None else None
        )
        redis_cpu = self.redis_cpu_seconds() - redis0
        if router:
            events = self.accepted(port) - before_events
        else:
            events = result.ok_requests * workload.events_per_request
        measured = Measured(
            load=result,
            events=events,
            cpu_s=cpu,
            peak_rss_mb=proc.peak_rss_mb(),
            redis_cpu_s=redis_cpu if router else 0.0,
            foreign_cpu_s=foreign,
        )
        problems = []
        if measured.foreign_share is not None and measured.foreign_share > NOISE_SHARE:
            problems.append(
                f"other processes used {measured.foreign_share:.0%} of the server's core: "
                "figures are pessimistic"
            )
        elif measured.cpu_share < SATURATED_SHARE:
            problems.append(
                f"the server used only {measured.cpu_share:.0%} of its core: the load "
                "generator or the network stack limited this run"
            )
        if result.non_2xx:
            problems.append(f"{result.non_2xx} non-2xx")
        if result.socket_errors or result.timeouts:
            problems.append(f"{result.socket_errors} socket errors, {result.timeouts} timeouts")
        who = self.router_name(build) if router else "baseline"
        extra = f" ({'; '.join(problems)})" if problems else ""
        print(
            f"  {who:<8} {label:<22} {measured.ok_rps:>9,.0f} req/s  "
            f"{measured.events_per_s:>9,.0f} events/s  p50 {result.p50_ms:.2f} ms  "
            f"p99 {result.p99_ms:.2f} ms  CPU {measured.cpu_ms_per_1k:.1f} ms/1k "
            f"({measured.cpu_share:.0%} of a core)  "
            f"peak RSS {measured.peak_rss_mb:.0f} MB{extra}",
            flush=True,
        )
        measured.problems = problems
        return measured

    def note(self, who: str, label: str, measured: Measured | None) -> None:
        """Carry a reported run's problems (noise, errors) into the summary's notes."""
        if measured is not None and measured.problems:
            if len(self.opts.backends) > 1:
                who = f"[{self.backend}] {who}"
            self.notes.append(f"{who} {label}: {', '.join(measured.problems)}")

    # -- delivery -------------------------------------------------------------------------

    def backlog(self) -> tuple[int, int]:
        """(entries in the destination queues, entries pending in their groups)."""
        client = self.client()
        try:
            length = pending = 0
            for destination in EXPECTED:
                stream = queue_key(destination)
                length += int(client.xlen(stream))
                with contextlib.suppress(redis.ResponseError):
                    pending += int(client.xpending(stream, "delivery")["pending"])
            return length, pending
        finally:
            client.close()

    def dead_letters(self, destination: str) -> int:
        """Entries in a destination's dead-letter stream."""
        client = self.client()
        try:
            return int(client.xlen(dlq_key(destination)))
        finally:
            client.close()

    def drain(self, label: str, worker: Proc | None) -> tuple[bool, float, dict[str, Any]]:
        """Wait until the queues are empty and the receivers stop counting.

        While waiting, samples the receivers' total and the worker's CPU every 0.25 s; the
        steady window (from the first sample with deliveries to the last sample that grew)
        gives the delivery rate and the CPU per event, without the worker's start-up.
        """
        start = time.monotonic()
        samples: list[tuple[float, int, float]] = []
        stable_since: float | None = None
        last_total = -1
        last_print = start
        drained = False
        while time.monotonic() - start < self.opts.drain_timeout:
            length, pending = self.backlog()
            stats = self.receiver_stats()
            total = sum(int(s["events"]) for s in stats.values())
            now = time.monotonic()
            cpu = worker.cpu_seconds() if worker is not None and worker.alive() else 0.0
            samples.append((now, total, cpu))
            if worker is not None and not worker.alive():
                raise RuntimeError(f"{worker.name} exited:\n{worker.tail()}")
            if length == 0 and pending == 0 and total == last_total:
                stable_since = stable_since or now
                if now - stable_since >= 1.0:
                    drained = True
                    break
            else:
                stable_since = None
            last_total = total
            if now - last_print >= 5:
                print(
                    f"  {label}: {total:,} events delivered, backlog {length:,} "
                    f"(+{pending:,} pending) after {now - start:.0f}s",
                    flush=True,
                )
                last_print = now
            time.sleep(0.25)
        waited = time.monotonic() - start
        window: dict[str, Any] = {}
        growing = [i for i in range(1, len(samples)) if samples[i][1] > samples[i - 1][1]]
        if growing:
            first = max(0, growing[0])  # first sample that already had deliveries
            last = growing[-1]
            t0, n0, c0 = samples[first]
            t1, n1, c1 = samples[last]
            if t1 > t0 and n1 > n0:
                window = {
                    "events": n1 - n0,
                    "seconds": t1 - t0,
                    "events_per_s": (n1 - n0) / (t1 - t0),
                    "cpu_ms_per_1k": (c1 - c0) * 1e6 / (n1 - n0) if worker is not None else None,
                }
        return drained, waited, window

    def check(
        self, label: str, accepted: int, drained: bool, waited: float, window: dict[str, Any]
    ) -> Delivery:
        """Compare the accepted events with what each destination received."""
        stats = self.receiver_stats()
        checks = []
        for destination, wanted in EXPECTED.items():
            got = stats.get(destination, {})
            first, last = got.get("first"), got.get("last")
            unique = int(got.get("unique", 0))
            rate = unique / (last - first) if first and last and last > first else None
            checks.append(
                DestinationCheck(
                    destination=destination,
                    expected=accepted if wanted else 0,
                    received_unique=unique,
                    received_total=int(got.get("events", 0)),
                    dead_lettered=self.dead_letters(destination),
                    rejected_requests=int(got.get("rejected", 0)),
                    events_per_s=rate,
                )
            )
        return Delivery(
            build=self.build,
            label=label,
            accepted=accepted,
            drained=drained,
            drain_s=waited,
            checks=checks,
            events_per_s=window.get("events_per_s"),
            cpu_ms_per_1k=window.get("cpu_ms_per_1k"),
        )

    def clear_dead_letters(self) -> None:
        """Start a phase with no dead letters (they would be counted against it)."""
        client = self.client()
        try:
            for destination in EXPECTED:
                client.delete(dlq_key(destination))
        finally:
            client.close()

    # -- phases ---------------------------------------------------------------------------

    def run_scenarios(self) -> None:
        """Ingest (baseline vs router), delivery by a worker, one process with workers."""
        baseline, baseline_port = self.start_baseline()
        single, batch, distinct = self.workloads()
        print(
            f"bodies: single {len(single.sample_body):,} bytes; batch of {self.opts.batch_size}: "
            f"{len(batch.sample_body):,} bytes (one person's event repeated; distinct people: "
            f"{len(distinct.sample_body):,} bytes)"
        )
        accepted_total = 0
        for name, workload in (
            ("single /v1/track", single),
            (f"batch{self.opts.batch_size} /v1/batch", batch),
            (f"distinct{self.opts.batch_size} /v1/batch", distinct),
        ):
            print(f"\n== ingest: {name}", flush=True)
            # One router per build (--build both: the idle one waits on the same core), each
            # measured after the baseline in every attempt, the builds' order alternating.
            routers: dict[str, tuple[Proc, int]] = {}
            try:
                for build in self.builds:
                    routers[build] = self.start_router(
                        f"router-{workload.name}" + ("" if len(self.builds) == 1 else f"-{build}"),
                        workers=False,
                        build=build,
                    )
                base_runs: list[Measured] = []
                router_runs: dict[str, list[Measured]] = {build: [] for build in self.builds}
                for attempt in range(self.opts.repeat):
                    warm = attempt == 0
                    base_runs.append(
                        self.measure(
                            baseline,
                            baseline_port,
                            workload,
                            workload.name,
                            router=False,
                            warm=warm,
                        )
                    )
                    order = self.builds if attempt % 2 == 0 else self.builds[::-1]
                    for build in order:
                        router, port = routers[build]
                        router_runs[build].append(
                            self.measure(
                                router,
                                port,
                                workload,
                                workload.name,
                                router=True,
                                warm=warm,
                                build=build,
                            )
                        )
                base = max(base_runs, key=lambda m: m.ok_rps)
                self.note("baseline", workload.name, base)
                for build, (_, port) in routers.items():
                    measured = max(router_runs[build], key=lambda m: m.ok_rps)
                    self.note(self.router_name(build), workload.name, measured)
                    accepted = self.settled_accepted(port)
                    accepted_total += accepted
                    self.count_audit_dropped(port, build, name)
                    denied = self.skipped(port, "ads-hook")
                    if denied != accepted:
                        self.notes.append(
                            f"{name} ({build}): ads-hook skipped at ingest {denied:,} of "
                            f"{accepted:,} accepted events (expected all: advertising is denied)"
                        )
                    self.scenarios.append(
                        Scenario(
                            name,
                            workload.events_per_request,
                            measured,
                            base,
                            router_runs=router_runs[build],
                            baseline_runs=base_runs,
                            build=build,
                        )
                    )
            finally:
                for router, _ in routers.values():
                    self.procs.stop(router)
        self.procs.stop(baseline)

        print(
            f"\n== delivery: one `router worker` ({self.build} build) drains "
            f"{accepted_total:,} accepted events"
        )
        worker = self.start_worker("worker")
        try:
            drained, waited, window = self.drain("delivery", worker)
            delivery = self.check(
                "delivery (router worker)", accepted_total, drained, waited, window
            )
            delivery.peak_rss_mb = worker.peak_rss_mb()
        finally:
            self.procs.stop(worker)
        self.delivery_rate = delivery.events_per_s
        self.deliveries.append(delivery)
        print(delivery_table(delivery))

        base_single = self.scenarios[0].baseline if self.scenarios else None
        for build in self.builds:
            print(
                f"\n== one process with its workers (router serve, {build} build): single events",
                flush=True,
            )
            self.reset_receivers()
            self.clear_dead_letters()
            router, port = self.start_router(
                "router-serve-workers" + ("" if len(self.builds) == 1 else f"-{build}"),
                workers=True,
                build=build,
            )
            try:
                measured = self.measure(
                    router, port, single, "single+workers", router=True, build=build
                )
                self.note(self.router_name(build), "single+workers", measured)
                accepted = self.settled_accepted(port)
                self.count_audit_dropped(port, build, "single+workers")
                drained, waited, window = self.drain("serve+workers", router)
                delivery = self.check(
                    "one process (serve + workers)", accepted, drained, waited, {}
                )
                delivery.build = build
                delivery.peak_rss_mb = router.peak_rss_mb()
                delivery.notes.append(
                    "ingest and delivery share one process and one core; CPU ms/1k in the "
                    "table covers both during the load window"
                )
            finally:
                self.procs.stop(router)
            self.scenarios.append(
                Scenario("single + workers (1 proc)", 1, measured, base_single, build=build)
            )
            self.deliveries.append(delivery)
            print(delivery_table(delivery))

    def run_backend(self, backend: str) -> None:
        """The scenarios on the current backend (and ``--profile`` on the first); with
        several backends, each one's results are kept apart for the side-by-side table, the
        first one's stay the main table and every drain counts for the zero-loss verdict."""
        first = not self.runs
        earlier = self.deliveries
        self.scenarios, self.deliveries, self.delivery_rate = [], [], None
        try:
            self.run_scenarios()
            if first and self.opts.profile:
                self.run_profile()
        finally:
            if len(self.opts.backends) > 1:
                for delivery in self.deliveries:
                    delivery.label += f" [{backend}]"
            self.runs[backend] = BackendRun(
                backend, self.scenarios, list(self.deliveries), self.delivery_rate
            )
            self.deliveries = earlier + self.deliveries
            main = next(iter(self.runs.values()))
            self.scenarios, self.delivery_rate = main.scenarios, main.delivery_rate

    def run_profile(self) -> None:
        """py-spy on the ingest of single events and of batches of distinct people, then on a
        worker draining them."""
        if profile.py_spy() is None:
            print("\n== profile: py-spy is not installed (.venv/bin/pip install py-spy); skipped")
            return
        single, _, distinct = self.workloads()
        print("\n== profile (py-spy, a separate run: its figures are not in the table)", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        for workload, name, file in (
            (single, "single /v1/track", "profile-ingest.txt"),
            (distinct, "distinct100 /v1/batch", "profile-ingest-distinct100.txt"),
        ):
            router, port = self.start_router("router-profile", workers=False)
            try:
                self.drive(workload, port, self.opts.warmup or 1, "profile-warm")
                out = RESULTS / file
                spy = profile.start(self.procs, router.pid, out, self.opts.duration, self.aux_cpus)
                self.drive(workload, port, self.opts.duration, "profile")
                profile.finish(self.procs, spy, self.opts.duration)
            finally:
                self.procs.stop(router)
            self._summarize(f"ingest, {name} (router serve --no-workers)", out)

        worker = self.start_worker("worker-profile")
        try:
            time.sleep(0.2)
            out = RESULTS / "profile-worker.txt"
            spy = profile.start(self.procs, worker.pid, out, self.opts.duration, self.aux_cpus)
            self.drain("profile-worker", worker)
            profile.finish(self.procs, spy, self.opts.duration)
        finally:
            self.procs.stop(worker)
        self._summarize("delivery (router worker draining the profiled events)", out)

    def _summarize(self, title: str, path: Path) -> None:
        if not path.exists():
            print(f"  {title}: py-spy wrote nothing")
            return
        samples, by_self, by_total = profile.summarize(path)
        text = profile.render(title, samples, by_self, by_total)
        self.profiles[title] = text
        print(text)
        print(f"  (collapsed stacks: {path.relative_to(REPO)}; flamegraph.pl or speedscope)")

    def run_soak(self, seconds: int) -> None:
        """Single events for ``seconds`` on one process with its workers; RSS every 10 s."""
        single, _, _ = self.workloads()
        print(f"\n== soak: single events for {seconds}s, router serve with workers", flush=True)
        router, port = self.start_router("router-soak", workers=True)
        try:
            self.drive(single, port, self.opts.warmup or 1, "soak-warm")
            samples: list[tuple[float, float]] = []
            backlog: list[tuple[float, int, int, int]] = []
            start = time.monotonic()
            loader = self._background_load(single, port, seconds)
            try:
                while loader.is_alive():
                    time.sleep(
                        min(10.0, max(0.1, start + 10 * (len(samples) + 1) - time.monotonic()))
                    )
                    if not router.alive():
                        raise RuntimeError(f"router exited:\n{router.tail()}")
                    rss = router.rss_mb()
                    elapsed = time.monotonic() - start
                    if elapsed <= seconds + 1:
                        samples.append((elapsed, rss))
                        queued, _ = self.backlog()
                        delivered = sum(int(c["events"]) for c in self.receiver_stats().values())
                        redis_mb = self.redis_memory_mb()
                        backlog.append((elapsed, queued, delivered, redis_mb))
                        print(
                            f"  t={elapsed:5.0f}s  RSS {rss:7.1f} MB  delivered {delivered:,}  "
                            f"queued {queued:,}  Redis used_memory {redis_mb:,} MB",
                            flush=True,
                        )
            finally:
                loader.join()
            result = loader.result
            accepted = self.settled_accepted(port)
            drained, waited, _ = self.drain("soak", router)
            delivery = self.check("soak (serve + workers)", accepted, drained, waited, {})
            delivery.peak_rss_mb = router.peak_rss_mb()
        finally:
            self.procs.stop(router)
        first = samples[0][1] if samples else 0.0
        last = samples[-1][1] if samples else 0.0
        peak = max((s[1] for s in samples), default=0.0)
        drift = (last - first) / first if first else None
        self.soak = {
            "seconds": seconds,
            "samples": samples,
            "first_mb": first,
            "last_mb": last,
            "max_mb": peak,
            "drift": drift,
            "max_drift": (peak - first) / first if first else None,
            "load": result.as_dict() if result else None,
            "accepted": accepted,
            "queue": [
                {"t": t, "queued": q, "delivered": d, "redis_used_memory_mb": m}
                for t, q, d, m in backlog
            ],
        }
        self.deliveries.append(delivery)
        if result is not None:
            print(
                f"soak: {result.ok_requests / result.duration_s:,.0f} req/s, "
                f"p99 {result.p99_ms:.2f} ms"
            )
        print(
            f"RSS: first sample {first:.1f} MB (t=10s), last {last:.1f} MB, max {peak:.1f} MB: "
            f"drift {0.0 if drift is None else drift:+.1%} (last vs first), "
            f"max {self.soak['max_drift'] or 0.0:+.1%}"
        )
        if len(backlog) >= 2 and backlog[-1][1] > backlog[0][1] + 1000:
            grew = backlog[-1][1] - backlog[0][1]
            rate = grew / (backlog[-1][0] - backlog[0][0])
            self.notes.append(
                f"soak: the delivery queues grew by {grew:,} entries ({rate:,.0f}/s): the "
                "in-process workers deliver slower than the same process ingests"
            )
        print(delivery_table(delivery))

    def run_scaling(self) -> None:
        """Single events on ``router serve --no-workers --processes N`` for N = 1, 2.

        Nothing is pinned (N processes need N cores; wrk shares them), so the figures are
        req/s and latency of the whole machine, not per core. The events both runs accepted
        (counted in the queue, since N processes have N ``/metrics``) are then drained by one
        worker and checked at the receivers.
        """
        self.sut_cpus = self.aux_cpus = None
        single, _, _ = self.workloads()
        print("\n== scaling: router serve --no-workers --processes N, every CPU shared", flush=True)
        for processes in (1, 2):
            router, port = self.start_router(
                f"router-p{processes}", workers=False, processes=processes
            )
            try:
                if self.opts.warmup:
                    self.drive(single, port, self.opts.warmup, f"p{processes}-warm")
                runs = [
                    self.drive(single, port, self.opts.duration, f"p{processes}")
                    for _ in range(self.opts.repeat)
                ]
            finally:
                self.procs.stop(router)
            best = max(runs, key=lambda r: r.ok_requests / r.duration_s)
            rps = best.ok_requests / best.duration_s
            self.scaling.append(
                {
                    "processes": processes,
                    "req_per_s": rps,
                    "p50_ms": best.p50_ms,
                    "p99_ms": best.p99_ms,
                    "non_2xx": best.non_2xx,
                    "runs": [r.as_dict() for r in runs],
                }
            )
            print(
                f"  --processes {processes}: {rps:,.0f} req/s  p50 {best.p50_ms:.2f} ms  "
                f"p99 {best.p99_ms:.2f} ms",
                flush=True,
            )
        accepted = self.queued_items("hook-batch")
        worker = self.start_worker("worker-scaling")
        try:
            drained, waited, window = self.drain("scaling", worker)
        finally:
            self.procs.stop(worker)
        delivery = self.check("scaling (serve --processes 1, 2)", accepted, drained, waited, window)
        self.deliveries.append(delivery)
        one, two = self.scaling[0]["req_per_s"], self.scaling[1]["req_per_s"]
        print(f"scaling: 2 processes {two:,.0f} req/s = {two / one:.2f} x 1 process ({one:,.0f})")
        print(delivery_table(delivery))

    def queued_items(self, destination: str) -> int:
        """Deliveries waiting in a destination's stream (an entry may hold several)."""
        client = self.client()
        count = 0
        try:
            start = "-"
            while True:
                entries = client.xrange(queue_key(destination), min=start, count=1000)
                for _, fields in entries:
                    raw = fields.get(b"b")
                    count += len(json.loads(raw)) if raw is not None else 1
                if len(entries) < 1000:
                    return count
                start = "(" + entries[-1][0].decode()
        finally:
            client.close()

    def redis_memory_mb(self) -> int:
        """Redis's ``used_memory`` in MB."""
        client = self.client()
        try:
            return int(client.info("memory")["used_memory"]) // (1024 * 1024)
        finally:
            client.close()

    def _background_load(self, workload: payload.Workload, port: int, seconds: int) -> _Loader:
        loader = _Loader(self, workload, port, seconds)
        loader.start()
        return loader


class _Loader:
    """A load run in a thread, so the main thread can sample RSS meanwhile."""

    def __init__(self, bench: Bench, workload: payload.Workload, port: int, seconds: int) -> None:
        import threading  # noqa: PLC0415 - only the soak needs a thread

        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(bench, workload, port, seconds), daemon=True
        )

    def _run(self, bench: Bench, workload: payload.Workload, port: int, seconds: int) -> None:
        try:
            self.result = bench.drive(workload, port, seconds, "soak")
        except BaseException as exc:  # reported by join
            self.error = exc

    def start(self) -> None:
        """Start the load."""
        self._thread.start()

    def is_alive(self) -> bool:
        """Whether the load still runs."""
        return self._thread.is_alive()

    def join(self) -> None:
        """Wait for the end of the load; re-raise its error."""
        self._thread.join()
        if self.error is not None:
            raise self.error


def _versions(wrk: str | None) -> dict[str, Any]:
    from importlib.metadata import version  # noqa: PLC0415

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        ),
    }
    for package in ("aiohttp", "uvloop", "redis", "msgspec"):
        with contextlib.suppress(Exception):
            info[package] = version(package)
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        info["wrk"] = (out.stdout or out.stderr).split(" [")[0].strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    return info


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    del frame
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run everything; exit 1 when the zero-loss check fails, 2 when the harness failed."""
    opts = parse_args(argv)
    try:
        builds, build_line = choose_builds(opts.build, compiled_state())
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="router-bench-"))
    procs = Processes(tmp)
    bench = Bench(opts, procs, tmp, builds=builds)
    bench.meta["builds"] = list(builds)
    error: str | None = None
    started = datetime.now(UTC)
    try:
        bench.wrk = None if opts.load == "python" else ensure_wrk()
        if bench.wrk is None and opts.load == "wrk":
            raise RuntimeError("wrk is not available (apt-get install -y wrk)")
        bench.meta.update(_versions(bench.wrk))
        tool = (
            f"wrk ({bench.meta.get('wrk', 'wrk')}), {opts.threads} threads, Lua script"
            if bench.wrk
            else "FALLBACK python aiohttp multi-process client (wrk unavailable)"
        )
        print(
            f"bench: {bench.meta['cpus']} CPU(s) {bench.meta['cpu_model']}, Python "
            f"{bench.meta['python']}, aiohttp {bench.meta.get('aiohttp')}, uvloop, commit "
            f"{bench.meta.get('commit', '?')}"
        )
        print(
            f"load: {tool}; {opts.connections} connections, {opts.duration}s per run after a "
            f"{opts.warmup}s warm-up, best of {opts.repeat} run(s); the same script for the "
            "baseline and the router"
        )
        print(build_line)
        load1, load5, _ = os.getloadavg()
        bench.meta["loadavg_at_start"] = [load1, load5]
        print(
            f"machine load average before the run: {load1:.2f} (1 min), {load5:.2f} (5 min); "
            "other processes on the server's core are reported per run"
        )
        bench.pin_layout()
        bench.start_receivers()
        for backend in opts.backends:
            if len(opts.backends) > 1:
                print(f"\n==== backend: {backend}", flush=True)
            bench.backend = backend
            if backend == "cluster":
                bench.start_cluster()
            else:
                bench.start_redis()
            try:
                bench.reset_receivers()
                probe, probe_port = bench.start_router("router-probe", workers=False)
                try:
                    bench.probe_stored_consent(probe_port)
                finally:
                    procs.stop(probe)
                if opts.soak:
                    bench.run_soak(opts.soak)
                elif opts.scaling:
                    bench.run_scaling()
                else:
                    bench.run_backend(backend)
            finally:
                bench.stop_backend()
    except (RuntimeError, OSError, redis.RedisError, json.JSONDecodeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"\nbench failed: {error}", file=sys.stderr)
    finally:
        procs.stop_all()

    _print_summary(bench)
    _write_json(bench, opts, started, error)
    if opts.keep_logs or error:
        print(f"logs: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if error:
        return 2
    return 0 if all(d.passed for d in bench.deliveries) else 1


def _print_summary(bench: Bench) -> None:
    if bench.scenarios:
        print("\n== results (server pinned to one core; req/s count 2xx answers)\n")
        print(table(bench.scenarios))
    if len(bench.builds) == 2 and bench.scenarios:
        first, second = bench.builds
        print(f"\n== builds side by side ({first}, {second}; the same runs as above)\n")
        runs = [
            BackendRun(
                build,
                [s for s in bench.scenarios if s.build == build],
                [d for d in bench.deliveries if d.build == build],
            )
            for build in bench.builds
        ]
        print(backends_table(runs))
        print()
        print(build_cpu_ratios(bench.scenarios, (first, second)))
    if len(bench.runs) > 1:
        print(
            "\n== backends side by side (every Redis node shares the machine's CPUs: this "
            "shows the cluster's overhead, not its scale-out)\n"
        )
        print(backends_table(list(bench.runs.values())))
    if bench.notes:
        print()
        for note in bench.notes:
            print(f"note: {note}")
    if bench.scenarios or bench.deliveries or bench.soak:
        drift = bench.soak["drift"] if bench.soak else None
        scenarios = [s for s in bench.scenarios if s.build in ("", bench.build)]
        rows = targets(
            scenarios,
            bench.deliveries,
            bench.delivery_rate,
            drift,
            bench.opts.connections,
            audit_dropped=bench.audit_dropped.get(bench.build),
        )
        print(f"\n== targets (printed, not asserted; {bench.build} build)\n")
        print(render_targets(rows))


def _write_json(bench: Bench, opts: Options, started: datetime, error: str | None) -> None:
    if opts.json_path is None:
        return
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "started": started.isoformat(),
        "error": error,
        "options": {k: str(v) for k, v in opts.__dict__.items()},
        "meta": bench.meta,
        "scenarios": [s.as_dict() for s in bench.scenarios],
        "deliveries": [d.as_dict() for d in bench.deliveries],
        "delivery_events_per_s": bench.delivery_rate,
        "soak": bench.soak,
        "scaling": bench.scaling,
        "backends": {name: run.as_dict() for name, run in bench.runs.items()},
        "profiles": bench.profiles,
        "notes": bench.notes,
    }
    opts.json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    with contextlib.suppress(ValueError):
        print(f"\nresults: {opts.json_path.resolve().relative_to(REPO)}")
