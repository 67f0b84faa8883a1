"""``router serve``'s garbage collector settings: the start-up heap frozen, the thresholds
set, and cycles still collected without anyone calling ``gc.collect``."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from router import cli


@pytest.fixture
def serving_collector() -> Iterator[None]:
    """``_freeze_heap`` as ``router serve`` runs it, undone afterwards."""
    saved = gc.get_threshold()
    try:
        cli._freeze_heap()
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


def test_serving_freezes_the_start_up_heap_and_sets_the_thresholds(serving_collector: None) -> None:
    assert gc.get_threshold() == cli.GC_THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()


def test_cycles_are_collected_by_the_collector_alone(serving_collector: None) -> None:
    """More cyclic garbage than the young threshold triggers a collection that frees it."""
    young = cli.GC_THRESHOLDS[0]
    collected: list[int] = []

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            collected.append(info["collected"])

    gc.callbacks.append(watch)
    try:
        for _ in range(young + young // 2):
            cycle: list[Any] = []
            cycle.append(cycle)  # garbage as soon as the next one replaces it
    finally:
        gc.callbacks.remove(watch)
    assert collected, "no automatic collection ran"
    assert sum(collected) >= young // 2
