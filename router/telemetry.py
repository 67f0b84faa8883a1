"""Counters and structured logs with bounded labels only.

Labels are restricted to a fixed set of keys whose values are identifiers from the routing file
or bounded reason codes: route, source, destination, type, reason, code, stage, status. Nothing
else can be attached, so user ids, IPs, emails and consent strings cannot reach telemetry.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from typing import Any, Final

LABEL_KEYS: Final = frozenset(
    {"route", "source", "destination", "type", "reason", "code", "stage", "status", "kind", "field"}
)
LOG_KEYS: Final = LABEL_KEYS | {"error", "count", "path", "config", "port", "consumer"}

COUNTER_NAMES: Final = (
    "router_anomalies_total",
    "router_anomaly_alerts_total",
    "router_consent_writes_total",
    "router_deliveries_exhausted_total",
    "router_delivery_retries_total",
    "router_entries_reclaimed_total",
    "router_erasures_total",
    "router_events_accepted_total",
    "router_events_dead_lettered_total",
    "router_events_delivered_total",
    "router_events_received_total",
    "router_events_rejected_total",
    "router_events_skipped_total",
    "router_fields_omitted_total",
    "router_pii_detections_total",
    "router_requests_throttled_total",
    "router_requests_unavailable_total",
    "router_sdk_metrics_total",
)
"""Every counter the router increments: the ones bridged to OTLP (a test keeps it complete)."""

Labels = tuple[tuple[str, str], ...]


class Stats:
    """Process-local counters, rendered in the Prometheus text format at ``/metrics``."""

    def __init__(self) -> None:
        self._counters: Counter[tuple[str, Labels]] = Counter()

    def add(self, name: str, amount: int = 1, **labels: str) -> None:
        """Increment a counter; only keys of ``LABEL_KEYS`` are accepted."""
        if not LABEL_KEYS.issuperset(labels):
            unknown = set(labels) - LABEL_KEYS
            raise ValueError(f"unbounded metric label(s): {sorted(unknown)}")
        self._counters[(name, tuple(sorted(labels.items())))] += amount

    def get(self, name: str, **labels: str) -> int:
        """The sum of a counter over every series matching the given labels."""
        wanted = set(labels.items())
        return sum(
            value
            for (series, series_labels), value in self._counters.items()
            if series == name and wanted <= set(series_labels)
        )

    def series(self) -> list[tuple[str, Labels, int]]:
        """Every series as ``(name, labels, value)`` (what the OTLP bridge observes)."""
        return [(name, labels, value) for (name, labels), value in self._counters.items()]

    def render(self) -> str:
        """Prometheus text exposition of every counter."""
        lines: list[str] = []
        names = sorted({name for name, _ in self._counters})
        for name in names:
            lines.append(f"# TYPE {name} counter")
            for (series, labels), value in sorted(self._counters.items()):
                if series != name:
                    continue
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; only the bounded keys of ``LOG_KEYS`` are copied from extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in LOG_KEYS:
            if key in record.__dict__:
                data[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            data["exception"] = record.exc_info[0].__name__
        return json.dumps(data, default=str)


def configure_logging(level: str) -> None:
    """JSON logs on stderr at the given level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
