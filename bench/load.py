"""Load generation: ``wrk`` with a generated Lua script, or a multi-process aiohttp client.

``wrk`` (Debian package ``wrk``) is the load generator: written in C, it is never the
bottleneck here. When it is missing (and ``apt-get install -y wrk`` fails) the fallback is
``python -m bench.load``: N client processes of aiohttp on uvloop, each holding
connections/N keep-alive connections, closed loop like wrk. The report says which one ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.payload import Workload, lua_script
from bench.procs import Processes


@dataclass
class LoadResult:
    """What a load run measured (latencies in milliseconds)."""

    tool: str
    requests: int
    non_2xx: int
    socket_errors: int
    timeouts: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok_requests(self) -> int:
        """Requests answered 2xx/3xx."""
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        """Completed requests per second (any status)."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        """For the JSON results."""
        return {**asdict(self), "rps": self.rps}


def ensure_wrk() -> str | None:
    """The path of ``wrk``, installing the Debian package if missing; None if unavailable."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk ...", flush=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=300,
        )
    return shutil.which("wrk")


def run_wrk(
    wrk: str,
    procs: Processes,
    workload: Workload,
    base_url: str,
    *,
    connections: int,
    threads: int,
    duration_s: int,
    run_id: str,
    workdir: Path,
    cpus: set[int] | None,
) -> LoadResult:
    """One wrk run against ``base_url + workload.path``."""
    script = workdir / f"{run_id}.lua"
    script.write_text(lua_script(workload, run_id))
    argv = [
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        base_url + workload.path,
    ]
    proc = procs.start(f"wrk-{run_id}", argv, cpus=cpus)
    try:
        proc.popen.wait(duration_s + 60)
    finally:
        procs.stop(proc)
    return parse_wrk(proc.log.read_text(errors="replace"))


def parse_wrk(text: str) -> LoadResult:
    """Read the ``BENCH_JSON`` line printed by the script's ``done``."""
    for line in text.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            return LoadResult(
                tool="wrk",
                requests=int(data["requests"]),
                non_2xx=int(data["status"]),
                socket_errors=int(data["connect"] + data["read"] + data["write"]),
                timeouts=int(data["timeout"]),
                duration_s=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no results:\n{text[-2000:]}")


def run_python_load(
    procs: Processes,
    workload: Workload,
    base_url: str,
    *,
    connections: int,
    processes: int,
    duration_s: int,
    run_id: str,
    workdir: Path,
    cpus: set[int] | None,
) -> LoadResult:
    """The fallback: ``processes`` aiohttp client processes sharing ``connections``."""
    spec = workdir / f"{run_id}.json"
    spec.write_text(
        json.dumps(
            {
                "url": base_url + workload.path,
                "parts": workload.parts,
                "authorization": workload.authorization,
            }
        )
    )
    processes = max(1, min(processes, connections))
    children = []
    for index in range(processes):
        share = connections // processes + (1 if index < connections % processes else 0)
        argv = [
            sys.executable,
            "-m",
            "bench.load",
            "--spec",
            str(spec),
            "--connections",
            str(share),
            "--duration",
            str(duration_s),
            "--prefix",
            f"{run_id}_{index}",  # as lua_script: "_" keeps the run id's digits apart
            "--out",
            str(workdir / f"{run_id}-{index}.out.json"),
        ]
        children.append(procs.start(f"load-{run_id}-{index}", argv, cpus=cpus))
    try:
        for child in children:
            child.popen.wait(duration_s + 60)
    finally:
        for child in children:
            procs.stop(child)
    latencies: list[int] = []
    requests = non_2xx = errors = 0
    elapsed = 0.0
    for index in range(processes):
        data = json.loads((workdir / f"{run_id}-{index}.out.json").read_text())
        latencies += data["latencies_us"]
        requests += data["requests"]
        non_2xx += data["non_2xx"]
        errors += data["errors"]
        elapsed = max(elapsed, data["elapsed_s"])
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] / 1000

    return LoadResult(
        tool=f"python-aiohttp x{processes}",
        requests=requests,
        non_2xx=non_2xx,
        socket_errors=errors,
        timeouts=0,
        duration_s=elapsed,
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        max_ms=latencies[-1] / 1000 if latencies else 0.0,
    )


async def _client(spec: dict[str, Any], connections: int, duration_s: int, prefix: str) -> dict:
    import aiohttp  # noqa: PLC0415 - only the fallback child needs it

    parts: list[str] = spec["parts"]
    headers = {"Content-Type": "application/json", "Authorization": spec["authorization"]}
    latencies: list[int] = []
    counts = {"requests": 0, "non_2xx": 0, "errors": 0}
    deadline = time.monotonic() + duration_s
    serial = 0

    def body() -> bytes:
        nonlocal serial
        serial += 1
        out = [parts[0]]
        for n, part in enumerate(parts[1:], start=1):
            out += [f"{prefix}-{100_000 + serial}-{1_000 + n}", part]  # as lua_script
        return "".join(out).encode()

    async def loop(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            data = body()
            start = time.perf_counter()
            try:
                async with session.post(spec["url"], data=data, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                counts["errors"] += 1
                continue
            latencies.append(int((time.perf_counter() - start) * 1e6))
            counts["requests"] += 1
            if status >= 400:
                counts["non_2xx"] += 1

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)  # as wrk's --timeout
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(loop(session) for _ in range(connections)))
    return {**counts, "latencies_us": latencies, "elapsed_s": time.monotonic() - started}


def main() -> None:
    """The fallback load generator's child process."""
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415

    spec = json.loads(Path(args.spec).read_text())
    result = uvloop.run(_client(spec, args.connections, args.duration, args.prefix))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
