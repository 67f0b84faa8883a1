"""Counters: every name the router increments is bridged to OTLP, once, with summed series."""

from __future__ import annotations

import ast
from pathlib import Path

from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

from router.telemetry import COUNTER_NAMES, Stats
from router.tracing import setup_telemetry

ROUTER = Path(__file__).resolve().parents[3] / "router"


def _incremented() -> set[str]:
    """Counter names passed as literals to ``.add(...)`` anywhere in router/."""
    names: set[str] = set()
    for path in ROUTER.glob("*.py"):
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


def test_counter_names_list_every_counter_the_router_increments() -> None:
    """A counter missing from COUNTER_NAMES would never reach OTLP."""
    found = _incremented()
    assert "router_events_delivered_total" in found
    assert found <= set(COUNTER_NAMES)


def test_series_lists_name_labels_and_value() -> None:
    """``series`` is what the OTLP bridge observes."""
    stats = Stats()
    stats.add("router_events_rejected_total", 2, source="web", code="invalid_json")
    assert stats.series() == [
        ("router_events_rejected_total", (("code", "invalid_json"), ("source", "web")), 2)
    ]


def test_bridge_sums_series_that_differ_only_in_a_dropped_label() -> None:
    """Labels outside the metric set (``field``) are dropped and their series summed, not lost;
    the code label of rejections survives."""
    stats = Stats()
    stats.add("router_pii_detections_total", 2, destination="d", kind="email", field="a[].b")
    stats.add("router_pii_detections_total", 3, destination="d", kind="email", field="c")
    stats.add("router_events_rejected_total", 1, source="web", code="invalid_json")
    stats.add("router_events_rejected_total", 4, source="web", code="too_deep")
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry({}, metric_readers=[reader])
    telemetry.metrics.bridge_counters(COUNTER_NAMES, stats.series)
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                assert isinstance(metric.data, Sum)
                points[metric.name] = {
                    tuple(sorted((k, str(v)) for k, v in (p.attributes or {}).items())): p.value
                    for p in metric.data.data_points
                }
    assert points["router_pii_detections_total"] == {(("destination", "d"), ("kind", "email")): 5}
    assert points["router_events_rejected_total"] == {
        (("code", "invalid_json"), ("source", "web")): 1,
        (("code", "too_deep"), ("source", "web")): 4,
    }
    telemetry.shutdown()


def test_prometheus_rendering_skips_the_bridged_counters() -> None:
    """``/metrics`` renders the counters from Stats; the OTel copy is left out (no duplicates)."""
    stats = Stats()
    stats.add("router_events_delivered_total", 7, destination="d")
    telemetry = setup_telemetry({})
    telemetry.metrics.bridge_counters(COUNTER_NAMES, stats.series)
    telemetry.metrics.set_queue_lag("d", 1.5)
    text = stats.render() + telemetry.render_prometheus(skip=COUNTER_NAMES)
    assert text.count("# TYPE router_events_delivered_total counter") == 1
    assert 'router_queue_lag_seconds{destination="d"} 1.5' in text
    telemetry.shutdown()
