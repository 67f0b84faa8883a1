"""The Redis the router runs on, chosen by ``ROUTER_REDIS_URL``: one server or a Redis Cluster.

- ``redis://host:port/db`` (and ``rediss://``, ``unix://``): one Redis server (the default);
- ``redis+cluster://host:port,host:port,...`` (``rediss+cluster://`` for TLS): a Redis Cluster
  or Valkey cluster; the listed nodes are seeds, the client discovers the others and follows
  slot moves and failovers. Credentials go before the first node
  (``redis+cluster://user:pass@h1:p1,h2:p2``).

``connect`` is the one place a client is made; the rest of the router keeps to commands that
work on both (every multi-key command and script on keys of one hash slot: see the key
functions in ``router.queue``, ``consent.store`` and ``router.audit``). The few places that
must differ ask ``is_cluster``: per-node commands (``INFO``, ``PING``) go to every master.

The client is typed as ``aioredis.Redis`` everywhere: ``RedisCluster`` offers the same command
methods, and the type checker then keeps the code to the subset both have (pub/sub is the
exception, handled in ``consent.store``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
"""URL scheme -> whether TLS is used."""


def is_cluster_url(url: str) -> bool:
    """Whether the URL names a Redis Cluster."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The seed nodes, user and password of a ``redis+cluster://`` URL (``ValueError`` when a
    node is not ``host:port``)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    user: str | None = None
    password: str | None = None
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        name, _, secret = credentials.partition(":")
        user = unquote(name) or None
        password = unquote(secret) or None
    nodes: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster node {item.strip()!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, user, password


class _Cluster(RedisCluster):
    """``RedisCluster`` that loads the slot map before a command's routing is worked out.

    redis-py 7.4 resolves a command's policy and slot before its lazy first ``initialize``; on
    that path the node it first talks to is left with an open connection that ``aclose`` does
    not reach (a ResourceWarning per client, an error under ``-W error``). Initializing first
    takes the same path as an explicit ``await client.initialize()``, which closes cleanly.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


def connect(url: str, timeout_ms: int) -> aioredis.Redis:
    """A client that fails fast (one reconnect, no long backoff): the edge answers 503.

    On a cluster, a command to a node that is down fails after one retry with the topology
    reloaded, so the router answers 503 during a failover and follows the promoted replica as
    soon as the cluster has one (no restart)."""
    timeout = timeout_ms / 1000
    scheme = urlsplit(url).scheme
    if scheme not in CLUSTER_SCHEMES:
        return aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
    nodes, user, password = cluster_nodes(url)
    cluster = _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=user,
        password=password,
        ssl=CLUSTER_SCHEMES[scheme],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
        # Reload the slot map on the first MOVED: after a failover every slot of the dead
        # master moves at once.
        reinitialize_steps=1,
    )
    return cast(aioredis.Redis, cluster)


def is_cluster(client: aioredis.Redis) -> bool:
    """Whether the client talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def as_cluster(client: aioredis.Redis) -> RedisCluster:
    """The cluster client behind ``client`` (only when ``is_cluster``)."""
    return cast(RedisCluster, client)


async def ping_all(client: aioredis.Redis) -> None:
    """PING the server, or every master of a cluster (raises when one does not answer)."""
    if not is_cluster(client):
        await client.ping()  # type: ignore[misc]
        return
    cluster = as_cluster(client)
    if not cluster.get_primaries():
        await cluster.initialize()
    await cluster.ping(target_nodes=RedisCluster.PRIMARIES)  # type: ignore[misc]


async def memory_infos(client: aioredis.Redis) -> list[dict[str, Any]]:
    """``INFO memory`` of the server, or of every master of a cluster."""
    if not is_cluster(client):
        return [await client.info("memory")]
    cluster = as_cluster(client)
    replies = await cluster.info("memory", target_nodes=RedisCluster.PRIMARIES)
    # One node answers with its dict, several with {node name: dict}.
    if replies and all(isinstance(v, dict) for v in replies.values()):
        return list(replies.values())
    return [replies]


async def run_script(
    client: aioredis.Redis, source: str, *, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """Run a Lua script with EVAL (its text each time, cached by the server anyway).

    Not EVALSHA: after a cluster failover the promoted replica has an empty script cache, and
    redis-py's cluster client loads scripts on the nodes its slot map calls primaries, which
    still names the promoted node a replica until the map is reloaded: EVALSHA would answer
    NOSCRIPT until then. EVAL cannot miss."""
    return await client.eval(source, len(keys), *keys, *args)  # type: ignore[misc]
