"""The aggregate destination's pure rules (cells, clipping, sensitivity, validation, the signed
release) and the OpenDP noise's scale, checked statistically."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from destinations.aggregate import (
    OTHER,
    AggregateConnector,
    AggregateSettings,
    Layout,
    SumSettings,
    clipped,
    sensitivities,
)
from destinations.base import Delivery
from router.compliance.aggregates import discrete_laplace_variance, noise_plan
from router.errors import ConfigError
from router.routing import parse_routing

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def settings(**overrides: Any) -> AggregateSettings:
    base: dict[str, Any] = {
        "url": "https://partner.example.com/agg",
        "secret": SECRET,
        "epsilon": 1.0,
        "daily_epsilon": 4.0,
    }
    return AggregateSettings.model_validate({**base, **overrides})


def delivery(name: str, payload: dict[str, Any], kind: str = "track") -> Delivery:
    return Delivery("m-1", kind, NOW, payload, event=name)


def test_cells_are_every_event_times_every_value_plus_other() -> None:
    """Unlisted and missing values fall in ``other``; unlisted event names in no cell."""
    layout = Layout(["Order Completed", "page"], {"properties.category": ["shoes", "hats"]})
    assert len(layout) == 6
    shoes = layout.cell_of(delivery("Order Completed", {"properties": {"category": "shoes"}}))
    socks = layout.cell_of(delivery("Order Completed", {"properties": {"category": "socks"}}))
    missing = layout.cell_of(delivery("Order Completed", {}))
    page = layout.cell_of(delivery("", {"properties": {"category": "hats"}}, kind="page"))
    assert shoes is not None
    assert socks is not None
    assert page is not None
    assert layout.cells[shoes].dimensions == ("shoes",)
    assert layout.cells[socks].dimensions == (OTHER,)
    assert missing == socks
    assert layout.cells[page] == ("page", ("hats",))
    assert layout.cell_of(delivery("Refund", {})) is None


@given(st.one_of(st.none(), st.booleans(), st.text(), st.integers(), st.floats()))
def test_clipped_values_stay_within_bounds(value: Any) -> None:
    """Whatever the field holds, its contribution is an integer within [lower, upper]."""
    rule = SumSettings(field="properties.revenue", lower=-5, upper=100)
    out = clipped({"properties": {"revenue": value}}, rule)
    assert isinstance(out, int)
    assert -5 <= out <= 100


def test_sensitivity_is_bound_times_the_largest_value() -> None:
    """One person moves counts by max_contributions and sums by that times max |bound|."""
    rule = {"field": "properties.revenue", "lower": -30, "upper": 20}
    assert sensitivities(settings(max_contributions=3, sum=rule)) == (3, 90)
    assert sensitivities(settings(max_contributions=2)) == (2, 0)


ROUTING = f"""
sources: [{{id: web, write_key: k}}]
destinations:
  - id: agg
    type: aggregate
    requires: [analytics]
    @EVENTS@
    fields: [properties.category]
    settings: {{url: "https://partner.example.com/agg", secret: {SECRET}, @SETTINGS@}}
"""


def problems(events: str, extra: str) -> list[str]:
    text = ROUTING.replace("@EVENTS@", events).replace("@SETTINGS@", extra)
    with pytest.raises(ConfigError) as caught:
        parse_routing(text, env={})
    return caught.value.problems


def test_routing_file_errors_name_their_paths() -> None:
    """A budget below one window, a window that does not divide a day, dimensions or a sum
    field outside the allowlist and a missing event list are each reported at their path."""
    events = 'events: ["A"]'
    assert problems(events, "epsilon: 1, daily_epsilon: 1, window_s: 7000") == [
        "destinations[0].settings.window_s: must divide a day (86400 s): 60, 300, 900, 3600,"
        " 21600, 86400..."
    ]
    assert problems(events, "epsilon: 2, daily_epsilon: 1") == [
        "destinations[0].settings: epsilon (per window) exceeds daily_epsilon: nothing could be"
        " released"
    ]
    found = problems(
        "",
        "epsilon: 1, daily_epsilon: 2, dimensions: {context.locale: [de]},"
        " sum: {field: properties.revenue, upper: 10}",
    )
    assert found == [
        "destinations[0].events: an aggregate destination lists the event names it counts",
        "destinations[0].settings.dimensions.context.locale: must be listed in `fields`",
        "destinations[0].settings.sum.field: must be listed in `fields`",
    ]
    many = ", ".join(f"v{i}" for i in range(5024))  # 3 events x 5025 values
    found = problems(
        'events: ["A", "B", "C"]',
        f"epsilon: 1, daily_epsilon: 2, dimensions: {{properties.category: [{many}]}}",
    )
    assert found == [
        "destinations[0].settings.dimensions: 15075 cells to release; at most 10000 allowed"
    ]


def test_events_never_leave_and_a_release_is_signed_like_a_webhook() -> None:
    """``encode`` drops every event as ``aggregated``; the release's signature verifies with
    the destination's secret and its id is stable for the same body."""
    connector = AggregateConnector("agg", settings())
    encoded = connector.encode([delivery("Order Completed", {})] * 3, NOW)
    assert encoded.requests == []
    assert [d.reason for d in encoded.dropped] == ["aggregated"] * 3
    request = connector.release_request(b'{"cells":[]}', NOW)
    headers = request.headers
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert (
        connector.release_request(b'{"cells":[]}', NOW).headers["webhook-id"]
        == headers["webhook-id"]
    )
    assert connector.deletion_request(["u"]).reason == "aggregates_only"
    assert connector.recipient() == "partner.example.com"


@pytest.mark.parametrize(("epsilon", "bound"), [(1.0, 1), (0.5, 3)])
def test_noise_scale_and_variance_match_epsilon_and_sensitivity(epsilon: float, bound: int) -> None:
    """20,000 noisy copies of a fixed count (each coordinate is an independent release of
    that cell): the scale is sensitivity/epsilon, the mean is the count, and the empirical
    variance is within 10% of the discrete Laplace's (about 6 standard errors)."""
    plan = noise_plan(settings(epsilon=epsilon, max_contributions=bound))
    assert plan.count_scale == pytest.approx(bound / epsilon, rel=1e-3)
    assert plan.epsilon <= epsilon
    assert plan.epsilon == pytest.approx(epsilon, rel=1e-3)
    samples, _ = plan.noisy([50] * 20_000, None)
    expected = discrete_laplace_variance(plan.count_scale)
    assert statistics.fmean(samples) == pytest.approx(50, abs=5 * math.sqrt(expected / 20_000))
    assert statistics.pvariance(samples) == pytest.approx(expected, rel=0.10)
    assert len(set(samples)) > 5  # noise, not a constant


def test_sums_get_half_the_epsilon_and_their_own_scale() -> None:
    """With a sum, counts and sums each spend half of epsilon; the sum's scale follows its
    sensitivity (bound x the largest |value|)."""
    rule = {"field": "properties.revenue", "lower": 0, "upper": 40}
    plan = noise_plan(settings(epsilon=1.0, max_contributions=2, sum=rule))
    assert plan.count_scale == pytest.approx(2 / 0.5, rel=1e-3)
    assert plan.sum_scale == pytest.approx(80 / 0.5, rel=1e-3)
    assert plan.epsilon <= 1.0
    _, sums = plan.noisy([0] * 5000, [1000] * 5000)
    assert sums is not None
    expected = discrete_laplace_variance(80 / 0.5)
    assert statistics.pvariance(sums) == pytest.approx(expected, rel=0.15)


def test_the_commented_example_in_config_router_yaml_is_valid() -> None:
    """Uncommented, config/router.yaml's aggregate example validates (docs do not rot)."""
    text = (Path(__file__).resolve().parents[3] / "config" / "router.yaml").read_text()
    lines, example = [], False
    for line in text.splitlines():
        example = example or line.startswith("  # - id: brand-insights")
        lines.append("  " + line[4:] if example and line.startswith("  # ") else line)
    routing = parse_routing("\n".join(lines), env={})
    aggregate = routing.destination("brand-insights")
    assert aggregate is not None
    assert aggregate.type == "aggregate"
    assert aggregate.config.dry_run
