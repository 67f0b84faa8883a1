"""Counters and the one Prometheus renderer: every counter is bridged to OTLP with the same
bounded labels ``/metrics`` shows, and ``/metrics`` is rendered by ``render_prometheus``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData, Sum

from router.observability.metrics import COUNTER_NAMES, LATENCY_BUCKETS_S, Stats, render_prometheus
from router.observability.setup import setup_telemetry

ROUTER = Path(__file__).resolve().parents[3] / "router"

Points = dict[str, dict[tuple[tuple[str, str], ...], float]]


def _incremented() -> set[str]:
    """Counter names passed as literals to ``.add(...)`` anywhere in router/."""
    names: set[str] = set()
    for path in ROUTER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("router_")
            ):
                names.add(node.args[0].value)
    return names


def _sums(data: MetricsData | None) -> Points:
    """Every counter point of a collection, by name and sorted attributes."""
    assert data is not None
    points: Points = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if isinstance(metric.data, Sum):
                    points[metric.name] = {
                        tuple(sorted((k, str(v)) for k, v in (p.attributes or {}).items())): p.value
                        for p in metric.data.data_points
                    }
    return points


def _exported(stats: Stats) -> Points:
    """The counters of ``stats`` as an in-memory metric reader beside OTLP collects them."""
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry({}, metric_readers=[reader])
    telemetry.metrics.bridge_counters(COUNTER_NAMES, stats.series)
    points = _sums(reader.get_metrics_data())
    telemetry.shutdown()
    return points


def test_counter_names_list_every_counter_the_router_increments() -> None:
    """A counter missing from COUNTER_NAMES would never reach OTLP."""
    found = _incremented()
    assert "router_events_delivered_total" in found
    assert found <= set(COUNTER_NAMES)


def test_series_lists_name_labels_and_value() -> None:
    """``series`` is what ``/metrics`` renders and the OTLP bridge observes."""
    stats = Stats()
    stats.add("router_events_rejected_total", 2, source="web", code="invalid_json")
    assert stats.series() == [
        ("router_events_rejected_total", (("code", "invalid_json"), ("source", "web")), 2)
    ]


def test_an_unbounded_label_key_is_a_programming_error() -> None:
    """``Stats.add`` refuses a key outside the label policy."""
    with pytest.raises(ValueError, match="user"):
        Stats().add("router_events_received_total", user="jane")


def test_otlp_export_keeps_the_field_label_of_pii_detections() -> None:
    """``router_pii_detections_total{destination, kind, field, status}`` leaves through OTLP with
    the same labels as ``/metrics`` (the field is the allowlist rule, a bounded path)."""
    stats = Stats()
    labels = {"destination": "ga4", "kind": "email", "status": "declared"}
    stats.add("router_pii_detections_total", 2, field="properties.items[].sku", **labels)
    stats.add("router_pii_detections_total", 3, field="other", **labels)
    exported = _exported(stats)
    sku = (("destination", "ga4"), ("field", "properties.items[].sku"), ("kind", "email"))
    other = (("destination", "ga4"), ("field", "other"), ("kind", "email"))
    assert exported["router_pii_detections_total"] == {
        (*sku, ("status", "declared")): 2,
        (*other, ("status", "declared")): 3,
    }
    text = render_prometheus(stats)
    assert (
        'router_pii_detections_total{destination="ga4",field="properties.items[].sku",'
        'kind="email",status="declared"} 2'
    ) in text


def test_refused_label_values_are_left_out_and_their_series_summed() -> None:
    """A value the policy refuses (personal data, a field that is not a path) drops the label:
    its series merge, the same in OTLP and ``/metrics``; codes of rejections survive."""
    stats = Stats()
    stats.add("router_pii_detections_total", 2, destination="d", kind="email", field="a[].b")
    stats.add("router_pii_detections_total", 3, destination="d", kind="email", field="jane@x.io")
    stats.add("router_pii_detections_total", 4, destination="d", kind="email", field="0612345678")
    stats.add("router_events_rejected_total", 1, source="web", code="invalid_json")
    stats.add("router_events_rejected_total", 4, source="web", code="too_deep")
    stats.add("router_sdk_metrics_total", 1, kind="analytics_js.invoke")
    exported = _exported(stats)
    assert exported["router_pii_detections_total"] == {
        (("destination", "d"), ("field", "a[].b"), ("kind", "email")): 2,
        (("destination", "d"), ("kind", "email")): 7,
    }
    assert exported["router_events_rejected_total"] == {
        (("code", "invalid_json"), ("source", "web")): 1,
        (("code", "too_deep"), ("source", "web")): 4,
    }
    assert exported["router_sdk_metrics_total"] == {(("kind", "analytics_js.invoke"),): 1}
    text = render_prometheus(stats)
    assert 'router_pii_detections_total{destination="d",kind="email"} 7' in text
    assert "jane" not in text
    assert "0612345678" not in text


def test_the_one_renderer_writes_counters_histograms_and_gauges() -> None:
    """The exact ``/metrics`` text of a known set of instruments: counters from ``Stats``
    (sorted; the reader's OTLP copies left out), then histograms and the queue lag gauge."""
    stats = Stats()
    stats.add("router_events_received_total", 3, source="web", route="batch")
    stats.add("router_events_delivered_total", 1_234_567, destination="ga4")
    stats.add("router_erasures_total")
    telemetry = setup_telemetry({})
    telemetry.metrics.bridge_counters(COUNTER_NAMES, stats.series)
    telemetry.metrics.record_delivery_latencies("ga4", (0.2, 3.0), status="delivered")
    telemetry.metrics.record_request("ga4", 0.03, status="200")
    telemetry.metrics.record_request("jane@example.com", 0.1, status="200")
    telemetry.metrics.set_queue_lag("ga4", 12.5)
    text = render_prometheus(stats, telemetry.prometheus_reader)
    telemetry.shutdown()

    def histogram(name: str, labels: dict[str, str], counts: list[int], total: str) -> list[str]:
        def text(**extra: str) -> str:
            pairs = sorted({**labels, **extra}.items())
            return "{" + ",".join(f'{key}="{value}"' for key, value in pairs) + "}"

        bounds = [f"{bound:g}" for bound in LATENCY_BUCKETS_S] + ["+Inf"]
        buckets = [
            f"{name}_bucket{text(le=le)} {count}" for le, count in zip(bounds, counts, strict=True)
        ]
        return [*buckets, f"{name}_sum{text()} {total}", f"{name}_count{text()} {counts[-1]}"]

    latency = histogram(
        "router_delivery_latency_seconds",
        {"destination": "ga4", "status": "delivered"},
        [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2],
        "3.2",
    )
    request = histogram(
        "router_delivery_request_seconds",
        {"destination": "ga4", "status": "200"},
        [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        "0.03",
    )
    dropped = histogram(  # the destination looked like personal data: left out
        "router_delivery_request_seconds",
        {"status": "200"},
        [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        "0.1",
    )
    assert text.splitlines() == [
        "# TYPE router_erasures_total counter",
        "router_erasures_total 1",
        "# TYPE router_events_delivered_total counter",
        'router_events_delivered_total{destination="ga4"} 1234567',
        "# TYPE router_events_received_total counter",
        'router_events_received_total{route="batch",source="web"} 3',
        "# TYPE router_delivery_request_seconds histogram",
        *request,
        *dropped,
        "# TYPE router_queue_lag_seconds gauge",
        'router_queue_lag_seconds{destination="ga4"} 12.5',
        "# TYPE router_delivery_latency_seconds histogram",
        *latency,
    ]
    assert text.endswith("\n")


def test_nothing_recorded_renders_nothing() -> None:
    """No counter and no reader: an empty body."""
    assert render_prometheus(Stats()) == ""
