"""The router's metrics: ``Stats`` counters, histograms and gauges, and the ``/metrics`` text.

Counters live in ``Stats`` (process-local, exact); ``RouterMetrics.bridge_counters`` exports them
through OTLP as observable counters. Every series is labelled through the one policy of
``router.observability.labels``, so ``/metrics`` and OTLP carry the same label sets.
``render_prometheus`` is the one Prometheus text renderer.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry import metrics
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Sum

from router.observability.histogram import BatchHistogram
from router.observability.labels import LABEL_KEYS, metric_labels

COUNTER_NAMES: Final = (
    "router_aggregate_contributions_total",
    "router_aggregate_releases_total",
    "router_anomalies_total",
    "router_anomaly_alerts_total",
    "router_audit_dropped_total",
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
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

Labels = tuple[tuple[str, str], ...]
CounterSeries = Callable[[], Iterable[tuple[str, Labels, int]]]
"""``(name, labels, value)`` of every counter series, labels already bounded (``Stats.series``)."""


class Stats:
    """Process-local counters: rendered at ``/metrics``, bridged to OTLP."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, Labels], int] = {}
        """A plain dict: compiled, a ``Counter``'s ``+=`` went through its Python-level slots."""
        self._series: dict[tuple[str, Labels], tuple[str, Labels]] = {}
        """The checked, sorted series of each ``add`` call's name and labels as given (the
        same few per request): one dict lookup instead of a check and a sort."""

    def add(self, name: str, amount: int = 1, **labels: str) -> None:
        """Increment a counter; only keys of ``LABEL_KEYS`` are accepted."""
        given = (name, tuple(labels.items()))
        series = self._series.get(given)
        if series is None:
            if not LABEL_KEYS.issuperset(labels):
                unknown = set(labels) - LABEL_KEYS
                raise ValueError(f"unbounded metric label(s): {sorted(unknown)}")
            series = self._series[given] = (name, tuple(sorted(labels.items())))
        counters = self._counters
        counters[series] = counters.get(series, 0) + amount

    def get(self, name: str, **labels: str) -> int:
        """The sum of a counter over every series matching the given labels."""
        wanted = set(labels.items())
        return sum(
            value
            for (series, series_labels), value in self._counters.items()
            if series == name and wanted <= set(series_labels)
        )

    def series(self) -> list[tuple[str, Labels, int]]:
        """Every series as ``(name, labels, value)``, sorted, labels through the label policy:
        series that differ only in a refused value are summed (what ``/metrics`` renders and
        the OTLP bridge observes)."""
        totals: Counter[tuple[str, Labels]] = Counter()
        for (name, labels), value in self._counters.items():
            totals[(name, _bounded(labels))] += value
        return [(name, labels, value) for (name, labels), value in sorted(totals.items())]


@functools.lru_cache(maxsize=4096)
def _bounded(labels: Labels) -> Labels:
    return tuple(sorted(metric_labels(dict(labels)).items()))


@dataclass(slots=True)
class RouterMetrics:
    """Histograms and gauges (the counters are in ``Stats``)."""

    meter: metrics.Meter
    latency: BatchHistogram = field(
        default_factory=lambda: BatchHistogram(
            "router_delivery_latency_seconds", unit="s", description="", bounds=LATENCY_BUCKETS_S
        )
    )
    """``router_delivery_latency_seconds``: one observation per event, recorded a batch at a
    time (setup_telemetry gives it readers; a default one exports nowhere)."""
    queue_lag_s: dict[str, float] = field(default_factory=dict)
    _request: metrics.Histogram | None = None
    _labels: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """Checked labels of (destination, status), kept: every request records one."""

    def __post_init__(self) -> None:
        self._request = self.meter.create_histogram(
            "router_delivery_request_seconds",
            unit="s",
            description="Duration of one outgoing request to a destination",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.meter.create_observable_gauge(
            "router_queue_lag_seconds",
            callbacks=[self._observe_lag],
            unit="s",
            description="Age of the oldest queued entry, per destination",
        )

    def record_delivery_latencies(
        self, destination: str, seconds: Sequence[float], *, status: str
    ) -> None:
        """One observation per event of a batch (negative ages count as 0)."""
        if seconds:
            self.latency.record(self._labels_of(destination, status), seconds)

    def record_request(self, destination: str, seconds: float, *, status: str) -> None:
        """One outgoing request's duration; ``status`` is the HTTP status or a reason code."""
        assert self._request is not None
        self._request.record(max(seconds, 0.0), self._labels_of(destination, status))

    def _labels_of(self, destination: str, status: str) -> dict[str, str]:
        labels = self._labels.get((destination, status))
        if labels is None:
            labels = metric_labels({"destination": destination, "status": status})
            if len(self._labels) < 4096:  # bounded: ids from the routing file, status codes
                self._labels[(destination, status)] = labels
        return labels

    def set_queue_lag(self, destination: str, seconds: float) -> None:
        """The latest sampled lag of a destination (read at each collection)."""
        self.queue_lag_s[destination] = max(seconds, 0.0)

    def bridge_counters(self, names: Iterable[str], series: CounterSeries) -> None:
        """Export ``Stats`` counters through OTLP as observable counters, one per name."""
        for name in names:
            self.meter.create_observable_counter(name, callbacks=[_counter_callback(name, series)])

    def _observe_lag(self, options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        for destination, seconds in sorted(self.queue_lag_s.items()):
            yield metrics.Observation(seconds, metric_labels({"destination": destination}))


def _counter_callback(
    name: str, series: CounterSeries
) -> Callable[[metrics.CallbackOptions], Iterator[metrics.Observation]]:
    def callback(options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        for series_name, labels, value in series():
            if series_name == name:
                yield metrics.Observation(value, dict(labels))

    return callback


def render_prometheus(stats: Stats, reader: InMemoryMetricReader | None = None) -> str:
    """The Prometheus text of ``/metrics``: the counters of ``stats``, then the histograms and
    gauges of ``reader`` (its OTLP copies of the counters, ``COUNTER_NAMES``, left out)."""
    lines: list[str] = []
    previous = ""
    for name, labels, value in stats.series():
        if name != previous:
            lines.append(f"# TYPE {name} counter")
            previous = name
        lines.append(_sample(name, labels, value))
    data = reader.get_metrics_data() if reader is not None else None
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name not in COUNTER_NAMES:
                    lines.extend(_metric_lines(metric.name, metric.data))
    return "\n".join(lines) + "\n" if lines else ""


def _metric_lines(name: str, points: object) -> Iterator[str]:
    if isinstance(points, Histogram):
        yield f"# TYPE {name} histogram"
        for point in points.data_points:
            labels = _text(point.attributes)
            cumulative = 0
            bounds = (*point.explicit_bounds, float("inf"))
            for bound, count in zip(bounds, point.bucket_counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                yield _sample(f"{name}_bucket", (*labels, ("le", le)), cumulative)
            yield _sample(f"{name}_sum", labels, point.sum)
            yield _sample(f"{name}_count", labels, point.count)
    elif isinstance(points, Gauge | Sum):
        yield f"# TYPE {name} {'gauge' if isinstance(points, Gauge) else 'counter'}"
        for number in points.data_points:
            yield _sample(name, _text(number.attributes), number.value)


def _text(attributes: Mapping[str, Any] | None) -> Labels:
    return tuple((key, str(value)) for key, value in (attributes or {}).items())


def _sample(name: str, labels: Iterable[tuple[str, str]], value: int | float) -> str:
    """One line: ``name{k="v",...} value``, labels sorted, integers exact, floats as ``%g``
    (``int | float``: compiled, a ``float`` parameter would turn a count into a float)."""
    number = f"{value:g}" if isinstance(value, float) else str(value)
    rendered = ",".join(f'{key}="{_escape(text)}"' for key, text in sorted(labels))
    return f"{name}{{{rendered}}} {number}" if rendered else f"{name} {number}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
