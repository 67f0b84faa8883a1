"""``POST /v1/m``: analytics.js's own usage counters, counted and dropped.

analytics.js 2.0 (analytics-next, ``RemoteMetrics``) posts to ``{protocol}://{apiHost}/m``,
so to ``/v1/m`` when it is pointed at the router, a ``text/plain`` body
``{"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1, "tags": {...}}]}``
without a write key, every ``flushTimer`` (30 s) and at once after an error metric. A 404
there shows as an error in every visitor's console, so the router answers 200 and counts the
series in ``router_sdk_metrics_total{kind}``: ``kind`` is the metric name when it is one that
analytics-next sends, else ``other`` (bounded: the names come from the browser). The tags
(library version, integration names) are not kept.
"""

from __future__ import annotations

from typing import Final

import msgspec
from aiohttp import web

from router.core.schema import error_path, error_text
from router.edge.http import HttpError, json_response, read_body
from router.edge.state import STATE

MAX_BODY_BYTES: Final = 64 * 1024
"""analytics-next queues at most 20 series of a few hundred bytes between two flushes."""

KNOWN_METRICS: Final = frozenset(
    {
        "analytics_js.invoke",
        "analytics_js.invoke.error",
        "analytics_js.integration.invoke",
        "analytics_js.integration.invoke.error",
    }
)
"""What analytics-next increments (``core/analytics``, ``core/stats/metric-helpers``,
``browser/standalone``)."""


class Series(msgspec.Struct):
    """One counter of the body; its other members (type, value, tags) are ignored."""

    metric: str


class UsageMetrics(msgspec.Struct):
    """The body analytics.js posts."""

    series: list[Series]


DECODER: Final = msgspec.json.Decoder(UsageMetrics)


def metric_kind(name: str) -> str:
    """The bounded label of a metric name."""
    return name if name in KNOWN_METRICS else "other"


async def post_sdk_metrics(request: web.Request) -> web.Response:
    """Count the series by bounded metric name, keep nothing else, answer 200."""
    body = await read_body(request, MAX_BODY_BYTES)
    try:
        decoded = DECODER.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        raise HttpError(400, "invalid_field", error_text(text), path=error_path(text)) from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HttpError(400, "invalid_json", "the body is not valid JSON") from exc
    stats = request.app[STATE].stats
    for series in decoded.series:
        stats.add("router_sdk_metrics_total", kind=metric_kind(series.metric))
    return json_response({"success": True})
