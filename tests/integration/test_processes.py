"""`router serve --processes N`: N routers on one port, stopped together."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
from pathlib import Path

import aiohttp

from destinations import dlp
from router.cli import build_name
from tests.conftest import TEST_CONFIG, WRITE_KEY, process_env, wait_for
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer, free_port

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


def children_of(pid: int) -> list[int]:
    """Live child process ids of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether a process still runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_processes_share_the_port_deliver_everything_and_stop_together(
    redis_server: RedisServer, receiver: tuple[WebhookReceiver, str]
) -> None:
    """Two processes answer on one port; every accepted event is delivered; SIGTERM stops all."""
    state, url = receiver
    port = free_port()
    env = process_env(redis_server.url, url)
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "serve", "--config", str(TEST_CONFIG),
        "--host", "127.0.0.1", "--port", str(port), "--processes", "2",
        env=env,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            for _ in range(300):
                if len(children_of(parent.pid)) == 2 and await ready():
                    break
                await asyncio.sleep(0.05)
            assert len(children_of(parent.pid)) == 2

            async def post(i: int) -> int:
                event = {"event": "Order Completed", "anonymousId": f"a{i}", "messageId": f"p{i}"}
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/track", json=event, headers=AUTH
                ) as response:
                    return response.status

            statuses = await asyncio.gather(*(post(i) for i in range(100)))
        assert statuses == [200] * 100
        await wait_for(
            lambda: {e["messageId"] for e in state.events()} >= {f"p{i}" for i in range(100)},
            within_s=30,
        )
        children = children_of(parent.pid)
        parent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(parent.wait(), timeout=30) == 0
        assert not any(alive(pid) for pid in children)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()


async def test_sighup_reloads_every_child_and_children_die_with_the_parent(
    redis_server: RedisServer, receiver: tuple[WebhookReceiver, str]
) -> None:
    """``kill -HUP`` reaches every child (each reloads, the parent lives on); ``kill -9`` of
    the parent leaves no child serving an old configuration."""
    _, url = receiver
    port = free_port()
    env = process_env(redis_server.url, url, log_level="INFO")
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "serve", "--config", str(TEST_CONFIG),
        "--host", "127.0.0.1", "--port", str(port), "--processes", "2",
        "--no-workers", env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lines: list[str] = []

    async def read_stderr() -> None:
        assert parent.stderr is not None
        async for line in parent.stderr:
            lines.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read_stderr())
    children: list[int] = []
    try:
        await wait_for(lambda: sum("router listening" in line for line in lines) == 2, within_s=30)
        walkers = "native walkers" if dlp._native is not None else "pure-Python walkers"
        assert sum(walkers in line for line in lines) == 2  # each child says which it runs
        assert sum(f"; {build_name()} build)" in line for line in lines) == 2  # as this one
        children = children_of(parent.pid)
        assert len(children) == 2
        parent.send_signal(signal.SIGHUP)
        await wait_for(
            lambda: sum("configuration reloaded" in line for line in lines) == 2, within_s=15
        )
        assert parent.returncode is None
        assert sorted(children_of(parent.pid)) == sorted(children)

        parent.kill()
        await parent.wait()
        await wait_for(lambda: not any(alive(pid) for pid in children), within_s=15)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
