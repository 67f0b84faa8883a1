"""The router package's error tree.

    RouterError
    ├── ConfigError          the routing file or settings are invalid (carries every problem)
    ├── QueueUnavailableError     Redis could not take or give work (the edge answers 503)
    └── AuditConflictError   an audit lane's head moved under its one writer, again and again

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


class AuditConflictError(RouterError):
    """A lane's head was not the one its writer held, again and again (two writers sharing a
    lane by mistake); never raised by contention between writers."""
