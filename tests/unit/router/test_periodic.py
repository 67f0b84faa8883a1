"""The background flusher shared by the data map, the anomaly monitor and the audit writer."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from router.periodic import Periodic


async def test_steps_repeat_survive_errors_and_run_once_more_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing step is logged by type and retried; close runs ``final`` once."""
    calls: list[str] = []
    three = asyncio.Event()

    async def step() -> None:
        calls.append("step")
        if len(calls) == 1:
            raise OSError("redis down: jane@example.com")
        if len(calls) == 3:
            three.set()

    async def final() -> None:
        calls.append("final")

    periodic = Periodic(
        "t", step, 0.01, (OSError,), logging.getLogger("test.periodic"), "flush failed", final
    )
    periodic.start()
    periodic.start()  # idempotent: one task
    await asyncio.wait_for(three.wait(), 5)
    await periodic.close()
    assert calls[-1] == "final"
    assert calls.count("final") == 1
    [failure] = [r for r in caplog.records if r.getMessage() == "flush failed"]
    assert getattr(failure, "error", None) == "OSError"
    assert "jane" not in caplog.text  # the error's type only, never its message


async def test_close_without_start_still_flushes() -> None:
    """An owner closed before it started still writes what it buffered."""
    calls: list[str] = []

    async def step() -> None:
        calls.append("step")

    await Periodic("t", step, 1.0, (OSError,), logging.getLogger("t"), "failed").close()
    assert calls == ["step"]


async def test_immediately_steps_at_start_and_close_never_steps_twice() -> None:
    """``immediately``: the first step runs at start; a close during the wait runs ``final``
    only, not one more step before it."""
    calls: list[str] = []
    started = asyncio.Event()

    async def step() -> None:
        calls.append("step")
        started.set()

    async def final() -> None:
        calls.append("final")

    periodic = Periodic(
        "t", step, 60.0, (), logging.getLogger("t"), "failed", final, immediately=True
    )
    periodic.start()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(periodic.close(), 5)
    assert calls == ["step", "final"]


async def test_steps_start_a_period_apart_and_a_long_one_is_followed_at_once() -> None:
    """The wait after a step is what is left of the period: a step that took 60 % of it is
    followed 40 % later, one that outlasted it at once (not a whole period later)."""
    loop = asyncio.get_running_loop()
    period = 0.2
    starts: list[float] = []
    durations = [0.12, 0.3, 0.0, 0.0]
    done = asyncio.Event()

    async def step() -> None:
        starts.append(loop.time())
        if len(starts) > len(durations):
            done.set()
            return
        await asyncio.sleep(durations[len(starts) - 1])

    periodic = Periodic("t", step, period, (), logging.getLogger("t"), "failed")
    periodic.start()
    await asyncio.wait_for(done.wait(), 5)
    await periodic.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # 0.12 s of work, then 0.08 s of wait (a wait of a whole period made it 0.32)
    assert period - 0.01 <= gaps[0] < 0.29
    # outlasted the period: the next at once (0.5 with a whole period's wait)
    assert 0.3 - 0.01 <= gaps[1] < 0.45
    assert period - 0.01 <= gaps[2] < 0.29
