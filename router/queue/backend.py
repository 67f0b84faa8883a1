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

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisClusterException, SlotNotCoveredError

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # redis[hiredis] (a dependency): the C packer of the commands
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis without a wheel for this platform
    _hiredis_pack = None

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


class ClusterUnavailableError(ConnectionError):
    """The cluster cannot serve the command right now (no reachable node, a slot without a
    master during a failover): a ``RedisError`` like any outage, so the edge answers 503 and
    the workers wait, instead of a task dying on redis-py's ``RedisClusterException``."""


def _outage(exc: RedisClusterException) -> bool:
    """Whether redis-py's cluster exception is an outage (and not a programming error such as
    a cross-slot transaction, which must stay loud)."""
    return isinstance(exc, SlotNotCoveredError) or str(exc).startswith(_OUTAGE_MESSAGES)


_OUTAGE_MESSAGES = ("Redis Cluster cannot be connected", "All slots are not covered")
"""redis-py 7.4 raises these (``NodesManager.initialize``) as ``RedisClusterException``, which
is not a ``RedisError``."""


class _Cluster(RedisCluster):
    """``RedisCluster`` with two corrections (redis-py 7.4):

    - the slot map is loaded before a command's routing is worked out: on the lazy path the
      node first talked to keeps an open connection that ``aclose`` does not reach (a
      ResourceWarning per client, an error under ``-W error``); initializing first takes the
      same path as an explicit ``await client.initialize()``, which closes cleanly;
    - an outage while the slot map is reloaded (every seed down, or a slot without a master in
      a failover) is raised as ``ClusterUnavailableError`` (a ``RedisError``), not as the bare
      ``RedisClusterException`` that no ``except RedisError`` catches.
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if self._initialize:
                await self.initialize()
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            if _outage(exc):
                raise ClusterUnavailableError(str(exc)) from exc
            raise

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        del shard_hint  # never given by the router
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


class _ClusterPipeline(ClusterPipeline):
    """A cluster pipeline whose outages are ``ClusterUnavailableError`` (see ``_Cluster``)."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as exc:
            if _outage(exc):
                raise ClusterUnavailableError(str(exc)) from exc
            raise


_PLAIN_ARGS = frozenset({str, bytes, int})


def fast_pack(encoder: Any, args: tuple[Any, ...]) -> list[bytes] | None:
    """A command in the Redis protocol, packed by hiredis in C, when its bytes are redis-py's:
    a one-word command name and only str (encoded as UTF-8, strictly), bytes and int arguments
    (not bool); ``None`` otherwise (redis-py packs it: floats, memoryviews, its errors for
    None or bool, names such as ``CONFIG GET`` that it splits). redis-py's asyncio connection
    packs in Python, ~1.9 us per argument; an audit flush sends two per event."""
    if _hiredis_pack is None or not args:
        return None
    name = args[0]
    if (
        (type(name) is str or type(name) is bytes)
        and name.isalpha()
        and encoder.encoding == "utf-8"
        and encoder.encoding_errors == "strict"
        and _PLAIN_ARGS.issuperset(map(type, args))
    ):
        return [_hiredis_pack(args)]
    return None


if TYPE_CHECKING:
    _Base = AbstractConnection
else:
    _Base = object


class _Packing(_Base):
    """What the router's connections change in redis-py's (mixed in before its classes):

    - commands are packed by ``fast_pack`` where it can;
    - a connection closed while a command is on its way out raises ``ConnectionError``. With a
      socket timeout, redis-py 7.4 writes from a task of ``asyncio.wait_for`` that starts a
      turn of the loop later; a disconnect in between (a cluster pipeline's other node
      failing, a failover) left ``_writer`` as ``None``, and the send died with an
      ``AttributeError`` that no ``except RedisError`` catches (a flush task failed at
      shutdown that way in a failover test)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        return fast_pack(self.encoder, args) or super().pack_command(*args)

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectionError("the connection closed while a command was being sent")
        writer.writelines(command)
        await writer.drain()


class _Connection(_Packing, aioredis.Connection):
    pass


class _SSLConnection(_Packing, aioredis.SSLConnection):
    pass


class _UnixConnection(_Packing, aioredis.UnixDomainSocketConnection):
    pass


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    aioredis.Connection: _Connection,
    aioredis.SSLConnection: _SSLConnection,
    aioredis.UnixDomainSocketConnection: _UnixConnection,
}
"""redis-py's connection classes (chosen by the URL's scheme) -> the same with ``fast_pack``."""


def connect(url: str, timeout_ms: int) -> aioredis.Redis:
    """A client that fails fast (one reconnect, no long backoff): the edge answers 503.

    On a cluster, a command to a node that is down fails after one retry with the topology
    reloaded, so the router answers 503 during a failover and follows the promoted replica as
    soon as the cluster has one (no restart)."""
    timeout = timeout_ms / 1000
    scheme = urlsplit(url).scheme
    if scheme not in CLUSTER_SCHEMES:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=0,
        )
        pool = client.connection_pool  # the URL chose the class (TCP, TLS or a socket file)
        pool.connection_class = _PACKING.get(pool.connection_class, pool.connection_class)
        return client
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
    # Every node connection, the seeds' and those of the nodes found later, packs with
    # fast_pack: RedisCluster makes its nodes from these keyword arguments.
    options = cluster.get_connection_kwargs()
    chosen: Any = options["connection_class"]
    packing: type[Any] = _PACKING.get(chosen, chosen)
    options["connection_class"] = packing
    for node in cluster.nodes_manager.startup_nodes.values():
        node.connection_class = packing
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


async def add_replica_waits(
    pipe: Any, client: aioredis.Redis, keys: Sequence[str], replicas: int, timeout_ms: int
) -> int:
    """Append ``WAIT replicas timeout_ms`` to a non-transactional pipeline, once per server its
    ``keys`` live on, after the writes (a cluster pipeline sends each node's commands on one
    connection, and WAIT counts that connection's writes). Returns how many were appended:
    the pipeline's last results, each the number of replicas that acknowledged."""
    if not keys:
        return 0
    if not is_cluster(client):
        pipe.execute_command("WAIT", replicas, timeout_ms)
        return 1
    cluster = as_cluster(client)
    try:
        await cluster.initialize()  # the slot map (a no-op once loaded)
        found = [cluster.get_node_from_key(key) for key in keys]
    except RedisClusterException as exc:
        raise ClusterUnavailableError(str(exc)) from exc
    nodes = {node.name: node for node in found if node is not None}
    for node in nodes.values():
        pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
    return len(nodes)
