"""``python -m bench --build``: which builds a run measures and what it says about it, and the
tables with two builds (figures made up here: nothing is measured)."""

from __future__ import annotations

import pytest

from bench.report import BackendRun, Measured, Scenario, backends_table, build_cpu_ratios, table
from bench.run import choose_builds, parse_args
from tests.unit.bench.helpers import assert_usage_error, one_second

FRESH = (True, "build/compiled/ is up to date")
STALE = (False, "build/compiled/ is older than the sources (make compiled)")


def test_the_default_is_left_to_the_state_of_the_compiled_build() -> None:
    assert parse_args([]).build is None
    builds, line = choose_builds(None, FRESH)
    assert builds == ("compiled",)
    assert line.startswith("build: compiled (build/compiled/ is up to date")
    builds, line = choose_builds(None, STALE)
    assert builds == ("pure",)
    assert "older than the sources (make compiled)" in line


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("pure", ("pure",)), ("compiled", ("compiled",)), ("both", ("pure", "compiled"))],
)
def test_an_explicit_build(choice: str, expected: tuple[str, ...]) -> None:
    assert parse_args(["--build", choice]).build == choice
    assert choose_builds(choice, FRESH)[0] == expected


def test_pure_needs_no_compiled_build() -> None:
    assert choose_builds("pure", STALE)[0] == ("pure",)


@pytest.mark.parametrize("choice", ["compiled", "both"])
def test_a_stale_or_missing_compiled_build_is_refused_when_asked_for(choice: str) -> None:
    with pytest.raises(ValueError, match=f"--build {choice}: build/compiled/ is older"):
        choose_builds(choice, STALE)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--build", "fast"], "invalid choice: 'fast'"),
        (["--build", "both", "--soak", "10"], "--build both applies to the scenarios"),
        (["--build", "both", "--scaling"], "--build both applies to the scenarios"),
    ],
)
def test_bad_builds_are_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_usage_error(argv, message, capsys)


def _measured(events_per_s: float, cpu_s: float) -> Measured:
    load = one_second(events_per_s)
    return Measured(load=load, events=int(events_per_s), cpu_s=cpu_s, peak_rss_mb=90)


def _scenarios() -> list[Scenario]:
    base = _measured(10_000, 0.9)
    return [
        Scenario("single /v1/track", 1, _measured(3000, 0.96), base, build="pure"),
        Scenario("single /v1/track", 1, _measured(3600, 0.96), base, build="compiled"),
    ]


def test_the_table_names_each_rows_build_and_prints_a_shared_baseline_once() -> None:
    lines = table(_scenarios()).splitlines()
    assert lines[0].split()[:2] == ["scenario", "build"]
    rows = [line.split() for line in lines[2:]]
    assert [row[2] for row in rows[:2]] == ["pure", "compiled"]
    assert [line for line in lines if "(baseline)" in line] == [lines[-1]]


def test_builds_side_by_side_and_their_cpu_ratio() -> None:
    scenarios = _scenarios()
    runs = [BackendRun(b, [s for s in scenarios if s.build == b], []) for b in ("pure", "compiled")]
    row = next(line for line in backends_table(runs).splitlines() if line.startswith("single"))
    assert row.split("|")[1].split() == ["3,000", "3,600"]
    assert row.split("|")[3].split() == ["320.0", "266.7"]  # CPU ms per 1k events
    ratios = build_cpu_ratios(scenarios, ("pure", "compiled")).splitlines()
    assert ratios[0] == "compiled vs pure, router (the same bench run):"
    assert ratios[1].split(maxsplit=2)[2] == "0.83 x CPU per event, 1.20 x events/s"


def test_one_backend_run_holding_both_builds_keeps_them_apart() -> None:
    text = backends_table([BackendRun("single", _scenarios(), [])])
    assert "single /v1/track [pure]" in text
    assert "single /v1/track [compiled]" in text
