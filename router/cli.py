"""The ``router`` command line.

    router serve [--config PATH] [--host H] [--port P] [--no-workers] [--processes N]
    router worker [--config PATH]
    router check-config [PATH]
    router explain [--config PATH] --event FILE [--consent JSON] [--header 'Sec-GPC: 1'] [--json]
    router outbox DESTINATION [--config PATH] [--limit N]
    router dlq list DESTINATION [--limit N]
    router erase [ID...] [--user-id U] [--anonymous-id A] [--email E] [--config PATH]
    router datamap [--day YYYY-MM-DD] [--json]
    router inventory [--config PATH] [--json | --markdown]
    router audit verify
    router audit export
    router migrate [--dry-run]
    router audit query --after T [--destination D] [--subject ID] [--user-id U]
                       [--anonymous-id A] [--email E] [--json]
    router audit reindex
    router subject-report [--user-id U] [--anonymous-id A] [--email E] [--json]
    router keys rotate [--config PATH]
    router keys generate --id ID
    router migrate-subjects

``router erase`` does what ``POST /admin/erase`` does, directly against Redis (bare ids are
user ids and anonymous ids both), prints the receipt as JSON (hashes and counts only) and
records the erasure in the audit trail (actor ``cli``).

``router datamap`` prints what left for each destination on a day (UTC, default today): field
paths, personal-data kinds, events and bytes. ``router inventory`` prints the record of
processing: per destination the recipient, purpose, legal basis, stated retention, consent
required, what the data map says left in the last 30 days (categories, personal-data kinds,
hashed or tokenized fields), deletion support, last delivery, and flags (idle, unused
allowlist fields, undeclared personal data); ``--markdown`` is the list of recipients for a
privacy policy. ``router audit verify`` checks the hash chain of
the audit trail: exit 0 when intact, else 1 with the first bad record named and printed.
``router audit export`` prints every record as JSON lines (verifiable offline). ``router
migrate`` renames a single server's keys to the cluster-ready names (``router.queue.migrate``;
exit 1 when a key exists under both names).
``router audit query`` answers "did anything leave for this person after T?" from the audit
trail's subject index: exit 0 when nothing did, 1 when something did (listed), 2 on bad
arguments, 3 when Redis cannot be reached. ``router subject-report`` prints a person's subject
access report (``router.compliance.subject_report``).

Every command reads the routing file from ``--config``, else ``ROUTER_CONFIG``, else
``config/router.yaml``. Exit codes: 0 fine, 1 invalid configuration or input, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.core.explain import consent_context, explain
from router.core.outcomes import Rejection
from router.core.schema import WireEvent
from router.core.sealing import KeyRingError, Sealer, Undecryptable, new_key_entry
from router.core.signals import signals_from_headers
from router.edge.http import RouterRunner
from router.errors import ConfigError
from router.observability.logs import configure_logging
from router.queue.backend import connect
from router.queue.items import DLQ_ROLE, OUTBOX_ROLE, sealed_for
from router.queue.keys import dead_letter_id, dlq_key, outbox_key
from router.queue.streams import read_dead_letters
from router.routing import Routing, load_routing
from router.settings import Settings

if TYPE_CHECKING:
    from router.compliance.erasure import Identifiers


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "config", None):
        settings = settings.model_copy(update={"config": Path(args.config)})
    return settings


def _routing(settings: Settings) -> Routing:
    secret = settings.tokenize_key
    return load_routing(Path(settings.config), tokenize_secret=secret)


def _load(settings: Settings) -> Routing | None:
    """The routing file, or None after printing every problem in it."""
    try:
        return _routing(settings)
    except ConfigError as error:
        _print_problems(Path(settings.config), error)
        return None


def _sealer(settings: Settings) -> Sealer | None:
    """The key ring's sealer, or None after printing what is wrong with the ring."""
    try:
        return settings.sealer()
    except KeyRingError as error:
        print(str(error), file=sys.stderr)
        return None


def _print_problems(path: Path, error: ConfigError) -> None:
    print(f"{path}: {len(error.problems)} problem(s)", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the routing file; touch no network."""
    settings = _settings(args)
    path = Path(args.path) if args.path else Path(settings.config)
    try:
        routing = load_routing(
            path,
            tokenize_secret=(settings.tokenize_key),
        )
    except ConfigError as error:
        _print_problems(path, error)
        return 1
    print(
        f"{path}: OK ({len(routing.file.sources)} source(s), "
        f"{len(routing.destinations)} destination(s))"
    )
    return 0


def _run(coro: Any) -> Any:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, imported only where the loop starts
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        return asyncio.run(coro)
    return uvloop.run(coro)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP endpoint (and, unless --no-workers, the delivery workers)."""
    import signal  # noqa: PLC0415

    from aiohttp import web  # noqa: PLC0415 - keep CLI start-up light for the other commands

    from router.edge.app import create_app  # noqa: PLC0415
    from router.edge.tokens import tokens_of  # noqa: PLC0415
    from router.runtime import build_runtime  # noqa: PLC0415

    settings = _settings(args)
    updates: dict[str, Any] = {}
    if args.host:
        updates["host"] = args.host
    if args.port is not None:
        updates["port"] = args.port
    settings = settings.model_copy(update=updates)
    configure_logging(settings.log_level)
    routing = _load(settings)
    if routing is None:
        return 1
    try:
        tokens_of(settings)
        settings.sealer()
    except ValueError as error:
        print(str(error), file=sys.stderr)
        return 1
    if args.processes > 1:
        return _serve_processes(args, settings.host, settings.port)

    async def main() -> None:
        # SIGINT/SIGTERM set an event: the cleanup below then runs while every background task
        # still lives, so each stops by its own rules (the audit writer's last flush, the
        # enqueuer's last group). aiohttp's own handlers raise GracefulExit out of the loop
        # instead, and asyncio.run then cancels every task at once: buffered audit records
        # were lost.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        app = create_app(build_runtime(settings, routing, serve=True, workers=not args.no_workers))
        runner = RouterRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        _freeze_heap()
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            shutdown_timeout=settings.shutdown_timeout_s,
            reuse_port=args.reuse_port,
        )
        await site.start()
        print(
            f"router listening on http://{settings.host}:{settings.port} "
            f"({len(routing.destinations)} destination(s); {_walkers()}; {build_name()} build)",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C before the handlers are set
        _run(main())
    return 0


def _walkers() -> str:
    """Whether pip could build the native walkers and hashes (setup.py) or the pure ones run."""
    from consent import ids  # noqa: PLC0415
    from destinations import dlp  # noqa: PLC0415
    from router.core import paths  # noqa: PLC0415

    built = paths._native is not None and dlp._native is not None and ids._native is not None
    return "native walkers" if built else "pure-Python walkers: no C compiler when installed"


def build_name(module: ModuleType | None = None) -> str:
    """``"compiled"`` when the pure core runs as mypyc's C extensions (``build/compiled/`` on
    ``PYTHONPATH``, ``scripts/build-compiled.sh``), else ``"pure"``: whether ``module``
    (default ``router.core.plan``, one of the compiled modules) was loaded from an extension
    module rather than from its Python source."""
    if module is None:
        from router.core import plan  # noqa: PLC0415

        module = plan
    path = module.__file__ or ""
    return "compiled" if path.endswith(tuple(EXTENSION_SUFFIXES)) else "pure"


GC_THRESHOLDS: Final = (500_000, 20, 50)
"""The collector's thresholds once serving: a young collection once 500,000 more container
objects are alive than at the last one, instead of 700. A batch of 100 events holds tens of
thousands of objects until it is enqueued, and under load several batches are in flight: at
the former 20,000 they crossed the threshold every request or two and the collector walked
them (and promoted them, to walk them again later) before reference counting freed them.
Measured in process (bench/inproc.py's distinct100 with each request built when it is sent,
the collector's time taken from ``gc.callbacks``): 66 -> 34 young collections per 8,000
events, 24.5 -> 15.7 us of collection per event at 200,000; batch100 unchanged.

500,000 rather than 200,000: a young collection walks every object alive since the last one
(the 64 batches in flight, about 700,000 containers under distinct people's load), so each
one took 35-160 ms, and the in-flight set's swings crossed 200,000 every second or two.
``router serve`` over HTTP with distinct100 for 10 s (``gc.callbacks``): 420-460 ms of
collections at 200,000, 60-75 ms at 500,000 (of which ~37 ms are start-up's full
collections), the longest pause 105-160 ms -> 24-27 ms, 2-3 % more events/s. Single events
leave almost no cycles (141 objects for ``gc.collect`` after 70,000 requests) and never
reach either threshold. The cycles requests leave (exceptions with tracebacks, asyncio
futures) are still collected: at most 500,000 objects of them wait for a collection
(tests/unit/router/test_gc.py)."""


def _freeze_heap() -> None:
    """Move everything allocated at start-up (modules, config, compiled plans) out of the
    garbage collector's reach: collections then scan only what requests allocate, which
    measured 60-120 us less CPU per request under load; then ``GC_THRESHOLDS``."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _serve_processes(args: argparse.Namespace, host: str, port: int) -> int:
    """``--processes N``: N single-process routers sharing the port (SO_REUSEPORT).

    The kernel spreads connections across them; each runs its own workers (distinct consumer
    names in the same groups). SIGINT/SIGTERM are passed on and the parent exits when the
    children have; SIGHUP is passed on, so every child reloads the routing file. A child
    gets SIGTERM when the parent dies, even by SIGKILL (Linux's parent-death signal), so no
    router is left serving an old configuration without its supervisor.
    """
    import signal  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    # The children import the tree this process runs (the compiled build's copy, or the
    # source): its folder first on PYTHONPATH, and -P, since ``-m`` would put the working
    # directory before PYTHONPATH (the source tree, when serving from its root).
    tree = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": tree if not path else f"{tree}{os.pathsep}{path}"}
    command = [sys.executable, "-P", "-m", "router", "serve", "--reuse-port", "--processes", "1"]
    command += ["--host", host, "--port", str(port)]
    if args.config:
        command += ["--config", args.config]
    if args.no_workers:
        command.append("--no-workers")
    arm = _die_with_parent(signal.SIGTERM)
    children = [
        subprocess.Popen(command, env=env, preexec_fn=arm)  # noqa: S603, PLW1509
        for _ in range(args.processes)
    ]

    def forward(signum: int, frame: object) -> None:
        del frame
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0) if any(codes) else 0


def _die_with_parent(signum: int) -> Callable[[], None] | None:
    """What a child runs between fork and exec so that the kernel sends it ``signum`` when
    its parent exits, even by SIGKILL: ``prctl(PR_SET_PDEATHSIG)``. Linux only (elsewhere
    ``None``: the parent still forwards its signals). libc is looked up here, before the fork."""
    import ctypes  # noqa: PLC0415
    import ctypes.util  # noqa: PLC0415

    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return None
    prctl = ctypes.CDLL(name, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signum, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def cmd_worker(args: argparse.Namespace) -> int:
    """Run only the delivery workers."""
    import signal  # noqa: PLC0415

    from router.runtime import open_runtime  # noqa: PLC0415

    settings = _settings(args)
    configure_logging(settings.log_level)
    routing = _load(settings)
    sealer = _sealer(settings)
    if routing is None or sealer is None:
        return 1

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with open_runtime(settings, routing, workers=True):
            _freeze_heap()
            print(f"router worker: {len(routing.destinations)} destination(s)", file=sys.stderr)
            await stop.wait()

    _run(main())
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase a person (stored consent, suppression, destination deletions); print the receipt."""
    from router.compliance.erasure import Identifiers, erase  # noqa: PLC0415
    from router.runtime import open_runtime  # noqa: PLC0415

    settings = _settings(args)
    routing = _load(settings)
    if routing is None or _sealer(settings) is None:
        return 1
    identifiers = Identifiers.of(
        [*args.ids, *(args.user_id or [])],
        [*args.ids, *(args.anonymous_id or [])],
        args.email or [],
    )
    if not identifiers.count:
        print("give at least one identifier", file=sys.stderr)
        return 2

    async def run() -> dict[str, Any]:
        async with open_runtime(settings, routing) as runtime:
            return await erase(
                runtime.redis,
                runtime.consent,
                routing,
                identifiers,
                runtime.transport,
                audit=runtime.audit_log,
                actor="cli",
            )

    try:
        receipt = asyncio.run(run())
    except (OSError, RedisError) as exc:
        print(f"cannot reach Redis: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps({"success": True, "receipt": receipt}, sort_keys=True))
    return 0


def _print(value: Any, *, as_json: bool, render: Callable[[Any], str]) -> None:
    """A command's answer: indented JSON with ``--json``, else its text rendering."""
    if as_json:
        print(json.dumps(value, indent=2, sort_keys=True))
    else:
        sys.stdout.write(render(value))


def _with_redis(
    settings: Settings, work: Callable[[Redis], Awaitable[int]], *, unavailable: int = 1
) -> int:
    """Run ``work`` with a Redis client; exit ``unavailable`` with a clear message when Redis
    is down."""

    async def run() -> int:
        client = connect(settings.redis_url, settings.redis_timeout_ms)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return int(asyncio.run(run()))
    except (OSError, RedisError) as exc:
        print(f"cannot reach Redis: {type(exc).__name__}", file=sys.stderr)
        return unavailable


def cmd_migrate(args: argparse.Namespace) -> int:
    """Rename old-style keys to the hash-tagged names (one-off, idempotent)."""
    from router.queue.backend import is_cluster_url  # noqa: PLC0415
    from router.queue.migrate import migrate  # noqa: PLC0415

    settings = _settings(args)
    if is_cluster_url(settings.redis_url):
        print(
            "router migrate runs on the single server that holds the old keys, before they are"
            " moved to a cluster (README: moving to a cluster)",
            file=sys.stderr,
        )
        return 1

    async def run(client: Redis) -> int:
        report = await migrate(client, dry_run=args.dry_run)
        verb = "would rename" if args.dry_run else "renamed"
        print(f"{verb} {len(report.renamed)} keys, {report.suppressed} erased subjects")
        for old, new in report.conflicts:
            print(f"left alone: {old} (and {new} exists)", file=sys.stderr)
        return 1 if report.conflicts else 0

    return _with_redis(settings, run)


def cmd_inventory(args: argparse.Namespace) -> int:
    """The record of processing and third-party inventory."""
    from router.compliance.inventory import (  # noqa: PLC0415
        read_inventory,
        render_markdown,
        render_text,
    )

    settings = _settings(args)
    routing = _load(settings)
    if routing is None:
        return 1

    async def show(client: Redis) -> int:
        inventory = await read_inventory(client, routing, _now())
        if args.json:
            print(json.dumps(inventory.to_json(), indent=2, sort_keys=True))
        elif args.markdown:
            sys.stdout.write(render_markdown(inventory))
        else:
            sys.stdout.write(render_text(inventory))
        return 0

    return _with_redis(settings, show)


def cmd_datamap(args: argparse.Namespace) -> int:
    """What left for each destination on a day: fields, personal-data kinds, events, bytes."""
    from router.compliance.datamap import day_of, read_datamap, render_table  # noqa: PLC0415

    settings = _settings(args)
    try:
        day = date.fromisoformat(args.day) if args.day else date.fromisoformat(day_of(_now()))
    except ValueError:
        print(f"--day: expected YYYY-MM-DD, got {args.day!r}", file=sys.stderr)
        return 1

    async def show(client: Redis) -> int:
        datamap = await read_datamap(client, day)
        _print(datamap, as_json=args.json, render=render_table)
        return 0

    return _with_redis(settings, show)


def cmd_quarantine(args: argparse.Namespace) -> int:
    """The newest rejected events, redacted (code, path, source, size, field types), one JSON
    line each; entries past ``ROUTER_QUARANTINE_RETENTION_DAYS`` are trimmed first."""
    from router.compliance.quarantine import read_quarantine  # noqa: PLC0415

    settings = _settings(args)
    sealer = _sealer(settings)
    if sealer is None:
        return 1

    async def show(client: Redis) -> int:
        entries = await read_quarantine(
            client,
            args.limit,
            now=_now(),
            retention_days=settings.quarantine_retention_days,
            sealer=sealer,
        )
        for entry in entries:
            print(json.dumps(entry, sort_keys=True))
        return 0

    return _with_redis(settings, show)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the audit trail's hash chain; name and print the first bad record."""
    from router.compliance.audit_chain import canonical  # noqa: PLC0415
    from router.compliance.audit_log import AuditLog  # noqa: PLC0415

    settings = _settings(args)

    async def check(client: Redis) -> int:
        log = AuditLog(client)
        result = await log.verify()
        if result.ok:
            print(
                f"audit trail intact: {result.checked} record(s) verified in {result.lanes} lane(s)"
            )
            return 0
        lane = f" of lane {result.lane}" if result.lane else ""
        print(f"audit trail BROKEN at record {result.first_bad_seq}{lane}: {result.reason}")
        async for record in log.records():
            if record.seq == result.first_bad_seq and record.lane == (result.lane or 0):
                print(f"record {record.seq} as stored: {canonical(record.to_json()).decode()}")
                break
        else:
            print(f"record {result.first_bad_seq}{lane} is not in the stream")
        return 1

    return _with_redis(settings, check)


def cmd_audit_export(args: argparse.Namespace) -> int:
    """Every audit record as one JSON line, oldest first."""
    from router.compliance.audit_log import export  # noqa: PLC0415

    settings = _settings(args)

    async def dump(client: Redis) -> int:
        async for line in export(client):
            sys.stdout.write(line)
        return 0

    return _with_redis(settings, dump)


def _identifiers(args: argparse.Namespace) -> Identifiers:
    """The person named by ``--user-id``, ``--anonymous-id``, ``--email`` (and ``--subject``:
    any id), normalized as ingest normalizes ids."""
    from router.compliance.erasure import Identifiers  # noqa: PLC0415

    return Identifiers.of(
        [*(args.user_id or []), *(getattr(args, "subject", None) or [])],
        args.anonymous_id or [],
        args.email or [],
    )


def cmd_subject_report(args: argparse.Namespace) -> int:
    """Everything held and done about one person: stored consent and its history, what left
    for which destination (when, which fields, under which consent), what was withheld and
    why, erasures. Exit 0, 2 without an identifier, 1 when Redis cannot be reached."""
    from consent.store import ConsentStore  # noqa: PLC0415
    from router.compliance.subject_report import render_text, subject_report  # noqa: PLC0415
    from router.queue.keys import SUPPRESSED  # noqa: PLC0415

    settings = _settings(args)
    identifiers = _identifiers(args)
    if not identifiers.count:
        print("give --user-id, --anonymous-id or --email", file=sys.stderr)
        return 2

    async def show(client: Redis) -> int:
        store = ConsentStore(
            client, suppressed_key=SUPPRESSED, subject_secret=settings.subject_key_bytes
        )
        report = await subject_report(
            client, store, identifiers, audit_key=settings.audit_key_bytes, now=_now()
        )
        _print(report, as_json=args.json, render=render_text)
        return 0

    return _with_redis(settings, show)


QUERY_NOTHING_LEFT: Final = 0
QUERY_LEFT: Final = 1
QUERY_USAGE: Final = 2
QUERY_UNAVAILABLE: Final = 3


def cmd_audit_query(args: argparse.Namespace) -> int:
    """Did anything leave for this person (for a destination) at or after a time? Exit 0:
    nothing did; 1: something did (listed); 2: bad arguments; 3: Redis unreachable."""
    from router.compliance.subject_report import audit_query, parse_after  # noqa: PLC0415

    settings = _settings(args)
    identifiers = _identifiers(args)
    if not identifiers.count:
        print("give --subject, --user-id, --anonymous-id or --email", file=sys.stderr)
        return QUERY_USAGE
    try:
        after = parse_after(args.after)
    except ValueError as exc:
        print(f"--after: {exc}", file=sys.stderr)
        return QUERY_USAGE

    async def query(client: Redis) -> int:
        answer = await audit_query(
            client,
            identifiers.tokens(settings.audit_key_bytes),
            after=after,
            destination=args.destination,
        )
        if args.json:
            print(json.dumps(answer, indent=2, sort_keys=True))
        else:
            target = args.destination or "any destination"
            print(f"{len(answer['left'])} event(s) left for {target} at or after {answer['after']}")
            for item in answer["left"]:
                sent = ", ".join(item["sent"] or ["(paths not recorded)"])
                sources = ", ".join(item["consent"]["sources"]) or "no signal"
                where = f"{item['at']} {item['destination']} event {item['event']}"
                print(f"  {where}: {sent} [{sources}]")
            print(f"{len(answer['withheld'])} decision(s) withheld in the same period")
        if not answer["complete"]:
            print(
                f"warning: the audit trail only reaches back to {answer['oldest_record_at']}",
                file=sys.stderr,
            )
        return QUERY_LEFT if answer["left"] else QUERY_NOTHING_LEFT

    return _with_redis(settings, query, unavailable=QUERY_UNAVAILABLE)


def cmd_audit_reindex(args: argparse.Namespace) -> int:
    """Index the records of a trail written before the subject index existed (idempotent)."""
    from router.compliance.subject_index import reindex  # noqa: PLC0415
    from router.queue.keys import AUDIT  # noqa: PLC0415

    settings = _settings(args)

    async def run(client: Redis) -> int:
        records, added = await reindex(client, AUDIT)
        print(f"{records} record(s) read, {added} index entr(y/ies) added")
        return 0

    return _with_redis(settings, run)


def _now() -> datetime:
    return datetime.now(UTC)


def _headers(values: Sequence[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for value in values:
        name, sep, content = value.partition(":")
        if not sep:
            raise SystemExit(f"--header expects 'Name: value', got {value!r}")
        headers.append((name.strip(), content.strip()))
    return headers


def cmd_explain(args: argparse.Namespace) -> int:
    """Per destination: deliver or skip, why, and the exact payload."""
    settings = _settings(args)
    routing = _load(settings)
    if routing is None:
        return 1
    try:
        raw = Path(args.event).read_bytes() if args.event != "-" else sys.stdin.buffer.read()
        data = msgspec.json.decode(raw)
    except OSError as exc:
        print(f"cannot read {args.event}: {exc.strerror}", file=sys.stderr)
        return 1
    except msgspec.DecodeError:
        print(f"{args.event}: not valid JSON", file=sys.stderr)
        return 1
    if not isinstance(data, dict):
        print(f"{args.event}: an event must be a JSON object", file=sys.stderr)
        return 1
    if args.consent:
        try:
            consent = json.loads(args.consent)
        except json.JSONDecodeError:
            print("--consent: not valid JSON", file=sys.stderr)
            return 1
        context = dict(data.get("context") or {})
        context.update(consent_context(consent))
        data["context"] = context
    data.setdefault("type", "track")
    try:
        wire = msgspec.convert(data, WireEvent)
    except msgspec.ValidationError as exc:
        print(f"{args.event}: {exc}", file=sys.stderr)
        return 1
    headers = _headers(args.header or [])
    reports = explain(
        routing,
        wire,
        now=datetime.now(UTC),
        new_id=lambda: str(uuid.uuid4()),
        signals=signals_from_headers(headers, routing.policy.geo_header),
    )
    if isinstance(reports, Rejection):
        print(
            f"{args.event}: rejected: {reports.code} at {reports.path or '(event)'}: "
            f"{reports.message}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(reports), indent=2).decode())
        sys.stdout.write("\n")
        return 0
    for report in reports:
        line = f"{report['id']:<24} {report['decision']:<8} {report['reason']}"
        if report.get("detail"):
            line += f" ({report['detail']})"
        print(line)
        if report["decision"] == "deliver":
            print("  payload: " + json.dumps(report["payload"], sort_keys=True))
            if report["removed"]:
                print("  removed: " + ", ".join(report["removed"]))
            for drop in report.get("dropped", []):
                print(f"  not sent: {drop['reason']} ({drop['detail']})")
            if "match_keys" in report:
                print("  match keys: " + (", ".join(report["match_keys"]) or "none"))
            if report.get("omitted"):
                omitted = (f"{o['field']} ({o['reason']})" for o in report["omitted"])
                print("  omitted: " + ", ".join(omitted))
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """Print what a dry-run destination would have sent, newest first."""

    async def read(client: Redis, partitions: int) -> list[tuple[str, Any]]:
        del partitions  # one outbox per destination
        entries = await client.xrevrange(outbox_key(args.destination), count=args.limit)
        return [(entry_id.decode(), fields) for entry_id, fields in entries]

    return _print_stream(args, read, "r", OUTBOX_ROLE, outbox_key(args.destination))


def cmd_dlq(args: argparse.Namespace) -> int:
    """List a destination's dead letters with their reasons, newest first (every partition;
    ids as the operator API shows them)."""

    async def read(client: Redis, partitions: int) -> list[tuple[str, Any]]:
        rows = await read_dead_letters(
            client, args.destination, partitions, args.limit, newest=True
        )
        return [(dead_letter_id(p, entry_id.decode()), fields) for p, entry_id, fields in rows]

    return _print_stream(args, read, None, DLQ_ROLE, dlq_key(args.destination))


def _print_stream(
    args: argparse.Namespace,
    read_entries: Callable[[Redis, int], Awaitable[list[tuple[str, Any]]]],
    field: str | None,
    role: str,
    label: str,
) -> int:
    settings = _settings(args)
    routing = _load(settings)
    sealer = _sealer(settings)
    if routing is None or sealer is None:
        return 1
    destination = routing.destination(args.destination)
    if destination is None:
        known = ", ".join(d.id for d in routing.destinations)
        print(f"unknown destination {args.destination!r} (configured: {known})", file=sys.stderr)
        return 1

    async def read() -> list[tuple[str, Any]]:
        client = connect(settings.redis_url, settings.redis_timeout_ms)
        try:
            return await read_entries(client, destination.config.delivery.partitions)
        finally:
            await client.aclose()

    try:
        entries = asyncio.run(read())
    except (OSError, RedisError) as exc:
        print(f"cannot reach Redis: {type(exc).__name__}", file=sys.stderr)
        return 1
    for entry_id, fields in entries:
        record: dict[str, Any] = {"id": entry_id}
        for name, value in fields.items():
            text = value.decode("utf-8", "replace")
            if name.decode() in ("qd", "qb"):  # an undecryptable entry, kept sealed as it was
                record["undecryptable"] = True
                continue
            if name.decode() in ("r", "d"):
                try:
                    where = sealed_for(role, args.destination, name.decode())
                    opened = sealer.open(value, where)
                except Undecryptable as exc:
                    record["undecryptable"] = exc.reason
                    record[name.decode()] = None
                    continue
                record[name.decode()] = json.loads(opened)
            else:
                record[name.decode()] = text
        if field is not None and record.get(field) is not None:
            record = {"id": record["id"], **record[field]}
        print(json.dumps(record, sort_keys=True))
    if not entries:
        print(f"(nothing in {label})", file=sys.stderr)
    return 0


class Progress:
    """``done/total`` as a bar redrawn in place on a terminal, else a line every 10%."""

    def __init__(self, label: str, stream: Any = None, width: int = 30) -> None:
        self._label = label
        self._out = sys.stderr if stream is None else stream
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())
        self._width = width
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        """Show that ``done`` of ``total`` are through."""
        share = done / total if total else 1.0
        if self._tty:
            filled = int(share * self._width)
            bar = "#" * filled + "." * (self._width - filled)
            self._out.write(f"\r{self._label} [{bar}] {share:4.0%} {done}/{total}")
            if done >= total:
                self._out.write("\n")
        elif int(share * 10) > self._shown:
            self._shown = int(share * 10)
            self._out.write(f"{self._label}: {done}/{total} entries ({share:.0%})\n")
        self._out.flush()


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Re-seal every queued, dead-lettered, outbox and quarantine entry with the newest key of
    ``ROUTER_ENCRYPTION_KEYS`` (``router.queue.rotation``), while the routers keep running."""
    from router.queue.rotation import rotate  # noqa: PLC0415

    settings = _settings(args)
    sealer = _sealer(settings)
    if sealer is not None and sealer.ring is None:
        print("ROUTER_ENCRYPTION_KEYS is not set: there is no key to rotate to", file=sys.stderr)
        return 1
    routing = _load(settings)
    if routing is None or sealer is None:
        return 1
    destinations = [d.id for d in routing.destinations]

    async def run(client: Redis) -> int:
        progress = Progress(f"re-encrypting with key {sealer.ring.current if sealer.ring else ''}")
        report = await rotate(client, sealer, destinations, progress)
        print(report.line())
        return 0

    return _with_redis(settings, run)


def cmd_migrate_subjects(args: argparse.Namespace) -> int:
    """Re-key the unkeyed subject hashes of stored consent and suppression under
    ``ROUTER_SUBJECT_KEY`` (``router.subject_migration``); run before starting the routers
    with the secret."""
    from router.compliance.subject_migration import (  # noqa: PLC0415
        SubjectKeyMismatchError,
        migrate_subjects,
    )
    from router.queue.keys import SUPPRESSED  # noqa: PLC0415

    settings = _settings(args)
    secret = settings.subject_key_bytes
    if not secret:
        print("ROUTER_SUBJECT_KEY is not set: there is no key to migrate to", file=sys.stderr)
        return 1

    async def run(client: Redis) -> int:
        try:
            report = await migrate_subjects(
                client, secret, SUPPRESSED, Progress("re-keying subject hashes")
            )
        except SubjectKeyMismatchError as error:
            print(str(error), file=sys.stderr)
            return 1
        print(report.line())
        return 0

    return _with_redis(settings, run)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Print a fresh ``id:base64`` key to put FIRST in ``ROUTER_ENCRYPTION_KEYS``."""
    try:
        print(new_key_entry(args.id))
    except KeyRingError as error:
        print(str(error), file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="router", description="Consent-aware event router")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP endpoint and the delivery workers")
    serve.add_argument("--config", help="routing file (default: $ROUTER_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-workers", action="store_true", help="HTTP only; run `router worker`")
    serve.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT, for N processes")
    serve.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run N router processes on the same port (SO_REUSEPORT); one per core",
    )
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run only the delivery workers")
    worker.add_argument("--config")
    worker.set_defaults(func=cmd_worker)

    check = commands.add_parser("check-config", help="validate a routing file (no network)")
    check.add_argument("path", nargs="?")
    check.add_argument("--config")
    check.set_defaults(func=cmd_check_config)

    exp = commands.add_parser("explain", help="what each destination would receive, and why")
    exp.add_argument("--config")
    exp.add_argument("--event", required=True, help="a JSON event file ('-' for stdin)")
    exp.add_argument("--consent", help="consent JSON, e.g. '{\"analytics\": true}'")
    exp.add_argument("--header", action="append", help="a request header, e.g. 'Sec-GPC: 1'")
    exp.add_argument("--json", action="store_true")
    exp.set_defaults(func=cmd_explain)

    outbox = commands.add_parser("outbox", help="what a dry-run destination would have sent")
    outbox.add_argument("destination")
    outbox.add_argument("--config")
    outbox.add_argument("--limit", type=int, default=20)
    outbox.set_defaults(func=cmd_outbox)

    dlq = commands.add_parser("dlq", help="dead letters of a destination")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser("list")
    dlq_list.add_argument("destination")
    dlq_list.add_argument("--config")
    dlq_list.add_argument("--limit", type=int, default=20)
    dlq_list.set_defaults(func=cmd_dlq)

    erase_cmd = commands.add_parser("erase", help="erase a person: consent, queue, destinations")
    erase_cmd.add_argument("ids", nargs="*", help="ids to erase as user id and anonymous id")
    erase_cmd.add_argument("--user-id", action="append")
    erase_cmd.add_argument("--anonymous-id", action="append")
    erase_cmd.add_argument("--email", action="append")
    erase_cmd.add_argument("--config")
    erase_cmd.set_defaults(func=cmd_erase)

    quarantine = commands.add_parser("quarantine", help="rejected events, redacted, newest first")
    quarantine.add_argument("--limit", type=int, default=20)
    quarantine.set_defaults(func=cmd_quarantine)

    datamap = commands.add_parser("datamap", help="what left for each destination on a day")
    datamap.add_argument("--day", help="YYYY-MM-DD, UTC (default: today)")
    datamap.add_argument("--json", action="store_true")
    datamap.set_defaults(func=cmd_datamap)

    keys = commands.add_parser("keys", help="the key ring of encryption at rest")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate_cmd = keys_commands.add_parser(
        "rotate", help="re-encrypt every entry at rest with the newest key (online)"
    )
    rotate_cmd.add_argument("--config")
    rotate_cmd.set_defaults(func=cmd_keys_rotate)
    generate = keys_commands.add_parser("generate", help="print a new id:base64 key")
    generate.add_argument("--id", required=True, help="the key id, e.g. k2 or 2026-12")
    generate.set_defaults(func=cmd_keys_generate)

    migrate = commands.add_parser(
        "migrate-subjects", help="re-key stored subject hashes under ROUTER_SUBJECT_KEY"
    )
    migrate.set_defaults(func=cmd_migrate_subjects)

    inventory = commands.add_parser("inventory", help="the record of processing (recipients)")
    inventory.add_argument("--config")
    shape = inventory.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true")
    shape.add_argument("--markdown", action="store_true")
    inventory.set_defaults(func=cmd_inventory)

    audit = commands.add_parser("audit", help="the hash-chained audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check the chain; exit 1 when broken")
    verify.set_defaults(func=cmd_audit_verify)
    export = audit_commands.add_parser("export", help="every record as JSON lines")
    export.set_defaults(func=cmd_audit_export)

    migrate = commands.add_parser("migrate", help="rename keys to the cluster-ready names")
    migrate.add_argument("--dry-run", action="store_true", help="report, change nothing")
    migrate.set_defaults(func=cmd_migrate)
    query = audit_commands.add_parser(
        "query",
        help="did anything leave for a person after a time? exit 0: no, 1: yes (listed), "
        "2: bad arguments, 3: Redis unreachable",
    )
    query.add_argument("--after", required=True, help="ISO 8601 time (UTC when no offset)")
    query.add_argument("--destination", help="one destination id (default: every one)")
    _subject_options(query, subject=True)
    query.add_argument("--json", action="store_true")
    query.set_defaults(func=cmd_audit_query)

    reindex = audit_commands.add_parser(
        "reindex", help="index a trail written before the subject index (idempotent)"
    )
    reindex.set_defaults(func=cmd_audit_reindex)

    report = commands.add_parser(
        "subject-report", help="everything held and done about one person (access request)"
    )
    _subject_options(report, subject=False)
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_subject_report)
    return parser


def _subject_options(parser: argparse.ArgumentParser, *, subject: bool) -> None:
    """The options naming a person (each may be given several times)."""
    if subject:
        parser.add_argument("--subject", action="append", help="any id of the person")
    parser.add_argument("--user-id", action="append")
    parser.add_argument("--anonymous-id", action="append")
    parser.add_argument("--email", action="append")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``router`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
