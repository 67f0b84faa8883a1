"""What to do after an attempt, and how long to wait: the only retry arithmetic.

An attempt sends one group of deliveries; each request's ``Outcome`` (``destinations.base``,
from the one retry table ``classify_status``) decides the next action of what it carried:

- ``ok``: delivered;
- ``permanent``: dead-lettered, unless the connector splits on rejection and the platform
  said one event is to blame: then the group is halved and both halves are tried again
  (bisection finds the bad event in log2(n) attempts without holding the others back);
- ``retry``: waits ``backoff`` (capped exponential, full jitter, honouring ``Retry-After``) and
  is tried again, up to ``max_attempts``; then it is dead-lettered as ``max_attempts``.

The worker (``router.delivery.worker``) sleeps; this module decides.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from destinations.base import Outcome
from router.routing import DeliveryConfig


@dataclass(slots=True)
class Group:
    """Deliveries sent together (positions in the worker's batch) and their retry state."""

    positions: list[int]
    attempt: int = 1
    reason: str = ""
    retry_after_s: float | None = None


class Action(StrEnum):
    """What happens to the deliveries of a request after its outcome."""

    DELIVERED = "delivered"
    DEAD_LETTER = "dead_letter"
    SPLIT = "split"
    RETRY = "retry"


def next_action(outcome: Outcome, count: int, *, split_on_rejection: bool) -> Action:
    """The action for ``count`` deliveries a request carried (its per-event failures aside)."""
    if outcome.kind == "ok":
        return Action.DELIVERED
    if outcome.kind == "permanent":
        if split_on_rejection and outcome.event_specific and count > 1:
            return Action.SPLIT
        return Action.DEAD_LETTER
    return Action.RETRY


def bisect(positions: Sequence[int], attempt: int) -> tuple[Group, Group]:
    """The two halves of a rejected group, at the same attempt."""
    middle = len(positions) // 2
    return Group(list(positions[:middle]), attempt), Group(list(positions[middle:]), attempt)


def exhausted(groups: Sequence[Group], max_attempts: int) -> tuple[list[Group], list[Group]]:
    """``(waiting, exhausted)``: the groups that may be tried again and those that may not."""
    waiting = [g for g in groups if g.attempt < max_attempts]
    spent = [g for g in groups if g.attempt >= max_attempts]
    return waiting, spent


def backoff(
    policy: DeliveryConfig,
    attempt: int,
    retry_after_s: float | None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter under a capped exponential
    ceiling, at least the platform's ``Retry-After`` (itself capped)."""
    cap = policy.backoff_max_ms / 1000
    ceiling = min(cap, policy.backoff_initial_ms / 1000 * 2 ** (attempt - 1))
    delay = uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, policy.retry_after_max_ms / 1000))
    return delay
