"""A real Redis Cluster (3 masters, 3 replicas) on free loopback ports, owned by the test.

Each node is a ``redis-server --cluster-enabled yes`` in its own directory; ``redis-cli --cluster
create ... --cluster-replicas 1`` assigns the slots and the replicas, and ``start`` returns once
every node reports ``cluster_state:ok``. ``kill`` sends SIGKILL to one node (a crash); ``stop``
tears every node down.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.redis_server import RedisServer

MASTERS = 3
BUS_OFFSET = 10_000
"""A cluster node also listens on its port + 10000 (the cluster bus)."""


def free_cluster_port(taken: set[int]) -> int:
    """A port that is free, as is its bus port (+10000), and not handed out yet."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + BUS_OFFSET > 65535 or port in taken or port + BUS_OFFSET in taken:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        taken.update((port, port + BUS_OFFSET))
        return port


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run `make test`, which installs it")
    return path


class RedisClusterNode(RedisServer):
    """One cluster node: a ``RedisServer`` with cluster mode on (its config file survives a
    restart), and ``redis-cli`` helpers."""

    def __init__(self, directory: Path, port: int, extra_args: tuple[str, ...] = ()) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(
            directory,
            port,
            extra_args=(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                *extra_args,
            ),
        )

    def cli(self, *args: str, timeout_s: float = 10.0) -> str:
        """``redis-cli -p <port> args...``'s output ("" when the node does not answer)."""
        result = subprocess.run(
            [_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        return result.stdout

    def info(self, section: str) -> dict[str, str]:
        """``INFO <section>`` (``CLUSTER INFO`` for ``"cluster-info"``) as a dict."""
        text = (
            self.cli("cluster", "info") if section == "cluster-info" else self.cli("info", section)
        )
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    @property
    def alive(self) -> bool:
        """Whether the node's process runs."""
        return self.process is not None and self.process.poll() is None


class RedisCluster:
    """Start a 3-master + 3-replica cluster, kill a node, wait for the cluster to be ok."""

    def __init__(
        self, directory: Path, masters: int = MASTERS, extra_args: tuple[str, ...] = ()
    ) -> None:
        """``extra_args`` go to every node's ``redis-server`` after the tests' settings (the
        last value of a setting wins), e.g. the benchmark's ``--appendfsync everysec``."""
        taken: set[int] = set()
        self.nodes = [
            RedisClusterNode(directory / f"node{i}", free_cluster_port(taken), extra_args)
            for i in range(2 * masters)
        ]

    @property
    def url(self) -> str:
        """The router's URL for this cluster: every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        """Start every node, create the cluster and wait until every node says it is ok."""
        try:
            self._create()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        for node in self.nodes:
            node.start()  # returns once the node answers PING
        result = subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout[-2000:]}")
        self.wait_ok()
        # Every replica attached to its master (so a killed master has a successor).
        self._wait(lambda: len(self.masters()) == len(self.nodes) // 2, "replicas did not attach")
        self._wait(
            lambda: all(
                n.info("replication").get("master_link_status") == "up" for n in self.replicas()
            ),
            "replicas did not sync",
        )

    def masters(self) -> list[RedisClusterNode]:
        """The live nodes that are masters with slots right now."""
        return [n for n in self.nodes if n.alive and n.info("replication").get("role") == "master"]

    def replicas(self) -> list[RedisClusterNode]:
        """The live nodes that are replicas right now."""
        return [n for n in self.nodes if n.alive and n.info("replication").get("role") == "slave"]

    def wait_ok(self, within_s: float = 30.0) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and agrees on the masters."""

        def ok() -> bool:
            live = [n for n in self.nodes if n.alive]
            return all(n.info("cluster-info").get("cluster_state") == "ok" for n in live)

        self._wait(ok, "the cluster did not reach cluster_state:ok", within_s)

    def node_of(self, key: str) -> RedisClusterNode:
        """The live master serving ``key``'s slot."""
        slot = int(self.nodes[0].cli("cluster", "keyslot", key).strip() or "-1")
        for node in self.masters():
            for line in node.cli("cluster", "nodes").splitlines():
                parts = line.split()
                if "myself" in parts[2] and "master" in parts[2]:
                    for span in parts[8:]:
                        low, _, high = span.partition("-")
                        if low.isdigit() and int(low) <= slot <= int(high or low):
                            return node
        raise RuntimeError(f"no live master serves slot {slot}")

    def kill(self, node: RedisClusterNode) -> None:
        """SIGKILL one node."""
        node.kill()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()

    @staticmethod
    def _wait(condition: Callable[[], bool], message: str, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(message)
            time.sleep(0.05)
