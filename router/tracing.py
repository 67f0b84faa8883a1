"""OpenTelemetry: providers from the ``OTEL_*`` variables, W3C trace context, bounded attributes.

Set-up, once per process (in the app's ``cleanup_ctx``; ``shutdown()`` flushes the exporters)::

    telemetry = setup_telemetry()            # reads os.environ; pass env= in tests

Exporters: OTLP over HTTP (``opentelemetry-exporter-otlp-proto-http``, imported lazily) when
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` say ``otlp``, or when they are unset and an
``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_ENDPOINT`` is set; ``console`` prints spans; ``none``, or
nothing configured, exports nothing. Service name, resource attributes and sampler come from
the SDK's own ``OTEL_*`` handling.

With no span exporter at all, the tracer is a ``PropagatingTracer``: every span still gets its
ids and the SDK sampler's decision (so the ingest continues the SDK's trace, the stream entries
carry it and webhooks receive a ``traceparent`` exactly as with a recording tracer), but
nothing is recorded that no one would read: the four spans of an ingest request cost about a
third of what recorded SDK spans cost.

The hot path (ingest)::

    with start_ingest_span(tracer, request.headers, route=route, source=source.id):
        with stage_span(tracer, "consent"): ...
        with stage_span(tracer, "plan"): ...
        trace = current_traceparent()        # stored in QueueItem.trace
        with stage_span(tracer, "enqueue"): ...

The delivery worker::

    with start_delivery_span(tracer, destination.id, [item.trace for item in batch]):
        with start_client_span(tracer, destination.id, request.method) as span:
            if connector.forward_traceparent:
                headers["traceparent"] = inject_traceparent(span.get_span_context())
            ...
            set_span_attributes(span, status=response.status)

No personal data: every attribute goes through ``span_attributes`` (a fixed set of keys whose
values must be short identifiers or enums), exceptions set only their class name as the status,
and exporters are wrapped so that any attribute or event added some other way (a library's
instrumentation) is filtered the same way before it leaves the process. Baggage is never read,
and neither is ``tracestate``: its values are opaque to us and a client may put anything there
(a user id, an email), which every span of the trace would then carry to the exporter; the
exporter wrapper also drops any trace state that reached a span some other way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, overload

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Exemplar, MeterProvider
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue

if TYPE_CHECKING:
    from opentelemetry.util._decorator import _AgnosticContextManager

_Links = Sequence[Link] | None

log = logging.getLogger("router.tracing")

SERVICE_NAME: Final = "consent-router"
SCOPE: Final = "router"
_PROPAGATOR: Final = TraceContextTextMapPropagator()

# --- bounded attributes --------------------------------------------------------------------------

SPAN_KEYS: Final[Mapping[str, str]] = {
    "route": "router.route",
    "source": "router.source",
    "destination": "router.destination",
    "event_type": "router.event_type",
    "reason": "router.reason",
    "status": "http.response.status_code",
    "method": "http.request.method",
}
"""Short names accepted by ``span_attributes`` and the span attribute each one becomes."""

EVENT_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias", "batch"})
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STAGES: Final = frozenset({"consent", "plan", "enqueue", "sanitize", "recheck", "encode"})
_SAFE_VALUE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_CODE: Final = re.compile(r"[a-z0-9][a-z0-9_:]{0,47}")
CODE_KEYS: Final = frozenset({"route", "reason", "status", "type", "code", "stage", "kind"})
"""Keys whose values are codes (``http_400``, ``consent_withdrawn``, ``batch``): lower case,
digits, ``_`` and ``:`` only. Source and destination ids come from the routing file."""
_LONG_DIGITS: Final = re.compile(r"[0-9]{7}")  # a phone or account number, never an identifier
_ALLOWED: Final = frozenset(SPAN_KEYS.values())


def safe_value(value: object, *, code: bool = False) -> bool:
    """Whether a string is short and shaped like an identifier (no ``@``, spaces, long digit
    runs...), or with ``code``, like a lower-case code."""
    pattern = _CODE if code else _SAFE_VALUE
    return (
        isinstance(value, str)
        and pattern.fullmatch(value) is not None
        and _LONG_DIGITS.search(value) is None
    )


def span_attributes(**values: object) -> dict[str, AttributeValue]:
    """The span attributes for these short names; unknown keys and unsafe values are dropped."""
    attributes: dict[str, AttributeValue] = {}
    for name, value in values.items():
        key = SPAN_KEYS.get(name)
        if key is None or value is None:
            continue
        if name == "status":
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                attributes[key] = value
        elif name == "method":
            if isinstance(value, str) and value.upper() in HTTP_METHODS:
                attributes[key] = value.upper()
        elif name == "event_type":
            if value in EVENT_TYPES:
                attributes[key] = str(value)
        elif safe_value(value, code=name in CODE_KEYS):
            attributes[key] = str(value)
    return attributes


def set_span_attributes(span: Span, **values: object) -> None:
    """Set bounded attributes on a span (the only way the router sets any); nothing to check
    on a span that records nothing."""
    if span.is_recording():
        span.set_attributes(span_attributes(**values))


def _filter(attributes: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """Re-check finished attributes by their full key: allowed keys with safe values only."""
    kept: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if key not in _ALLOWED:
            continue
        code = key in ("router.route", "router.reason")
        if (isinstance(value, int) and not isinstance(value, bool)) or safe_value(value, code=code):
            kept[key] = value
    return kept


# --- W3C trace context ---------------------------------------------------------------------------


def extract_context(headers: Mapping[str, str]) -> otel_context.Context:
    """The context of an incoming ``traceparent``; empty when absent. ``tracestate`` is not
    read (opaque client data that would ride along on every span)."""
    value = headers.get("traceparent")
    if value is None:
        return otel_context.Context()
    return _PROPAGATOR.extract({"traceparent": value})


def inject_traceparent(span_context: SpanContext) -> str | None:
    """The ``traceparent`` header value of a span context, or None for an invalid one."""
    if not span_context.is_valid:
        return None
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{int(span_context.trace_flags):02x}"
    )


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The span context stored in a ``traceparent`` string, or None when it does not parse."""
    if not value:
        return None
    span_context = trace.get_current_span(extract_context({"traceparent": value}))
    found = span_context.get_span_context()
    return found if found.is_valid else None


def incoming_traceparent(headers: Mapping[str, str]) -> str | None:
    """The SDK's ``traceparent`` (normalized), or None when absent or invalid: what a stream
    entry carries when no span is recorded (``PropagatingTracer``), so the delivery can still
    be linked to the caller's trace."""
    value = headers.get("traceparent")
    found = parse_traceparent(value) if value else None
    return inject_traceparent(found) if found is not None else None


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span (what the ingest stores in the stream entry)."""
    return inject_traceparent(trace.get_current_span().get_span_context())


# --- spans of the hot path -----------------------------------------------------------------------


@contextlib.contextmanager
def _span(
    tracer: trace.Tracer,
    name: str,
    *,
    kind: SpanKind,
    attributes: Mapping[str, object],
    context: otel_context.Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    recording = not isinstance(tracer, PropagatingTracer)  # else attributes go nowhere
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=span_attributes(**attributes) if recording else None,
        links=links,
        record_exception=False,  # an exception's message may quote user data
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def start_ingest_span(
    tracer: trace.Tracer,
    headers: Mapping[str, str],
    *,
    route: str,
    source: str | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """The SERVER span of one ingest request, continuing the SDK's ``traceparent``."""
    return _span(
        tracer,
        "ingest",
        kind=SpanKind.SERVER,
        attributes={"route": route, "source": source, "method": "POST"},
        context=extract_context(headers),
    )


def ingest_trace(
    tracer: trace.Tracer, headers: Mapping[str, str], *, route: str
) -> contextlib.AbstractContextManager[tuple[Span, str | None]]:
    """The ingest's SERVER span, and the ``traceparent`` its deliveries carry (their delivery
    spans link to it). With no exporter (``PropagatingTracer``) a span would record nothing, so
    none is made and the deliveries carry the SDK's own ``traceparent`` (a ``nullcontext``: no
    generator on the hot path)."""
    if isinstance(tracer, PropagatingTracer):
        return contextlib.nullcontext((trace.INVALID_SPAN, incoming_traceparent(headers)))
    return _traced_ingest(tracer, headers, route)


@contextlib.contextmanager
def _traced_ingest(
    tracer: trace.Tracer, headers: Mapping[str, str], route: str
) -> Iterator[tuple[Span, str | None]]:
    with start_ingest_span(tracer, headers, route=route) as span:
        yield span, current_traceparent()


def stage_span(
    tracer: trace.Tracer, stage: str, **attributes: object
) -> contextlib.AbstractContextManager[Span]:
    """A child span for one step of the ingest (``consent``, ``plan``, ``enqueue``...).

    Under a span that is not recording (no exporter, or sampled out) no span is made: a stage
    span has no children and its context goes nowhere, so it could only cost time; the ``with``
    block then gets the current span.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (known: {', '.join(sorted(STAGES))})")
    current = trace.get_current_span()
    if not current.is_recording():
        return contextlib.nullcontext(current)
    return _span(tracer, stage, kind=SpanKind.INTERNAL, attributes=attributes)


MAX_LINKS: Final = 128


def delivery_links(traceparents: Iterable[str | None]) -> list[Link]:
    """Links to the ingest spans whose ``traceparent`` travelled in the stream entries."""
    links: list[Link] = []
    seen: set[str] = set()
    for value in traceparents:
        if not value or value in seen or len(links) >= MAX_LINKS:
            continue
        seen.add(value)
        span_context = parse_traceparent(value)
        if span_context is not None:
            links.append(Link(span_context))
    return links


def start_delivery_span(
    tracer: trace.Tracer, destination: str, traceparents: Iterable[str | None]
) -> contextlib.AbstractContextManager[Span]:
    """The CONSUMER span of one delivery batch: a new trace, linked to every ingest span."""
    return _span(
        tracer,
        "deliver",
        kind=SpanKind.CONSUMER,
        attributes={"destination": destination},
        context=otel_context.Context(),  # a root span: a batch mixes many ingest traces
        links=delivery_links(traceparents),
    )


def start_client_span(
    tracer: trace.Tracer, destination: str, method: str
) -> contextlib.AbstractContextManager[Span]:
    """The CLIENT span of one outgoing request (no URL: it may hold an API key)."""
    return _span(
        tracer,
        "send",
        kind=SpanKind.CLIENT,
        attributes={"destination": destination, "method": method},
    )


# --- no exporter: carry the trace, record nothing ------------------------------------------------


class PropagatingTracer(trace.Tracer):
    """Non-recording spans with real ids and the sampler's decision (for when nothing exports).

    A recorded SDK span allocates attributes, events, links and locks, and is handed to the span
    processors at its end; with no processor that work is thrown away. These spans are the
    ``SpanContext`` only, made current like any other, so ``traceparent`` propagation (incoming,
    in the stream entries, to webhooks) is unchanged.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self._ids = RandomIdGenerator()

    def start_span(  # noqa: PLR0917 - the signature of opentelemetry's Tracer
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: _Links = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        """A non-recording span, child of the context's span (or a new trace's root)."""
        del start_time, record_exception, set_status_on_exception
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else self._ids.generate_trace_id()
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        sampled = result.decision is Decision.RECORD_AND_SAMPLE
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        span_context = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
        )
        return NonRecordingSpan(span_context)

    def start_as_current_span(  # noqa: PLR0917 - the signature of opentelemetry's Tracer
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: _Links = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _AgnosticContextManager[Span]:
        """``start_span``, made the current span for the ``with`` block."""
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        )


# --- exporters that re-check what leaves ---------------------------------------------------------


@overload
def _stateless(span_context: SpanContext) -> SpanContext: ...


@overload
def _stateless(span_context: SpanContext | None) -> SpanContext | None: ...


def _stateless(span_context: SpanContext | None) -> SpanContext | None:
    """The span context without its ``tracestate`` (vendor data we cannot vet)."""
    if span_context is None or not span_context.trace_state:
        return span_context
    return SpanContext(
        span_context.trace_id,
        span_context.span_id,
        span_context.is_remote,
        span_context.trace_flags,
    )


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of a finished span holding only allowed attributes, events reduced to names."""
    status = span.status
    if status.description and not safe_value(status.description):
        status = Status(status.status_code, None)
    return ReadableSpan(
        name=span.name,
        context=_stateless(span.context),
        parent=_stateless(span.parent),
        resource=span.resource,
        attributes=_filter(span.attributes),
        events=tuple(Event(e.name, {}, e.timestamp) for e in span.events),
        links=tuple(
            Link(_stateless(link.context), _filter(link.attributes)) for link in span.links
        ),
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanExporter(SpanExporter):
    """Wraps an exporter: every span goes through ``scrub_span`` first."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Scrub, then export."""
        return self.inner.export([scrub_span(s) for s in spans])

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the wrapped exporter."""
        return self.inner.force_flush(timeout_millis)


# --- set-up --------------------------------------------------------------------------------------

OTLP_PACKAGE: Final = "opentelemetry-exporter-otlp-proto-http"


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


def _span_exporter(env: Mapping[str, str]) -> SpanExporter | None:
    wanted = _wanted(env, "traces")
    if wanted == "console":
        return ConsoleSpanExporter()
    if wanted != "otlp":
        return None
    _check_protocol(env, "traces")
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 - optional package
            OTLPSpanExporter,
        )
    except ImportError:
        log.warning("OTLP export requested but %s is not installed", OTLP_PACKAGE)
        return None
    exporter: SpanExporter = OTLPSpanExporter(endpoint=otlp_endpoint(env, "traces"))
    return exporter


def _metric_reader(
    env: Mapping[str, str], histograms: Sequence[BatchHistogram], resource: Resource
) -> MetricReader | None:
    if _wanted(env, "metrics") != "otlp":
        return None
    _check_protocol(env, "metrics")
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 - optional package
            OTLPMetricExporter,
        )
    except ImportError:
        log.warning("OTLP export requested but %s is not installed", OTLP_PACKAGE)
        return None
    exporter: MetricExporter = OTLPMetricExporter(endpoint=otlp_endpoint(env, "metrics"))
    return ExportingReader(exporter, histograms, resource)


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

    def render_prometheus(self, skip: Collection[str] = ()) -> str:
        """The histograms and gauges in the Prometheus text format (append to ``/metrics``);
        ``skip``: metric names rendered elsewhere (the bridged ``Stats`` counters)."""
        return render_prometheus(self.prometheus_reader, skip)

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


# --- metrics -------------------------------------------------------------------------------------

METRIC_LABELS: Final = frozenset(
    {"route", "source", "destination", "type", "reason", "status", "code", "stage", "kind"}
)
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

CounterSeries = Callable[[], Iterable[tuple[str, Sequence[tuple[str, str]], int]]]
"""``(name, labels, value)`` of every counter series (what ``Stats`` holds)."""


def metric_attributes(**labels: object) -> dict[str, str]:
    """Metric labels: keys of ``METRIC_LABELS`` only, values shaped like identifiers."""
    return {
        k: str(v)
        for k, v in labels.items()
        if k in METRIC_LABELS and safe_value(str(v), code=k in CODE_KEYS)
    }


@dataclass(slots=True)
class RouterMetrics:
    """Histograms and gauges (the counters stay in ``router.telemetry.Stats``)."""

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
            labels = metric_attributes(destination=destination, status=status)
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
        del options
        for destination, seconds in sorted(self.queue_lag_s.items()):
            yield metrics.Observation(seconds, metric_attributes(destination=destination))


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


def _counter_callback(
    name: str, series: CounterSeries
) -> Callable[[metrics.CallbackOptions], Iterator[metrics.Observation]]:
    def callback(options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        del options
        # Series that differ only in a label dropped here (an unsafe value, a key outside
        # METRIC_LABELS) are summed: one observation per attribute set, or the SDK keeps the last.
        totals: dict[tuple[tuple[str, str], ...], int] = {}
        for series_name, labels, value in series():
            if series_name == name:
                key = tuple(sorted(metric_attributes(**dict(labels)).items()))
                totals[key] = totals.get(key, 0) + value
        for key, value in totals.items():
            yield metrics.Observation(value, dict(key))

    return callback


def render_prometheus(reader: InMemoryMetricReader, skip: Collection[str] = ()) -> str:
    """The reader's metrics in the Prometheus text format (histograms, gauges, sums), except
    those named in ``skip``."""
    data = reader.get_metrics_data()
    lines: list[str] = []
    if data is None:
        return ""
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name in skip:
                    continue
                points = metric.data
                if isinstance(points, Histogram):
                    lines.append(f"# TYPE {metric.name} histogram")
                    for point in points.data_points:
                        labels = _labels(point.attributes)
                        cumulative = 0
                        for bound, count in zip(
                            (*point.explicit_bounds, float("inf")), point.bucket_counts, strict=True
                        ):
                            cumulative += count
                            le = "+Inf" if bound == float("inf") else f"{bound:g}"
                            lines.append(
                                f"{metric.name}_bucket{_labels(point.attributes, le=le)} "
                                f"{cumulative}"
                            )
                        lines.append(f"{metric.name}_sum{labels} {point.sum:g}")
                        lines.append(f"{metric.name}_count{labels} {point.count}")
                elif isinstance(points, Gauge | Sum):
                    kind = "gauge" if isinstance(points, Gauge) else "counter"
                    lines.append(f"# TYPE {metric.name} {kind}")
                    for number in points.data_points:
                        lines.append(f"{metric.name}{_labels(number.attributes)} {number.value:g}")
    return "\n".join(lines) + "\n" if lines else ""


def _labels(attributes: Mapping[str, Any] | None, **extra: str) -> str:
    pairs = {**{k: str(v) for k, v in (attributes or {}).items()}, **extra}
    if not pairs:
        return ""
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(pairs.items())
    )
    return "{" + ",".join(escaped) + "}"
