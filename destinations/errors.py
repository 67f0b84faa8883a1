"""The destinations package's error tree.

    DestinationError
    ├── TransportError     the request did not get an HTTP answer (timeout, refused, reset)
    └── SettingsError      a connector cannot be built from validated settings

Platform answers are not exceptions: ``Connector.interpret`` turns every HTTP response into an
``Outcome`` value, and encoders return dropped events as ``Drop`` values.
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


class SettingsError(DestinationError):
    """A connector could not be built from its settings."""
