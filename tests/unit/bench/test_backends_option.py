"""``python -m bench --backends``: the words it accepts, the errors it gives, and the
side-by-side table of two backends (figures made up here: nothing is measured)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.report import BackendRun, Delivery, DestinationCheck, Measured, Scenario, backends_table
from bench.run import BACKENDS, parse_args, parse_backends
from tests.unit.bench.helpers import assert_usage_error, one_second


def test_default_is_the_single_server() -> None:
    assert parse_args([]).backends == ("single",)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--backends", "single", "cluster"], ("single", "cluster")),
        (["--backends", "cluster,single"], ("cluster", "single")),
        (["--backends", "cluster", "cluster,"], ("cluster",)),
    ],
)
def test_backends_in_the_order_given_each_once(argv: list[str], expected: tuple[str, ...]) -> None:
    assert parse_args(argv).backends == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "single", "kafka"], "unknown backend 'kafka'"),
        (["--backends", ","], "no backend given"),
        (["--backends", "cluster", "--soak", "10"], "not to --soak or --scaling"),
        (["--backends", "single", "cluster", "--scaling"], "not to --soak or --scaling"),
    ],
)
def test_bad_backends_are_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_usage_error(argv, message, capsys)


@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz, ", max_size=12), max_size=5))
def test_parse_backends_accepts_known_words_or_names_the_bad_one(words: list[str]) -> None:
    given_words = [w.strip() for item in words for w in item.split(",") if w.strip()]
    bad = [w for w in given_words if w not in BACKENDS]
    if bad:
        with pytest.raises(ValueError, match=f"unknown backend {bad[0]!r}"):
            parse_backends(words)
    elif not given_words:
        with pytest.raises(ValueError, match="no backend given"):
            parse_backends(words)
    else:
        assert list(parse_backends(words)) == list(dict.fromkeys(given_words))


def _run(backend: str, events_per_s: float, passed: bool) -> BackendRun:
    load = one_second(events_per_s)
    measured = Measured(
        load=load, events=int(events_per_s), cpu_s=0.3, peak_rss_mb=90, redis_cpu_s=0.1
    )
    check = DestinationCheck("hook-batch", 10, 10 if passed else 9, 10, 0, 0, None)
    delivery = Delivery(f"delivery (router worker) [{backend}]", 10, True, 1.0, [check], 500.0)
    return BackendRun(backend, [Scenario("single /v1/track", 1, measured)], [delivery], 500.0)


def test_backends_table_puts_each_backend_in_its_column() -> None:
    text = backends_table([_run("single", 3000, True), _run("cluster", 2000, False)])
    row = next(line for line in text.splitlines() if line.startswith("single /v1/track"))
    assert row.split("|")[1].split() == ["3,000", "2,000"]
    assert row.split("|")[4].split() == ["33.3", "50.0"]  # Redis CPU ms per 1k events
    drain = next(line for line in text.splitlines() if line.startswith("delivery (router"))
    assert drain.split("|")[3].split() == ["PASS", "FAIL"]
