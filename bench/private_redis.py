"""A private redis-server for a micro-benchmark: a temporary directory, the tests' settings."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.redis_server import RedisServer


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """Start a redis-server in a temporary directory; its URL; stopped and removed after."""
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
