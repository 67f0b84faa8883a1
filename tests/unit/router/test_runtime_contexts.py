"""A runtime context closes its resource within a bound, and a stuck close never stops the
resources after it from closing (a shutdown that hangs loses what later closes would flush)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from router.runtime import Context


async def test_a_stuck_close_is_abandoned_by_name_and_the_others_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    async def stuck() -> None:
        await asyncio.Event().wait()

    async def close_first() -> None:
        closed.append("first")

    def close_last() -> None:
        closed.append("last")

    async with AsyncExitStack() as stack:
        await stack.enter_async_context(Context("last", close=close_last)())
        await stack.enter_async_context(Context("stuck", close=stuck, close_timeout_s=0.05)())
        await stack.enter_async_context(Context("first", close=close_first)())
    assert closed == ["first", "last"]
    warnings = [r for r in caplog.records if r.name == "router.runtime"]
    assert [(r.getMessage(), getattr(r, "resource", None)) for r in warnings] == [
        ("resource did not close in time; abandoned", "stuck")
    ]


async def test_start_runs_before_and_close_after_the_body() -> None:
    steps: list[str] = []

    async def start() -> None:
        steps.append("start")

    async def close() -> None:
        steps.append("close")

    async def body() -> None:
        async with Context("r", start, close)():
            steps.append("body")
            raise RuntimeError("body failed")

    with pytest.raises(RuntimeError):
        await body()
    assert steps == ["start", "body", "close"]
