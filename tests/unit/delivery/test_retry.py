"""The retry decisions without a worker or Redis: outcome -> action, bisection, exhaustion and
the backoff bounds (jitter injected)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from destinations.base import Outcome
from router.delivery.retry import Action, Group, backoff, bisect, exhausted, next_action
from router.routing import DeliveryConfig


@pytest.mark.parametrize(
    ("outcome", "count", "split", "action"),
    [
        (Outcome(kind="ok"), 3, True, Action.DELIVERED),
        (Outcome(kind="retry", reason="http_503"), 3, True, Action.RETRY),
        (Outcome(kind="permanent", reason="http_400"), 3, True, Action.SPLIT),
        (Outcome(kind="permanent", reason="http_400"), 1, True, Action.DEAD_LETTER),
        (Outcome(kind="permanent", reason="http_400"), 3, False, Action.DEAD_LETTER),
        (
            Outcome(kind="permanent", reason="http_401", event_specific=False),
            3,
            True,
            Action.DEAD_LETTER,
        ),
    ],
)
def test_each_outcome_has_one_next_action(
    outcome: Outcome, count: int, split: bool, action: Action
) -> None:
    assert next_action(outcome, count, split_on_rejection=split) is action


def test_bisection_keeps_every_position_once_and_the_attempt() -> None:
    left, right = bisect([4, 5, 6, 7, 8], attempt=3)
    assert (left.positions, right.positions) == ([4, 5], [6, 7, 8])
    assert left.attempt == right.attempt == 3


def test_groups_at_max_attempts_are_exhausted() -> None:
    fresh, spent = Group([1], attempt=2), Group([2], attempt=3)
    assert exhausted([fresh, spent], max_attempts=3) == ([fresh], [spent])


POLICY = DeliveryConfig(backoff_initial_ms=500, backoff_max_ms=4000, retry_after_max_ms=10_000)


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    def top(_low: float, high: float) -> float:
        return high

    assert [backoff(POLICY, attempt, None, top) for attempt in (1, 2, 3, 4, 5)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        4.0,
    ]


@given(
    attempt=st.integers(min_value=1, max_value=60),
    retry_after=st.none() | st.floats(min_value=0, max_value=1e6),
)
def test_backoff_stays_within_bounds(attempt: int, retry_after: float | None) -> None:
    delay = backoff(POLICY, attempt, retry_after)
    assert 0 <= delay <= max(4.0, 10.0)
    if retry_after is not None:
        assert delay >= min(retry_after, 10.0)
