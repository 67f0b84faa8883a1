"""`router serve --processes N`: N routers on one port, stopped together."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.conftest import HOOK_SECRET, TEST_CONFIG, WRITE_KEY, wait_for
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
    """Whether a process id still exists."""
    return Path(f"/proc/{pid}").exists()


async def test_processes_share_the_port_deliver_everything_and_stop_together(
    redis_server: RedisServer, receiver: tuple[WebhookReceiver, str]
) -> None:
    """Two processes answer on one port; every accepted event is delivered; SIGTERM stops all."""
    state, url = receiver
    port = free_port()
    env = {
        **os.environ,
        "ROUTER_REDIS_URL": redis_server.url,
        "HOOK_URL": url,
        "HOOK_SECRET": HOOK_SECRET,
        "ROUTER_LOG_LEVEL": "WARNING",
    }
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
