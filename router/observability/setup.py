"""Telemetry set-up: providers from the ``OTEL_*`` variables, once per process.

In the app's ``cleanup_ctx`` (``shutdown()`` flushes the exporters)::

    telemetry = setup_telemetry()            # reads os.environ; pass env= in tests

Exporters: OTLP over HTTP (``opentelemetry-exporter-otlp-proto-http``, imported lazily) when
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` say ``otlp``, or when they are unset and an
``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_ENDPOINT`` is set; ``console`` prints spans; ``none``, or
nothing configured, exports nothing. Service name, resource attributes and sampler come from
the SDK's own ``OTEL_*`` handling (the ``OTEL_*`` variables are the SDK's contract, not the
router's, so ``Settings`` does not read them).

With no span exporter at all, the tracer is a ``PropagatingTracer`` (see
``router.observability.tracing``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter, MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from router.observability.histogram import (
    SCOPE,
    BatchHistogram,
    ExportingReader,
    PrometheusReader,
)
from router.observability.metrics import LATENCY_BUCKETS_S, RouterMetrics
from router.observability.tracing import PropagatingTracer, ScrubbingSpanExporter

log = logging.getLogger("router.observability")

SERVICE_NAME: Final = "consent-router"
OTLP_PACKAGE: Final = "opentelemetry-exporter-otlp-proto-http"
_OTLP_EXPORTERS: Final = {
    "traces": ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    "metrics": ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
}
"""The exporter class of each signal in ``OTLP_PACKAGE`` (imported only when asked for)."""


def _wanted(env: Mapping[str, str], signal: str) -> str:
    """``otlp``, ``console`` or ``none`` for ``traces`` or ``metrics``."""
    configured = env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    if configured:
        return configured.split(",")[0].strip()
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    return "otlp" if any(env.get(name) for name in endpoints) else "none"


def otlp_endpoint(env: Mapping[str, str], signal: str) -> str | None:
    """The signal's OTLP/HTTP URL: its own variable as is, or the base one plus ``/v1/...``."""
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return specific
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return f"{base.rstrip('/')}/v1/{signal}" if base else None


def _check_protocol(env: Mapping[str, str], signal: str) -> None:
    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip().lower() != "http/protobuf":
        log.warning(
            "only OTLP over HTTP (http/protobuf) is supported; using it",
            extra={"config": protocol.strip()[:32]},
        )


def _otlp_exporter(env: Mapping[str, str], signal: str) -> Any:
    """The OTLP/HTTP exporter of ``traces`` or ``metrics`` for its endpoint, or None when the
    optional package is not installed."""
    _check_protocol(env, signal)
    module, name = _OTLP_EXPORTERS[signal]
    try:
        exporter_class = getattr(__import__(module, fromlist=[name]), name)
    except ImportError:
        log.warning("OTLP export requested but %s is not installed", OTLP_PACKAGE)
        return None
    return exporter_class(endpoint=otlp_endpoint(env, signal))


def _span_exporter(env: Mapping[str, str]) -> SpanExporter | None:
    wanted = _wanted(env, "traces")
    if wanted == "console":
        return ConsoleSpanExporter()
    exporter: SpanExporter | None = _otlp_exporter(env, "traces") if wanted == "otlp" else None
    return exporter


def _metric_reader(
    env: Mapping[str, str], histograms: Sequence[BatchHistogram], resource: Resource
) -> MetricReader | None:
    if _wanted(env, "metrics") != "otlp":
        return None
    exporter: MetricExporter | None = _otlp_exporter(env, "metrics")
    return ExportingReader(exporter, histograms, resource) if exporter is not None else None


@dataclass(slots=True)
class Telemetry:
    """The process's providers, its tracer and meter, and the router's instruments."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: trace.Tracer
    meter: metrics.Meter
    metrics: RouterMetrics
    prometheus_reader: InMemoryMetricReader
    exporting: tuple[str, ...] = ()
    """What is exported (``traces``, ``metrics``), for the start-up log line."""

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(
    env: Mapping[str, str] | None = None,
    *,
    span_exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] = (),
    install_global: bool = False,
) -> Telemetry:
    """Providers configured from ``OTEL_*`` (``env`` defaults to ``os.environ``).

    ``span_exporter`` / ``metric_readers`` add exporters (tests pass an in-memory one; such a
    reader gets the SDK's instruments, not ``router_delivery_latency_seconds``, which only the
    Prometheus text and the OTLP exporter carry: see ``BatchHistogram``). Spans go
    through ``ScrubbingSpanExporter`` whatever the exporter. ``install_global`` also makes them
    the global providers (for libraries that use ``trace.get_tracer``); off by default so that
    tests and several apps in one process do not share state.
    """
    env = os.environ if env is None else env
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    tracer_provider = TracerProvider(resource=resource)
    exporting: list[str] = []
    configured = _span_exporter(env)
    if configured is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(ScrubbingSpanExporter(configured)))
        exporting.append("traces")
    if span_exporter is not None:
        tracer_provider.add_span_processor(
            SimpleSpanProcessor(ScrubbingSpanExporter(span_exporter))
        )
    latency = BatchHistogram(
        "router_delivery_latency_seconds",
        unit="s",
        description="From acceptance at the edge to the destination's answer",
        bounds=LATENCY_BUCKETS_S,
    )
    prometheus = PrometheusReader([latency], resource)
    readers: list[MetricReader] = [prometheus, *metric_readers]
    reader = _metric_reader(env, [latency], resource)
    if reader is not None:
        readers.append(reader)
        exporting.append("metrics")
    meter_provider = MeterProvider(metric_readers=readers, resource=resource)
    if install_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    meter = meter_provider.get_meter(SCOPE)
    recording = configured is not None or span_exporter is not None
    tracer: trace.Tracer = (
        tracer_provider.get_tracer(SCOPE)
        if recording
        else PropagatingTracer(tracer_provider.sampler)
    )
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        tracer=tracer,
        meter=meter,
        metrics=RouterMetrics(meter, latency=latency),
        prometheus_reader=prometheus,
        exporting=tuple(exporting),
    )
