"""Parsing of ``ROUTER_REDIS_URL``: one server or the seed nodes of a cluster."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from router.queue.backend import cluster_nodes, is_cluster_url
from router.settings import Settings

HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,2}", fullmatch=True)
PORTS = st.integers(min_value=1, max_value=65535)


@given(st.lists(st.tuples(HOSTS, PORTS), min_size=1, max_size=8))
def test_every_seed_node_is_read_back(nodes: list[tuple[str, int]]) -> None:
    """``redis+cluster://h:p,h:p`` gives back its nodes in order, without credentials."""
    url = "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in nodes)
    assert is_cluster_url(url)
    assert cluster_nodes(url) == (nodes, None, None)


def test_credentials_ipv6_and_tls() -> None:
    """User and password (percent-decoded) come before the first node; IPv6 in brackets."""
    url = "rediss+cluster://app:p%40ss@[::1]:7000,10.0.0.2:7001"
    assert is_cluster_url(url)
    assert cluster_nodes(url) == ([("::1", 7000), ("10.0.0.2", 7001)], "app", "p@ss")
    assert not is_cluster_url("redis://127.0.0.1:6379/0")


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://h1:7000,h2",
        "redis+cluster://h1:7000,:7001",
        "redis+cluster://h1:70000",
        "redis+cluster://",
    ],
)
def test_a_node_without_host_and_port_is_a_clear_settings_error(url: str) -> None:
    """The setting is refused at start-up, naming the node (no traceback from the client)."""
    with pytest.raises(ValidationError) as caught:
        Settings(redis_url=url)
    assert "is not host:port" in str(caught.value)
