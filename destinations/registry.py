"""The connector registry: the routing file's ``type`` -> connector class.

``CONNECTORS`` are the platforms events are sent to (every one passes the contract suites);
``DESTINATION_TYPES`` adds ``aggregate``, which receives differentially private counts only.
"""

from __future__ import annotations

from typing import Any

from destinations.aggregate import AggregateConnector
from destinations.amplitude import AmplitudeConnector
from destinations.base import Connector
from destinations.ga4 import GA4Connector
from destinations.meta_capi import MetaCapiConnector
from destinations.mixpanel import MixpanelConnector
from destinations.tiktok import TikTokConnector
from destinations.webhook import WebhookConnector

CONNECTORS: dict[str, type[Connector[Any]]] = {
    connector.type_name: connector
    for connector in (
        WebhookConnector,
        GA4Connector,
        MetaCapiConnector,
        AmplitudeConnector,
        MixpanelConnector,
        TikTokConnector,
    )
}

DESTINATION_TYPES: dict[str, type[Connector[Any]]] = {
    **CONNECTORS,
    AggregateConnector.type_name: AggregateConnector,
}
