"""The connector registry: the routing file's ``type`` -> connector class."""

from __future__ import annotations

from typing import Any

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
