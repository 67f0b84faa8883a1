"""The delivery latency histogram, recorded a batch at a time, against the SDK's own histogram;
the SDK internals its readers rely on."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from router.observability.histogram import BatchHistogram, ExportingReader
from router.observability.metrics import LATENCY_BUCKETS_S, Stats, render_prometheus
from router.observability.setup import setup_telemetry

NAME = "router_delivery_latency_seconds"
VALUES = [0.0, 0.005, 0.0050001, 0.01, 0.3, 0.3, 2.5, 7.0, 299.0, 300.0, 301.0, 1e6, -4.0]
"""On boundaries (a value on a boundary falls in the bucket below), between, beyond, negative."""


def _points(data: MetricsData | None, name: str = NAME) -> list[HistogramDataPoint]:
    assert data is not None
    found: list[HistogramDataPoint] = []
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)  # type: ignore[arg-type]
    return found


def _sdk_reference(values: Sequence[float]) -> HistogramDataPoint:
    """What the SDK instrument recorded per value, as the router used to do."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    histogram = provider.get_meter("reference").create_histogram(
        NAME, unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S
    )
    for value in values:
        histogram.record(max(value, 0.0), {"destination": "ga4", "status": "delivered"})
    (point,) = _points(reader.get_metrics_data())
    provider.shutdown()
    return point


def test_batches_give_the_same_histogram_as_one_sdk_record_per_event() -> None:
    """Counts per bucket, count, sum, min and max equal the SDK's, whatever the batching."""
    telemetry = setup_telemetry({})
    telemetry.metrics.record_delivery_latencies("ga4", VALUES[:5], status="delivered")
    telemetry.metrics.record_delivery_latencies("ga4", [], status="delivered")
    telemetry.metrics.record_delivery_latencies("ga4", (VALUES[5],), status="delivered")
    telemetry.metrics.record_delivery_latencies("ga4", VALUES[6:], status="delivered")
    telemetry.metrics.record_delivery_latencies("ga4", [0.2, 0.3], status="dead_lettered")
    points = _points(telemetry.prometheus_reader.get_metrics_data())
    delivered = next(
        p for p in points if p.attributes == {"destination": "ga4", "status": "delivered"}
    )
    reference = _sdk_reference(VALUES)
    assert list(delivered.bucket_counts) == list(reference.bucket_counts)
    assert list(delivered.explicit_bounds) == list(reference.explicit_bounds)
    assert delivered.count == reference.count == len(VALUES)
    assert delivered.sum == pytest.approx(reference.sum)
    assert (delivered.min, delivered.max) == (reference.min, reference.max)
    dead = next(p for p in points if p.attributes["status"] == "dead_lettered")
    assert dead.count == 2
    text = render_prometheus(Stats(), telemetry.prometheus_reader)
    assert f'{NAME}_count{{destination="ga4",status="delivered"}} {len(VALUES)}' in text
    assert f'{NAME}_bucket{{destination="ga4",le="0.005",status="delivered"}} 3' in text
    assert f'{NAME}_bucket{{destination="ga4",le="+Inf",status="delivered"}} 13' in text
    assert f'{NAME}_count{{destination="ga4",status="dead_lettered"}} 2' in text
    # Cumulative: a second scrape still has everything, plus what came since.
    telemetry.metrics.record_delivery_latencies("ga4", (1.0,), status="delivered")
    again = render_prometheus(Stats(), telemetry.prometheus_reader)
    assert f'{NAME}_count{{destination="ga4",status="delivered"}} {len(VALUES) + 1}' in again
    telemetry.shutdown()


def test_nothing_recorded_renders_no_latency_series() -> None:
    """No delivery yet: no histogram (as with the SDK instrument)."""
    telemetry = setup_telemetry({})
    assert NAME not in render_prometheus(Stats(), telemetry.prometheus_reader)
    telemetry.shutdown()


class _Exporter(MetricExporter):
    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={HistogramInstrument: temporality})
        self.exported: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


@pytest.mark.parametrize(
    "temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]
)
def test_the_otlp_reader_exports_the_histogram_in_the_exporters_temporality(
    temporality: AggregationTemporality,
) -> None:
    """Every export carries the histogram, with the SDK's other metrics in the same scope;
    delta exports carry only what came since the previous one."""
    histogram = BatchHistogram(NAME, unit="s", description="latency", bounds=LATENCY_BUCKETS_S)
    exporter = _Exporter(temporality)
    resource = Resource.create({"service.name": "test"})
    reader = ExportingReader(exporter, [histogram], resource)
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    other = provider.get_meter("router").create_counter("router_other_total")
    other.add(1)
    labels = {"destination": "ga4", "status": "delivered"}
    histogram.record(labels, [0.1, 0.2, 0.3])
    reader.collect()
    histogram.record(labels, [0.4])
    reader.collect()
    provider.shutdown()
    first, second = exporter.exported[0], exporter.exported[1]
    assert _points(first, "router_other_total")
    scopes = [s.scope.name for r in first.resource_metrics for s in r.scope_metrics]
    assert scopes == ["router"]
    (one,) = _points(first)
    (two,) = _points(second)
    assert one.count == 3
    assert one.attributes == labels
    if temporality is AggregationTemporality.CUMULATIVE:
        assert (two.count, two.min, two.max) == (4, 0.1, 0.4)
        assert two.start_time_unix_nano == one.start_time_unix_nano
    else:
        assert (two.count, two.min, two.max) == (1, 0.4, 0.4)
        assert two.start_time_unix_nano >= one.time_unix_nano
    metric = first.resource_metrics[0].scope_metrics[0].metrics[-1]
    assert metric.data.aggregation_temporality is temporality  # type: ignore[union-attr]


def test_exemplars_point_at_the_sampled_span_of_the_batch() -> None:
    """As the SDK's defaults: within a sampled span, the last value of each bucket is kept
    with the span's ids until the next collection; outside a span, no exemplar."""
    telemetry = setup_telemetry({})
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("deliver") as span:
        telemetry.metrics.record_delivery_latencies("ga4", [0.15, 0.2, 3.0], status="delivered")
    telemetry.metrics.record_delivery_latencies("ga4", [0.12], status="delivered")
    (point,) = _points(telemetry.prometheus_reader.get_metrics_data())
    ids = span.get_span_context()
    assert [(e.value, e.span_id, e.trace_id) for e in point.exemplars] == [
        (0.2, ids.span_id, ids.trace_id),
        (3.0, ids.span_id, ids.trace_id),
    ]
    (later,) = _points(telemetry.prometheus_reader.get_metrics_data())
    assert later.exemplars == []
    assert later.count == 4
    telemetry.shutdown()


def test_the_sdk_internals_the_readers_use_are_unchanged() -> None:
    """``histogram.py`` reads ``MetricExporter._preferred_temporality`` (the OTLP exporter's
    too) and overrides ``_receive_metrics``, which ``collect()`` must call with the collection:
    an SDK that changed either fails here (adapt histogram.py, then move the bound in
    pyproject.toml)."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter,
    )

    delta = AggregationTemporality.DELTA
    assert _Exporter(delta)._preferred_temporality[HistogramInstrument] is delta
    otlp = OTLPMetricExporter(
        endpoint="http://127.0.0.1:9/v1/metrics", preferred_temporality={HistogramInstrument: delta}
    )
    assert otlp._preferred_temporality[HistogramInstrument] is delta
    otlp.shutdown()

    parameters = inspect.signature(PeriodicExportingMetricReader._receive_metrics).parameters
    assert list(parameters) == ["self", "metrics_data", "timeout_millis", "kwargs"]
    assert parameters["timeout_millis"].default == 10_000
    assert parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD

    received: list[MetricsData] = []

    class Spy(ExportingReader):
        def _receive_metrics(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> None:
            received.append(metrics_data)
            super()._receive_metrics(metrics_data, timeout_millis, **kwargs)

    exporter = _Exporter(AggregationTemporality.CUMULATIVE)
    histogram = BatchHistogram(NAME, unit="s", description="latency", bounds=LATENCY_BUCKETS_S)
    reader = Spy(exporter, [histogram], Resource.create({}))
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("router").create_counter("router_other_total").add(1)
    histogram.record({"destination": "ga4"}, [0.1])
    reader.collect()
    provider.shutdown()
    assert _points(received[0], "router_other_total")
    assert _points(exporter.exported[0])  # the histogram was added on the way
