"""The router package's error tree.

    RouterError
    ├── ConfigError          the routing file or settings are invalid (carries every problem)
    └── QueueUnavailableError     Redis could not take or give work (the edge answers 503)

Rejected events and skipped destinations are values (``Rejection``, ``Skip``), not exceptions.
"""

from __future__ import annotations


class RouterError(Exception):
    """Base of every error raised by the router package."""


class ConfigError(RouterError):
    """The routing file is invalid. ``problems`` lists ``path: message`` lines, all of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class QueueUnavailableError(RouterError):
    """Redis is unreachable or failed a write; the caller answers 503 with Retry-After."""
