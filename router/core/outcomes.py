"""The one vocabulary of outcomes: why an event is refused, skipped or dead-lettered. Pure.

- ``RejectCode`` / ``Rejection``: an event the ingest refuses (answered to the client with its
  index, kept redacted in quarantine, counted in ``router_events_rejected_total{code}``).
- ``SkipReason`` / ``Skip``: a destination that does not get an event (the plan at ingest, the
  re-check at delivery; ``router_events_skipped_total{reason}``). Consent's ``DenyReason``
  members are members here, with the same values: ``consent/`` never imports the router, so
  the router's enum takes consent's values, and a test keeps them in step.
- ``Deliver``: the minimized event a destination gets.
- ``Failure``: why a delivery was dead-lettered, as a bounded ``reason`` and a ``detail``.

Every code is bounded: safe as a metric label, free of personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeAlias

import msgspec

from consent.model import DenyReason
from destinations.base import Delivery, DeliveryOf, PayloadT
from destinations.dlp import Detection
from router.routing import CompiledDestination


class RejectCode(StrEnum):
    """Why an event is refused (the ``code`` of its rejection)."""

    MISSING_FIELD = "missing_field"
    MISSING_IDENTITY = "missing_identity"
    INVALID_TYPE = "invalid_type"
    INVALID_ID = "invalid_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_FIELD = "invalid_field"
    INVALID_VALUE = "invalid_value"
    INVALID_NUMBER = "invalid_number"
    INVALID_STRING = "invalid_string"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    EVENT_TOO_LARGE = "event_too_large"
    UNKNOWN_CATEGORIES = "unknown_categories"
    INVALID_SOURCE = "invalid_source"
    CONSENT_EXPIRED = "consent_expired"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was refused: a stable code, the field path, a human message."""

    code: RejectCode
    path: str
    message: str


class SkipReason(StrEnum):
    """Why a destination does not get an event: the router's reasons, then consent's."""

    DESTINATION_DISABLED = "destination_disabled"
    SUPPRESSED = "suppressed"
    EVENT_NOT_LISTED = "event_not_listed"
    INTEGRATIONS_DISABLED = "integrations_disabled"
    NO_CONSENT = DenyReason.NO_CONSENT.value
    CATEGORY_DENIED = DenyReason.CATEGORY_DENIED.value
    VENDOR_DENIED = DenyReason.VENDOR_DENIED.value
    GPC_OPT_OUT = DenyReason.GPC_OPT_OUT.value
    US_OPT_OUT = DenyReason.US_OPT_OUT.value
    CONSENT_EXPIRED = DenyReason.CONSENT_EXPIRED.value
    CONSENT_UNPARSEABLE = DenyReason.CONSENT_UNPARSEABLE.value
    CONSENT_WITHDRAWN = DenyReason.CONSENT_WITHDRAWN.value

    @classmethod
    def denied(cls, reason: DenyReason) -> SkipReason:
        """Consent's reason as a skip reason (the same value)."""
        return cls(reason.value)


class Deliver(msgspec.Struct, frozen=True):
    """Send this minimized event to this destination; ``detections`` are the safety net's.

    ``Deliver`` and ``Skip`` are structs: the planner builds one per event and destination,
    and a frozen dataclass costs several times more to build."""

    destination: CompiledDestination
    delivery: Delivery
    detections: tuple[Detection, ...] = ()


class Skip(msgspec.Struct, frozen=True):
    """Do not send; ``reason`` is bounded, ``detail`` is for people (no personal data)."""

    destination: CompiledDestination
    reason: SkipReason
    detail: str = ""


Decision = Deliver | Skip


class QueueItemOf(msgspec.Struct, Generic[PayloadT], frozen=True, gc=False):
    """One delivery as planned and as stored in a destination's stream: the one queue item type.

    The planner builds it (``QueueItem``), the enqueuer stores it, a worker first reads it with
    the payload undecoded (``QueuedItem``, ``router.queue.items``). Defined here because the
    pure planner makes it and may not import ``router.queue``.
    """

    delivery: DeliveryOf[PayloadT]
    subjects: tuple[str, ...] = ()
    """The event's hashed subject ids (for the delivery re-check and erasure)."""
    requires: tuple[str, ...] = ()
    accepted_at: datetime | None = None
    trace: str | None = None
    """The ``traceparent`` of the ingest span: the delivery span links to it."""
    pii: tuple[str, ...] = ()
    """Kinds of personal data the PII safety net found and let through (declared fields)."""


QueueItem: TypeAlias = QueueItemOf[dict[str, Any]]
"""A queue item with its payload decoded."""


class Failure(msgspec.Struct, frozen=True):
    """Why a delivery was dead-lettered: ``reason`` is bounded (the metric label), ``detail``
    says more (``max_attempts`` after ``http_503``; ``dropped`` for ``too_old``).

    A dead letter stores it as ``text``, ``reason`` or ``reason:detail``: the form dead letters
    have always had, so those written before this type existed read the same."""

    reason: str
    detail: str = ""

    @property
    def text(self) -> str:
        """The stored form."""
        return f"{self.reason}:{self.detail}" if self.detail else self.reason

    @classmethod
    def parse(cls, text: str) -> Failure:
        """A stored failure back (the reason ends at the first colon)."""
        reason, _, detail = text.partition(":")
        return cls(reason, detail)
