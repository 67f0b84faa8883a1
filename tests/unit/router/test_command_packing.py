"""Commands packed by hiredis (``router.queue.backend.fast_pack``) are byte for byte what
redis-py packs, and everything else is left to redis-py (its bytes and its errors); a
connection closed under a command being sent fails as a ``ConnectionError``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError, DataError

from router.queue import backend
from router.queue.backend import as_cluster, connect, fast_pack
from tests.redis_server import RedisServer

REFERENCE = Connection()
NAMES = st.sampled_from(["EVALSHA", "XADD", "MGET", "ZADD", "SET", b"HSET", "evalsha"])
ARGS = st.one_of(
    st.text(max_size=40),  # non-ASCII, control characters, surrogates
    st.binary(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
)
ODD = st.one_of(
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=8).map(memoryview),
    st.binary(max_size=8).map(bytearray),
)


def packed(pack: Any, args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return "ok", b"".join(pack(*args))
    except (DataError, UnicodeError) as exc:
        return "error", type(exc)


def ours(*args: Any) -> list[bytes]:
    return backend._Connection().pack_command(*args)


@settings(max_examples=500)
@given(NAMES, st.lists(ARGS, max_size=12))
def test_plain_commands_are_packed_as_redis_py_packs_them(name: Any, args: list[Any]) -> None:
    command = (name, *args)
    assert packed(ours, command) == packed(REFERENCE.pack_command, command)


@settings(max_examples=300)
@given(NAMES, st.lists(ARGS | ODD, min_size=1, max_size=6))
def test_anything_else_is_packed_or_refused_as_redis_py_does(name: Any, args: list[Any]) -> None:
    command = (name, *args)
    assert packed(ours, command) == packed(REFERENCE.pack_command, command)


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG GET", "maxmemory"),  # redis-py splits the name
        (b"SCRIPT LOAD", "return 1"),
        ("SET", "k", 1.5),
        ("SET", "k", True),
        ("SET", "k", None),
        ("SET", "k", memoryview(b"v")),
    ],
)
def test_what_hiredis_does_not_pack(command: tuple[Any, ...]) -> None:
    assert fast_pack(REFERENCE.encoder, command) is None
    assert packed(ours, command) == packed(REFERENCE.pack_command, command)


def test_plain_commands_take_the_c_packer() -> None:
    """Not a fallback in disguise: a plain command is one chunk from hiredis."""
    command = ("EVALSHA", "a" * 40, 2, "rt:{audit}", b"\xff", -7, "é")
    assert fast_pack(REFERENCE.encoder, command) == [b"".join(REFERENCE.pack_command(*command))]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", backend._Connection),
        ("rediss://127.0.0.1:6379/0", backend._SSLConnection),
        ("unix:///tmp/redis.sock", backend._UnixConnection),
    ],
)
def test_every_single_server_scheme_gets_the_packer(url: str, kind: type) -> None:
    client = connect(url, 500)
    assert client.connection_pool.connection_class is kind


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", backend._Connection),
        ("rediss+cluster://127.0.0.1:7000", backend._SSLConnection),
    ],
)
def test_cluster_nodes_get_the_packer(url: str, kind: type) -> None:
    """The seed nodes now, and the nodes the cluster reports later (made from the same
    keyword arguments)."""
    cluster = as_cluster(connect(url, 500))
    assert cluster.get_connection_kwargs()["connection_class"] is kind
    seeds = cluster.nodes_manager.startup_nodes.values()
    assert seeds
    assert {node.connection_class for node in seeds} == {kind}


async def send_while_closing(connection: Any) -> BaseException | None:
    """Send a PING and close the connection before the write runs: redis-py (7.4) writes
    from a task of ``asyncio.wait_for`` that starts a turn of the loop later."""
    await connection.connect()
    send = asyncio.ensure_future(connection.send_packed_command(connection.pack_command("PING")))
    await asyncio.sleep(0)  # the send is inside wait_for, its write not yet run
    await connection.disconnect(nowait=True)
    try:
        await send
    except BaseException as exc:  # what it raised is the test
        return exc
    return None


@pytest.mark.parametrize("kind", [Connection, backend._Connection])
async def test_a_connection_closed_under_a_send_raises_a_connection_error(
    redis_server: RedisServer, kind: type
) -> None:
    """redis-py's own connection dies with an ``AttributeError`` there (what no ``except
    RedisError`` catches: a flush task failed that way in a cluster failover); the router's
    raises ``ConnectionError``, an outage like any other."""
    error = await send_while_closing(
        kind(host="127.0.0.1", port=redis_server.port, socket_timeout=1)
    )
    if kind is Connection:
        assert isinstance(error, AttributeError)  # the race is real: the test can fail
    else:
        assert isinstance(error, ConnectionError)
