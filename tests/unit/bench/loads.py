"""A load generator's result for the report tests: ``requests`` in one second, fixed latencies."""

from __future__ import annotations

from bench.load import LoadResult


def one_second(requests: float) -> LoadResult:
    return LoadResult(
        tool="wrk",
        duration_s=1.0,
        requests=int(requests),
        non_2xx=0,
        socket_errors=0,
        timeouts=0,
        p50_ms=1.0,
        p90_ms=2.0,
        p99_ms=2.5,
        max_ms=3.0,
    )
