"""A background step run every few seconds, and once more at the close.

The data map, the anomaly monitor and the audit writer buffer in memory on the hot path and
write to Redis from such a task: ``start`` at start-up, ``close`` at shutdown (the step under
way finishes, then ``final`` runs once so nothing buffered is left behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Periodic:
    """Run ``step`` every ``every_s`` seconds in a task of its own until closed.

    Steps start ``every_s`` apart (the wait after a step is what is left of the period), and
    one that took longer is followed at once: a flusher whose step outlasts its period keeps
    up instead of letting its buffer grow by a whole period more each time (the audit writer's
    flush under a saturating load took 1.2-1.9 s, and with a full second's wait after each its
    buffer held up to 2.9 s of decisions). A step failing with one of ``errors`` is logged
    (``failure``, the error's type only) and retried at the next tick; the owner keeps what
    it could not write.
    """

    name: str
    step: Callable[[], Awaitable[object]]
    every_s: float
    errors: tuple[type[Exception], ...]
    logger: logging.Logger
    failure: str
    final: Callable[[], Awaitable[object]] | None = None
    """What ``close`` runs once after the task ended (default: ``step``)."""
    immediately: bool = False
    """Whether the first step runs at ``start`` (default: one period after it)."""
    _task: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        """Start the task (a second call does nothing)."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        """Stop after the step under way, then run ``final`` once (its errors are swallowed:
        the owner keeps what stayed buffered)."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        with contextlib.suppress(*self.errors):
            await (self.final or self.step)()

    async def _run(self) -> None:
        # Stopped by the event, never by cancelling: a cancellation swallowed inside a client
        # library (redis-py has had such bugs) would leave a loop running that close waits for.
        wait = await self._step() if self.immediately else self.every_s
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
            if not self._stopping.is_set():  # close runs the last one (``final``)
                wait = await self._step()

    async def _step(self) -> float:
        """Run one step; what is left of its period (the wait before the next one)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            await self.step()
        except self.errors as exc:
            self.logger.warning(self.failure, extra={"error": type(exc).__name__})
        return max(0.0, self.every_s - (loop.time() - began))
