"""Signed webhooks (Standard Webhooks): the minimized event, POSTed as JSON.

Each request carries ``webhook-id`` (the event's messageId, so a retry is recognisable),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``:
``v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`` keyed with the base64-decoded bytes of
the ``whsec_`` secret. With ``batch_size: 1`` the body is the event itself; with more, it is
``{"batch": [...]}`` and the id is derived from the batch's messageIds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import ClassVar
from urllib.parse import urlsplit

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from destinations.base import Connector, Delivery, Encoded, HttpRequest


class WebhookSettings(BaseModel):
    """``settings`` of a ``webhook`` destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://[^\s/]+")
    secret: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("secret")
    @classmethod
    def _secret_is_whsec(cls, value: str) -> str:
        signing_key(value)
        return value


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (its base64-decoded bytes)."""
    if not secret.startswith("whsec_"):
        raise ValueError("a webhook secret starts with 'whsec_' followed by base64")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the part after 'whsec_' is not valid base64") from exc
    if len(key) < 16:
        raise ValueError("a webhook secret should hold at least 16 random bytes (24-64 advised)")
    return key


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_request(
    key: bytes,
    url: str,
    headers: Mapping[str, str],
    *,
    ident: str,
    body: bytes,
    now: datetime,
    indices: tuple[int, ...] = (),
) -> HttpRequest:
    """A signed JSON POST (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) with
    the configured ``headers`` (masked when shown)."""
    timestamp = int(now.timestamp())
    return HttpRequest(
        method="POST",
        url=url,
        headers={
            **headers,
            "content-type": "application/json",
            "webhook-id": ident,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, ident, timestamp, body),
        },
        body=body,
        indices=indices,
        secrets=tuple(headers.values()),
    )


def webhook_id(batch: Sequence[Delivery]) -> str:
    """The messageId for one event (``.`` is not allowed in ids), a digest for a batch."""
    if len(batch) == 1 and "." not in batch[0].message_id:
        return batch[0].message_id
    digest = hashlib.sha256("\n".join(d.message_id for d in batch).encode()).hexdigest()
    return f"batch_{digest[:32]}"


class WebhookConnector(Connector[WebhookSettings]):
    """POST minimized events to a partner's endpoint, signed per Standard Webhooks."""

    type_name: ClassVar[str] = "webhook"
    settings_model: ClassVar[type[BaseModel]] = WebhookSettings
    max_batch_size: ClassVar[int] = 1000
    forward_traceparent: ClassVar[bool] = True

    def __init__(self, destination_id: str, settings: WebhookSettings) -> None:
        super().__init__(destination_id, settings)
        self._key = signing_key(settings.secret)

    def recipient(self) -> str:
        """The endpoint's host (``recipient:`` in the routing file names the organisation)."""
        return urlsplit(self.settings.url).hostname or self.settings.url

    def encode(self, batch: Sequence[Delivery], now: datetime) -> Encoded:
        """One request for the whole batch, signed with this attempt's timestamp."""
        if len(batch) == 1:
            body = msgspec.json.encode(batch[0].payload)
        else:
            body = msgspec.json.encode({"batch": [d.payload for d in batch]})
        request = signed_request(
            self._key,
            self.settings.url,
            self.settings.headers,
            ident=webhook_id(batch),
            body=body,
            now=now,
            indices=tuple(range(len(batch))),
        )
        return Encoded(requests=[request])
