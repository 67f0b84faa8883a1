"""Tracing: W3C trace context, the spans of the hot path, and the scrubbing span exporter.

The tracer comes from ``router.observability.setup``. With no span exporter at all, it is a
``PropagatingTracer``: every span still gets its ids and the SDK sampler's decision (so the
ingest continues the SDK's trace, the stream entries carry it and webhooks receive a
``traceparent`` exactly as with a recording tracer), but nothing is recorded that no one would
read: the four spans of an ingest request cost about a third of what recorded SDK spans cost.

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

No personal data: every attribute goes through ``labels.span_attributes`` (a fixed set of keys
whose values must be short identifiers or enums), exceptions set only their class name as the
status, and exporters are wrapped so that any attribute or event added some other way (a
library's instrumentation) is filtered the same way before it leaves the process. Baggage is
never read, and neither is ``tracestate``: its values are opaque to us and a client may put
anything there (a user id, an email), which every span of the trace would then carry to the
exporter; the exporter wrapper also drops any trace state that reached a span some other way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
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
from opentelemetry.util.types import Attributes

from router.observability.labels import finished_span_attributes, safe_value, span_attributes

if TYPE_CHECKING:
    from opentelemetry.util._decorator import _AgnosticContextManager

_Links = Sequence[Link] | None

_PROPAGATOR: Final = TraceContextTextMapPropagator()
STAGES: Final = frozenset({"consent", "plan", "enqueue", "sanitize", "recheck", "encode"})
"""The steps of the ingest that ``stage_span`` names."""

# --- bounded attributes --------------------------------------------------------------------------


def set_span_attributes(span: Span, **values: object) -> None:
    """Set bounded attributes on a span (the only way the router sets any); nothing to check
    on a span that records nothing."""
    if span.is_recording():
        span.set_attributes(span_attributes(**values))


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


_NO_STAGE: Final = contextlib.nullcontext()
"""What ``stage_span`` gives under a ``parent`` that does not record (reusable: it holds
nothing)."""


def stage_span(
    tracer: trace.Tracer, stage: str, *, parent: Span | None = None, **attributes: object
) -> contextlib.AbstractContextManager[Span | None]:
    """A child span for one step of the ingest (``consent``, ``plan``, ``enqueue``...).

    Under a span that is not recording (no exporter, or sampled out) no span is made: a stage
    span has no children and its context goes nowhere, so it could only cost time; the ``with``
    block then gets the current span, or ``None`` when the caller passed it as ``parent``
    (the current span, which it holds: no context lookup, three per ingest request).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (known: {', '.join(sorted(STAGES))})")
    if parent is not None and not parent.is_recording():
        return _NO_STAGE
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
        attributes=finished_span_attributes(span.attributes),
        events=tuple(Event(e.name, {}, e.timestamp) for e in span.events),
        links=tuple(
            Link(_stateless(link.context), finished_span_attributes(link.attributes))
            for link in span.links
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
