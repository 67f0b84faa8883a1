"""Sampling profile of a running router process with py-spy (optional, ``--profile``).

py-spy is not a project dependency: install it into the virtualenv by hand
(``.venv/bin/pip install py-spy``). ``record`` writes collapsed stacks (``--format raw``,
aggregated by function); ``summarize`` turns them into the top functions by self time and by
inclusive time, the figures that guide the optimization work.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.procs import Proc, Processes


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(
    procs: Processes, pid: int, output: Path, duration_s: int, cpus: set[int] | None
) -> Proc | None:
    """Start py-spy on ``pid`` for ``duration_s`` (collapsed stacks into ``output``)."""
    exe = py_spy()
    if exe is None:
        return None
    output.unlink(missing_ok=True)
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(duration_s),
        "--rate",
        "250",
        "--format",
        "raw",
        "--function",
        "--native",  # C frames too: the compiled build's functions, the garbage collector
        "--output",
        str(output),
    ]
    return procs.start(f"py-spy-{output.stem}", argv, cpus=cpus)


def finish(procs: Processes, spy: Proc | None, duration_s: int) -> None:
    """Wait for py-spy to write its output."""
    if spy is None:
        return
    spy.popen.wait(duration_s + 60)
    procs.stop(spy)


@dataclass
class Line:
    """One function of the profile."""

    frame: str
    self_pct: float
    total_pct: float


PROJECT = ("router/", "consent/", "destinations/")


def summarize(collapsed: Path, top: int = 15) -> tuple[int, list[Line], list[Line]]:
    """(samples, top by self time, top project functions by inclusive time).

    Self time: where the CPU is (any code). Inclusive time, project code only (``router/``,
    ``consent/``, ``destinations/``): which of our functions the time is spent under.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def lines(frames: list[str]) -> list[Line]:
        return [
            Line(frame, 100 * own[frame] / samples, 100 * inclusive[frame] / samples)
            for frame in frames[:top]
        ]

    if not samples:
        return 0, [], []
    ours = [
        frame
        for frame, _ in inclusive.most_common()
        if frame.rpartition("(")[2].startswith(PROJECT) and "router/cli.py" not in frame
    ]
    return samples, lines([f for f, _ in own.most_common(top)]), lines(ours)


def _short(frame: str) -> str:
    """Strip the virtualenv / stdlib prefixes from a frame's file name."""
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            path = tail.split(marker, 1)[-1]
            return f"{head}({path}"
    return frame


def render(title: str, samples: int, by_self: list[Line], by_total: list[Line]) -> str:
    """Two small tables: top functions by self time, then by inclusive time."""
    out = [f"{title}: {samples} samples (py-spy, 250 Hz, aggregated by function)"]
    out.append(f"  {'self %':>7} {'total %':>8}  function (file:line)   [top by self time]")
    out += [f"  {ln.self_pct:7.1f} {ln.total_pct:8.1f}  {ln.frame}" for ln in by_self]
    out.append(
        f"  {'self %':>7} {'total %':>8}  function (file:line)   [project code by inclusive time]"
    )
    out += [f"  {ln.self_pct:7.1f} {ln.total_pct:8.1f}  {ln.frame}" for ln in by_total]
    return "\n".join(out)
