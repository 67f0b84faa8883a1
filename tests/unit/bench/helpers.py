"""Shared by the bench option and report tests."""

from __future__ import annotations

import pytest

from bench.load import LoadResult
from bench.run import parse_args


def one_second(requests: float) -> LoadResult:
    """A load generator's result: ``requests`` in one second, fixed latencies."""
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


def assert_usage_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bench`` with ``argv`` stops as a usage error (exit 2) saying ``message``."""
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
