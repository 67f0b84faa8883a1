"""The destinations package's error tree.

    DestinationError
    ├── TransportError     a request got no HTTP answer (timeout, refused, reset): raised by
    │                      ``destinations.transport``, always retryable
    └── FieldPathError     an allowlist path does not follow the ``a.b[].c`` syntax: raised by
                           ``destinations.fields`` while a routing file is compiled (also a
                           ``ValueError``, which the routing file's validation reports)

Platform answers are not exceptions: ``Connector.interpret`` turns every HTTP response into an
``Outcome`` value, encoders return dropped events as ``Drop`` values, and a deletion the platform
cannot take is a ``DeletionSkipped`` value.
"""

from __future__ import annotations


class DestinationError(Exception):
    """Base of every error raised by the destinations package."""


class TransportError(DestinationError):
    """No HTTP response was received; always retryable.

    ``reason`` is a bounded code (``timeout``, ``connection_error``) safe for metric labels.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class FieldPathError(DestinationError, ValueError):
    """A field path does not follow the ``a.b[].c`` syntax."""
