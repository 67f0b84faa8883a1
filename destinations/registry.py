"""The connector registry: the routing file's ``type`` -> connector class."""

from __future__ import annotations

from typing import Any

from destinations.base import Connector
from destinations.webhook import WebhookConnector

CONNECTORS: dict[str, type[Connector[Any]]] = {
    WebhookConnector.type_name: WebhookConnector,
}
