"""``BatchHistogram`` and the two metric readers that carry it: the only module that touches
OpenTelemetry SDK internals.

The SDK has no public way to add metrics that bypass its instruments to a collection, so the
readers lean on two private members of ``opentelemetry-sdk`` (the version is bounded in
pyproject.toml, and ``tests/unit/observability/test_histogram.py`` fails if they change):

- ``MetricExporter._preferred_temporality``: the exporter's temporality per instrument type,
  read by ``ExportingReader`` to give its histogram the one the OTLP exporter asked for;
- ``MetricReader._receive_metrics(metrics_data, timeout_millis, **kwargs)``: what the SDK calls
  with each collection; ``ExportingReader`` overrides it to add the histograms before export.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

SCOPE: Final = "router"
"""The instrumentation scope of the router's tracer and meter; the batch histograms join it."""


class _Point:
    """One attribute set's aggregate, as the SDK's explicit-bucket aggregation keeps it."""

    __slots__ = ("attributes", "counts", "exemplars", "maximum", "minimum", "start_ns", "total")

    def __init__(self, attributes: Mapping[str, str], buckets: int, start_ns: int) -> None:
        self.attributes = dict(attributes)
        self.counts = [0] * buckets
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.start_ns = start_ns
        self.exemplars: dict[int, Exemplar] = {}


class _Sink:
    """What one reader collects: cumulative (kept) or delta (reset at each collection)."""

    def __init__(self, temporality: AggregationTemporality) -> None:
        self.temporality = temporality
        self.points: dict[tuple[tuple[str, str], ...], _Point] = {}
        self.last_collect_ns = time.time_ns()


class BatchHistogram:
    """An explicit-bucket histogram recorded a batch of values at a time.

    The SDK's ``Histogram.record`` costs about 13 us per value (attribute cleaning and hashing,
    a measurement object, the exemplar filter), which at 20,000 delivered events a second is a
    quarter of a core. This one buckets a batch with ``bisect_left`` (the SDK's rule: a value on
    a boundary falls in the bucket below), then merges counts, sum, min and max once per batch:
    every event still counts once, with its own value. Exemplars follow the SDK's defaults
    (trace-based filter, the last value of each bucket, cleared at each collection).

    Each reader made by ``setup_telemetry`` registers a sink with its temporality and adds the
    histogram to what it collects (``PrometheusReader``, ``ExportingReader``).
    """

    def __init__(self, name: str, *, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(b) for b in bounds)
        self._lock = threading.Lock()  # the OTLP reader collects from its own thread
        self._sinks: list[_Sink] = []

    def sink(self, temporality: AggregationTemporality) -> _Sink:
        """A new reader's view of this histogram."""
        sink = _Sink(temporality)
        with self._lock:
            self._sinks.append(sink)
        return sink

    def record(self, attributes: Mapping[str, str], values: Iterable[float]) -> None:
        """One observation per value (negative values count as 0)."""
        if not self._sinks:
            return
        clamped = [value if value > 0.0 else 0.0 for value in values]
        if not clamped:
            return
        bounds = self.bounds
        counts = [0] * (len(bounds) + 1)
        last: dict[int, float] = {}
        for value in clamped:
            index = bisect_left(bounds, value)
            counts[index] += 1
            last[index] = value
        total, lowest, highest = sum(clamped), min(clamped), max(clamped)
        now = time.time_ns()
        exemplars = _exemplars(last, now)
        key = tuple(sorted(attributes.items()))
        with self._lock:
            for sink in self._sinks:
                point = sink.points.get(key)
                if point is None:
                    start = (
                        now
                        if sink.temporality is AggregationTemporality.CUMULATIVE
                        else sink.last_collect_ns
                    )
                    point = sink.points[key] = _Point(attributes, len(counts), start)
                point.counts = [a + b for a, b in zip(point.counts, counts, strict=True)]
                point.total += total
                point.minimum = min(point.minimum, lowest)
                point.maximum = max(point.maximum, highest)
                point.exemplars.update(exemplars)

    def collect(self, sink: _Sink) -> Metric | None:
        """The histogram as one reader sees it now (``None`` while nothing was recorded)."""
        now = time.time_ns()
        with self._lock:
            points = [
                HistogramDataPoint(
                    attributes=dict(point.attributes),
                    start_time_unix_nano=point.start_ns,
                    time_unix_nano=now,
                    count=sum(point.counts),
                    sum=point.total,
                    bucket_counts=list(point.counts),
                    explicit_bounds=self.bounds,
                    min=point.minimum,
                    max=point.maximum,
                    exemplars=sorted(point.exemplars.values(), key=lambda e: e.value),
                )
                for point in sink.points.values()
            ]
            for point in sink.points.values():
                point.exemplars = {}
            if sink.temporality is AggregationTemporality.DELTA:
                sink.points = {}
            sink.last_collect_ns = now
        if not points:
            return None
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=points, aggregation_temporality=sink.temporality),
        )


def _exemplars(last: Mapping[int, float], now: int) -> dict[int, Exemplar]:
    """The last value of each bucket, tied to the current span when it is sampled."""
    span_context = trace.get_current_span().get_span_context()
    if not (span_context.is_valid and span_context.trace_flags.sampled):
        return {}
    return {
        index: Exemplar({}, value, now, span_context.span_id, span_context.trace_id)
        for index, value in last.items()
    }


def with_histograms(
    data: MetricsData | None,
    found: Sequence[Metric],
    resource: Resource,
) -> MetricsData | None:
    """The SDK's collection plus the ``BatchHistogram`` metrics, in the router's scope."""
    if not found:
        return data
    resources = list(data.resource_metrics) if data is not None else []
    for r, resource_metrics in enumerate(resources):
        for s, scope_metrics in enumerate(resource_metrics.scope_metrics):
            if scope_metrics.scope.name == SCOPE:
                scopes = list(resource_metrics.scope_metrics)
                scopes[s] = ScopeMetrics(
                    scope_metrics.scope, [*scope_metrics.metrics, *found], scope_metrics.schema_url
                )
                resources[r] = ResourceMetrics(
                    resource_metrics.resource, scopes, resource_metrics.schema_url
                )
                return MetricsData(resources)
    scope = ScopeMetrics(InstrumentationScope(SCOPE), list(found), "")
    if resources:
        first = resources[0]
        resources[0] = ResourceMetrics(
            first.resource, [*first.scope_metrics, scope], first.schema_url
        )
    else:
        resources.append(ResourceMetrics(resource, [scope], ""))
    return MetricsData(resources)


class _HistogramSinks:
    """The sinks of one reader and how to add their metrics to a collection."""

    def __init__(
        self,
        histograms: Sequence[BatchHistogram],
        temporality: AggregationTemporality,
        resource: Resource,
    ) -> None:
        self.resource = resource
        self.sinks = [(h, h.sink(temporality)) for h in histograms]

    def add_to(self, data: MetricsData | None) -> MetricsData | None:
        found = [m for h, sink in self.sinks if (m := h.collect(sink)) is not None]
        return with_histograms(data, found, self.resource)


class PrometheusReader(InMemoryMetricReader):
    """The in-memory reader behind ``/metrics``, with the ``BatchHistogram`` metrics."""

    def __init__(self, histograms: Sequence[BatchHistogram], resource: Resource) -> None:
        super().__init__()
        self._histograms = _HistogramSinks(histograms, AggregationTemporality.CUMULATIVE, resource)

    def get_metrics_data(self) -> MetricsData | None:
        """The SDK's metrics and the batch histograms, collected now."""
        return self._histograms.add_to(super().get_metrics_data())


class ExportingReader(PeriodicExportingMetricReader):
    """The periodic OTLP reader, with the ``BatchHistogram`` metrics in every export (in the
    exporter's preferred temporality for histograms)."""

    def __init__(
        self, exporter: MetricExporter, histograms: Sequence[BatchHistogram], resource: Resource
    ) -> None:
        super().__init__(exporter)
        preferred: Mapping[type, AggregationTemporality] = (
            getattr(exporter, "_preferred_temporality", None) or {}
        )
        temporality = preferred.get(HistogramInstrument, AggregationTemporality.CUMULATIVE)
        self._histograms = _HistogramSinks(histograms, temporality, resource)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        merged = self._histograms.add_to(metrics_data)
        super()._receive_metrics(merged or metrics_data, timeout_millis, **kwargs)
