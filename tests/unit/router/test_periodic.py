"""The background flusher shared by the data map, the anomaly monitor and the audit writer."""

from __future__ import annotations

import asyncio
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
