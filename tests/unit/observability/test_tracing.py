"""Tracing and metrics: W3C continuation, span links, client spans, bounded attributes."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
)

from router.observability.labels import span_attributes
from router.observability.setup import Telemetry, otlp_endpoint, setup_telemetry
from router.observability.tracing import (
    PropagatingTracer,
    ScrubbingSpanExporter,
    current_traceparent,
    delivery_links,
    inject_traceparent,
    parse_traceparent,
    set_span_attributes,
    stage_span,
    start_client_span,
    start_delivery_span,
    start_ingest_span,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def traced() -> Iterator[tuple[Telemetry, InMemorySpanExporter]]:
    """Providers with an in-memory exporter and no OTLP export."""
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry({}, span_exporter=exporter)
    yield telemetry, exporter
    telemetry.shutdown()


def test_ingest_span_continues_the_sdk_traceparent(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """The ingest span joins the caller's trace as a child of its span."""
    telemetry, exporter = traced
    with start_ingest_span(
        telemetry.tracer, {"traceparent": TRACEPARENT}, route="batch", source="web"
    ):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.attributes == {
        "router.route": "batch",
        "router.source": "web",
        "http.request.method": "POST",
    }


def test_invalid_traceparent_starts_a_new_trace(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """A malformed traceparent is ignored: the ingest span is a root."""
    telemetry, exporter = traced
    with start_ingest_span(telemetry.tracer, {"traceparent": "00-zz-zz-01"}, route="track"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_stages_are_children_of_the_ingest_span(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """consent, plan and enqueue spans hang under the ingest span; the stored traceparent is
    the ingest span's."""
    telemetry, exporter = traced
    tracer = telemetry.tracer
    with start_ingest_span(tracer, {}, route="track", source="web") as ingest:
        stored = current_traceparent()
        for stage in ("consent", "plan", "enqueue"):
            with stage_span(tracer, stage):
                pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"ingest", "consent", "plan", "enqueue"}
    for stage in ("consent", "plan", "enqueue"):
        parent = spans[stage].parent
        assert parent is not None
        assert parent.span_id == spans["ingest"].context.span_id
    assert stored == inject_traceparent(ingest.get_span_context())
    with pytest.raises(ValueError, match="unknown stage"):
        stage_span(tracer, "user@example.com")


def test_a_stage_under_a_given_parent_is_made_only_when_the_parent_records(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """``parent=`` (the caller's current span): a recording one gets its stage span as
    without it; a non-recording one gets none, and no span is made whatever is current."""
    telemetry, exporter = traced
    tracer = telemetry.tracer
    with start_ingest_span(tracer, {}, route="track", source="web") as ingest:
        with stage_span(tracer, "plan", parent=ingest) as made:
            assert made is not None
            assert made.is_recording()
        with stage_span(tracer, "enqueue", parent=trace.INVALID_SPAN) as skipped:
            assert skipped is None
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"ingest", "plan"}
    plan_parent = spans["plan"].parent
    assert plan_parent is not None
    assert plan_parent.span_id == spans["ingest"].context.span_id
    with pytest.raises(ValueError, match="unknown stage"):
        stage_span(tracer, "user@example.com", parent=trace.INVALID_SPAN)


def test_delivery_span_links_to_the_ingest_spans(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """The delivery span starts a new trace linked to each stored traceparent (deduplicated)."""
    telemetry, exporter = traced
    other = f"00-{'a' * 32}-{'b' * 16}-01"
    with start_delivery_span(telemetry.tracer, "ga4", [TRACEPARENT, None, other, TRACEPARENT]):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != TRACE_ID
    linked = [(f"{k.context.trace_id:032x}", f"{k.context.span_id:016x}") for k in span.links]
    assert linked == [(TRACE_ID, PARENT_ID), ("a" * 32, "b" * 16)]
    assert span.attributes == {"router.destination": "ga4"}


def test_client_span_is_the_traceparent_sent_to_webhooks(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """The outgoing request's span is a CLIENT child of the delivery; its traceparent is what
    a webhook receives; the status goes through the sanitizer."""
    telemetry, exporter = traced
    with (
        start_delivery_span(telemetry.tracer, "hook", [TRACEPARENT]) as delivery,
        start_client_span(telemetry.tracer, "hook", "post") as client,
    ):
        header = inject_traceparent(client.get_span_context())
        set_span_attributes(client, status=202, reason="ok")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    send = spans["send"]
    assert send.kind is SpanKind.CLIENT
    assert send.parent is not None
    assert send.parent.span_id == delivery.get_span_context().span_id
    assert header is not None
    parsed = parse_traceparent(header)
    assert parsed is not None
    assert parsed.span_id == send.context.span_id
    assert send.attributes == {
        "router.destination": "hook",
        "http.request.method": "POST",
        "http.response.status_code": 202,
        "router.reason": "ok",
    }


def test_sanitizer_keeps_only_bounded_keys_and_values() -> None:
    """Unknown keys, personal data and free text are dropped; identifiers and enums stay."""
    attributes = span_attributes(
        route="batch",
        source="web",
        destination="ga4-web",
        event_type="track",
        reason="consent_withdrawn",
        status=503,
        method="get",
        user_id="u-1",
        email="jane@example.com",
    )
    assert attributes == {
        "router.route": "batch",
        "router.source": "web",
        "router.destination": "ga4-web",
        "router.event_type": "track",
        "router.reason": "consent_withdrawn",
        "http.response.status_code": 503,
        "http.request.method": "GET",
    }
    rejected = span_attributes(
        source="jane@example.com",
        destination="call 650 555 1212",
        reason="6505551212",
        event_type="Order Completed",
        status="200",
        method="BREW",
        route="x" * 65,
    )
    assert rejected == {}


def test_exception_status_carries_only_the_class_name(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """A failing stage records ERROR with the exception's class, never its message."""
    telemetry, exporter = traced
    with (
        pytest.raises(KeyError),
        start_ingest_span(telemetry.tracer, {}, route="track"),
    ):
        raise KeyError("jane@example.com")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "KeyError"
    assert not span.events


def test_exporter_scrubs_attributes_set_by_other_code(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """Attributes and events set directly on a span (by a library) are filtered on export."""
    telemetry, exporter = traced
    with telemetry.tracer.start_as_current_span("library") as span:
        span.set_attribute("user.email", "jane@example.com")
        span.set_attribute("router.destination", "jane@example.com")
        span.set_attribute("router.source", "web")
        span.add_event("log", {"message": "jane@example.com"})
        span.record_exception(ValueError("jane@example.com"))
    (exported,) = exporter.get_finished_spans()
    assert exported.attributes == {"router.source": "web"}
    assert all(not e.attributes for e in exported.events)
    assert "jane" not in exported.to_json()


def test_no_exporter_without_configuration() -> None:
    """Without OTEL variables nothing is exported, but spans still get trace ids."""
    telemetry = setup_telemetry({})
    assert telemetry.exporting == ()
    with start_ingest_span(telemetry.tracer, {}, route="track") as span:
        assert span.get_span_context().is_valid
    telemetry.shutdown()
    none = setup_telemetry({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"})
    assert none.exporting == ()
    none.shutdown()


def test_otlp_endpoint_turns_on_the_otlp_http_exporter() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT selects the OTLP/HTTP exporters with per-signal paths."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/", "OTEL_METRICS_EXPORTER": "none"}
    assert otlp_endpoint(env, "traces") == "http://127.0.0.1:9/v1/traces"
    assert otlp_endpoint({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/t"}, "traces") == (
        "http://c/t"
    )
    telemetry = setup_telemetry(env)
    assert telemetry.exporting == ("traces",)
    telemetry.tracer_provider.shutdown()


def test_missing_otlp_package_is_a_warning_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Asking for OTLP without the exporter package logs a warning and exports nothing."""
    real_import = builtins.__import__

    def no_otlp(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.exporter.otlp"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otlp)
    with caplog.at_level(logging.WARNING, logger="router.observability"):
        telemetry = setup_telemetry({"OTEL_TRACES_EXPORTER": "otlp"})
    assert telemetry.exporting == ()
    assert "opentelemetry-exporter-otlp-proto-http" in caplog.text
    telemetry.shutdown()


def test_delivery_links_are_capped_and_skip_garbage() -> None:
    """Unparseable traceparents are skipped and the links are bounded."""
    values = [f"00-{i:032x}-{1:016x}-01" for i in range(1, 300)] + ["garbage"]
    assert len(delivery_links(values)) == 128


def test_scrubbing_exporter_forwards_flush_and_shutdown() -> None:
    """The wrapper delegates flush and shutdown to the wrapped exporter."""
    inner = InMemorySpanExporter()
    wrapper = ScrubbingSpanExporter(inner)
    assert wrapper.force_flush()
    wrapper.shutdown()


def test_tracestate_is_neither_read_nor_exported(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """A client's tracestate (opaque, may hold a user id) reaches no span; state set on a span
    context some other way is dropped on export."""
    telemetry, exporter = traced
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=jane.doe@example.com"}
    with start_ingest_span(telemetry.tracer, headers, route="track"):
        pass
    state = TraceState([("vendor", "user-42")])
    parent = SpanContext(int(TRACE_ID, 16), int(PARENT_ID, 16), True, TraceFlags(1), state)
    context = trace.set_span_in_context(NonRecordingSpan(parent))
    with telemetry.tracer.start_as_current_span("library", context=context, links=[Link(parent)]):
        pass
    ingest, library = exporter.get_finished_spans()
    assert f"{ingest.context.trace_id:032x}" == TRACE_ID
    assert not ingest.context.trace_state
    assert not library.context.trace_state
    assert library.parent is not None
    assert not library.parent.trace_state
    assert not library.links[0].context.trace_state
    exported = ingest.to_json() + library.to_json()
    assert "jane" not in exported
    assert "user-42" not in exported


def test_without_an_exporter_spans_propagate_but_record_nothing() -> None:
    """No exporter: a PropagatingTracer; the ingest continues the caller's trace and flags,
    stages are its children, a new trace is sampled as the SDK's default sampler says."""
    telemetry = setup_telemetry({})
    tracer = telemetry.tracer
    assert isinstance(tracer, PropagatingTracer)
    with start_ingest_span(tracer, {"traceparent": TRACEPARENT}, route="track") as ingest:
        assert not ingest.is_recording()
        stored = current_traceparent()
        with stage_span(tracer, "plan") as plan:
            assert plan is ingest  # no span under a non-recording one: nobody would see it
    assert stored is not None
    assert stored.startswith(f"00-{TRACE_ID}-")
    assert stored.endswith("-01")
    assert stored != TRACEPARENT  # its own span id
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00"
    with start_ingest_span(tracer, {"traceparent": unsampled}, route="track"):
        assert current_traceparent() is not None
        assert str(current_traceparent()).endswith("-00")  # the caller's decision is kept
    with start_delivery_span(tracer, "hook", [stored]) as delivery:
        root = delivery.get_span_context()
        with start_client_span(tracer, "hook", "POST") as client:
            header = inject_traceparent(client.get_span_context())
    assert root.is_valid
    assert root.trace_id != int(TRACE_ID, 16)
    assert header is not None
    assert header.startswith(f"00-{root.trace_id:032x}-")
    assert header.endswith("-01")
    telemetry.shutdown()


def test_propagating_tracer_follows_otel_traces_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_TRACES_SAMPLER still decides the flag of a new trace."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    telemetry = setup_telemetry({})
    with start_ingest_span(telemetry.tracer, {}, route="track"):
        value = current_traceparent()
    assert value is not None
    assert value.endswith("-00")
    telemetry.shutdown()
