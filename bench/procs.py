"""Child processes of the benchmark: start, pin, measure (/proc), stop, always.

Every process the benchmark starts is registered in a ``Processes`` and stopped by
``stop_all`` (SIGTERM, then SIGKILL after a grace period), which ``bench.run`` calls in a
``finally``. Only these processes are ever signalled, by their own pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpus_busy_seconds(cpus: set[int]) -> float:
    """Busy time (everything but idle and iowait) of these CPUs since boot (/proc/stat)."""
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in rest.split()]
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        busy += sum(values[:8]) - values[3] - values[4]
    return busy / CLOCK_TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB (from /proc/<pid>/status)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


@dataclass
class Proc:
    """One started process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time used so far (user + system)."""
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        """Current resident set size, MB."""
        return memory_kb(self.pid).get("VmRSS", 0) / 1024

    def peak_rss_mb(self) -> float:
        """Peak resident set size since the start (VmHWM), MB."""
        return memory_kb(self.pid).get("VmHWM", 0) / 1024

    def tail(self, lines: int = 30) -> str:
        """The last lines of its output (for failure reports)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Processes:
    """The registry of everything started; ``stop_all`` ends them all, newest first."""

    logdir: Path
    started: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cpus: set[int] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """Start a process with its output in ``logdir/name.log``, pinned to ``cpus``."""
        log = self.logdir / f"{name}.log"
        argv = list(argv)
        if cpus and shutil.which("taskset"):
            # taskset pins before exec, so every thread the process creates inherits it.
            argv = ["taskset", "-c", ",".join(str(c) for c in sorted(cpus)), *argv]
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        proc = Proc(name, popen, log)
        self.started.append(proc)
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(popen.pid, cpus)
        return proc

    def stop(self, proc: Proc, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait(5)
        if proc in self.started:
            self.started.remove(proc)
        return proc.popen.returncode

    def stop_all(self) -> None:
        """Stop every process still registered, newest first."""
        for proc in reversed(list(self.started)):
            self.stop(proc, timeout_s=10.0)


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """GET a local URL: (status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def http_post(
    url: str, body: bytes, headers: Mapping[str, str], timeout_s: float = 5.0
) -> tuple[int, bytes]:
    """POST to a local URL: (status, body); status 0 when nothing answered."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_http(url: str, proc: Proc, timeout_s: float = 30.0) -> None:
    """Wait until ``url`` answers 200; fail early (with its output) if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        status, _ = http_get(url, timeout_s=1.0)
        if status == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout_s:g}s:\n{proc.tail()}")


def wait_port(port: int, proc: Proc, timeout_s: float = 15.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on port {port}:\n{proc.tail()}")
