"""Differentially private aggregates: a destination that never receives events. Pure.

An ``aggregate`` destination is planned like any other (consent, ``events``, allowlist), but
its queue is consumed by a counter, not a sender (``router.delivery.aggregate``): per window of
``window_s`` seconds it counts events by event name and the allowlisted ``dimensions`` (and
sums one clipped numeric field), each person contributing at most ``max_contributions``
events per window. When a window closes the router adds noise (OpenDP, in
``router.compliance.aggregates``), charges ``epsilon`` against the destination's
``daily_epsilon`` (refusing the release when the day's budget would be exceeded) and POSTs the
release to the partner, signed like a webhook (Standard Webhooks).

The released cells are fixed by configuration: every listed event name times every listed
value of each dimension, plus ``other`` for unlisted or missing values. Zero cells are
released too (with noise), so which cells appear says nothing about who was counted.

Sensitivity (one person added or removed): counts change by at most ``max_contributions`` in
L1; sums by at most ``max_contributions * max(|lower|, |upper|)``.

This module holds the settings, the cell layout, what one event contributes, the sensitivity
and the release request; ``AggregateConnector.encode`` drops every event (``aggregated``):
nothing per event ever leaves.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Final, NamedTuple
from urllib.parse import urlsplit

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from destinations.base import (
    Connector,
    DeletionSkipped,
    Delivery,
    Drop,
    Encoded,
    HttpRequest,
)
from destinations.payload import path_value
from destinations.webhook import signed_request, signing_key

OTHER: Final = "other"
"""The dimension value of every unlisted or missing value."""
MAX_CELLS: Final = 10_000
DAY_S: Final = 86_400


class SumSettings(BaseModel):
    """``settings.sum``: one numeric field summed per cell, each value rounded to an integer
    and clipped to ``[lower, upper]`` (use the smallest unit: cents, seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1)
    lower: int = Field(default=0, ge=-(10**9), le=10**9)
    upper: int = Field(ge=-(10**9), le=10**9)

    @model_validator(mode="after")
    def _ordered(self) -> SumSettings:
        if self.lower >= self.upper:
            raise ValueError("lower must be below upper")
        return self


class AggregateSettings(BaseModel):
    """``settings`` of an ``aggregate`` destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://[^\s/]+")
    secret: str
    headers: dict[str, str] = Field(default_factory=dict)
    window_s: int = Field(default=3600, ge=60, le=DAY_S)
    """Window length; divides a day, so no window straddles two budget days."""
    release_delay_s: int = Field(default=60, ge=0, le=3600)
    """How long after a window ends it is released (late queue entries still count)."""
    epsilon: float = Field(gt=0, le=10)
    """Privacy loss of one window's release (counts and sums together)."""
    daily_epsilon: float = Field(gt=0, le=100)
    """The budget per UTC day: a release that would exceed it is refused."""
    max_contributions: int = Field(default=1, ge=1, le=1000)
    """Events one person may contribute per window; more are not counted."""
    dimensions: dict[str, list[str]] = Field(default_factory=dict)
    """Allowlisted field path -> the values released (anything else counts as ``other``)."""
    sum: SumSettings | None = None
    timeout_ms: int = Field(default=10_000, ge=100)

    @field_validator("secret")
    @classmethod
    def _secret_is_whsec(cls, value: str) -> str:
        signing_key(value)
        return value

    @field_validator("window_s")
    @classmethod
    def _divides_a_day(cls, value: int) -> int:
        if DAY_S % value:
            raise ValueError("must divide a day (86400 s): 60, 300, 900, 3600, 21600, 86400...")
        return value

    @field_validator("dimensions")
    @classmethod
    def _values(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for path, values in value.items():
            if not values:
                raise ValueError(f"{path}: list the values to release")
            if len(set(values)) != len(values) or OTHER in values:
                raise ValueError(f"{path}: values must be distinct and not {OTHER!r}")
        return value

    @model_validator(mode="after")
    def _budget(self) -> AggregateSettings:
        if self.epsilon > self.daily_epsilon:
            raise ValueError(
                "epsilon (per window) exceeds daily_epsilon: nothing could be released"
            )
        return self


def settings_problems(
    settings: AggregateSettings, events: Sequence[str] | None, fields: Sequence[str]
) -> list[tuple[str, str]]:
    """Cross-field problems of an aggregate destination, as (path under the destination,
    message): the released event names must be listed, dimensions and the summed field
    allowlisted, and the cells bounded."""
    problems: list[tuple[str, str]] = []
    if not events:
        problems.append(("events", "an aggregate destination lists the event names it counts"))
    for path in settings.dimensions:
        if path not in fields:
            problems.append((f"settings.dimensions.{path}", "must be listed in `fields`"))
    if settings.sum is not None and settings.sum.field not in fields:
        problems.append(("settings.sum.field", "must be listed in `fields`"))
    cells = len(events or ()) * math.prod(len(v) + 1 for v in settings.dimensions.values())
    if cells > MAX_CELLS:
        problems.append(
            ("settings.dimensions", f"{cells} cells to release; at most {MAX_CELLS} allowed")
        )
    return problems


class Cell(NamedTuple):
    """One released cell: an event name and a value per dimension."""

    event: str
    dimensions: tuple[str, ...]


class Layout:
    """The fixed cells of a destination: every event name times every dimension value."""

    def __init__(self, events: Sequence[str], dimensions: Mapping[str, Sequence[str]]) -> None:
        self.events = tuple(events)
        self.paths = tuple(dimensions)
        choices = [(*dimensions[p], OTHER) for p in self.paths]
        self.cells = tuple(
            Cell(event, tuple(values))
            for event in self.events
            for values in itertools.product(*choices)
        )
        self._index = {cell: position for position, cell in enumerate(self.cells)}
        self._listed = [frozenset(dimensions[p]) for p in self.paths]
        self.keys = tuple(
            msgspec.json.encode([c.event, *c.dimensions]).decode() for c in self.cells
        )
        """Each cell's stored name: its labels, so counts survive a reload that changes the
        layout (a cell no longer listed is left out of the release)."""
        self._by_key = {key: position for position, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.cells)

    def position_of(self, key: str) -> int | None:
        """The position of a cell by its stored name, if the layout still has it."""
        return self._by_key.get(key)

    def cell_of(self, delivery: Delivery) -> int | None:
        """The cell an event falls in, or ``None`` when its name or type is not listed."""
        name = delivery.event if delivery.event in self.events else delivery.type
        if name not in self.events:
            return None
        values = []
        for path, listed in zip(self.paths, self._listed, strict=True):
            value = path_value(delivery.payload, path)
            text = value if isinstance(value, str) else None
            values.append(text if text in listed else OTHER)
        return self._index[Cell(name, tuple(values))]


def clipped(payload: Mapping[str, Any], rule: SumSettings) -> int:
    """An event's contribution to the sum: its value rounded and clipped; 0 when it has none
    (counted, adds nothing)."""
    value = path_value(payload, rule.field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(rule.lower, min(rule.upper, round(value)))


def sensitivities(settings: AggregateSettings) -> tuple[int, int]:
    """L1 sensitivity of the count vector and of the sum vector for one person."""
    bound = settings.max_contributions
    rule = settings.sum
    per_value = max(abs(rule.lower), abs(rule.upper)) if rule is not None else 0
    return bound, bound * per_value


class ReleasedCell(msgspec.Struct, frozen=True, omit_defaults=True):
    """One cell of a release as the partner receives it."""

    event: str
    dimensions: dict[str, str]
    count: int
    sum: int | None = None


class Release(msgspec.Struct, frozen=True):
    """What a partner receives for one window."""

    destination: str
    window_start: datetime
    window_end: datetime
    epsilon: float
    mechanism: str
    count_scale: float
    count_sensitivity: int
    sum_field: str | None
    sum_scale: float | None
    sum_sensitivity: int | None
    max_contributions: int
    cells: list[ReleasedCell]


def release_of(
    layout: Layout,
    destination: str,
    window: tuple[datetime, datetime],
    counts: Sequence[int],
    sums: Sequence[int] | None,
    *,
    settings: AggregateSettings,
    epsilon: float,
    scales: tuple[float, float | None],
    mechanism: str,
) -> Release:
    """The release body of one window from its noisy counts (and sums)."""
    count_sensitivity, sum_sensitivity = sensitivities(settings)
    cells = [
        ReleasedCell(
            cell.event,
            dict(zip(layout.paths, cell.dimensions, strict=True)),
            counts[position],
            sums[position] if sums is not None else None,
        )
        for position, cell in enumerate(layout.cells)
    ]
    return Release(
        destination=destination,
        window_start=window[0],
        window_end=window[1],
        epsilon=epsilon,
        mechanism=mechanism,
        count_scale=scales[0],
        count_sensitivity=count_sensitivity,
        sum_field=settings.sum.field if settings.sum else None,
        sum_scale=scales[1],
        sum_sensitivity=sum_sensitivity if settings.sum else None,
        max_contributions=settings.max_contributions,
        cells=cells,
    )


class AggregateConnector(Connector[AggregateSettings]):
    """Counts, never events: ``encode`` drops each event as ``aggregated``; ``release_request``
    builds the signed POST of a window's release."""

    type_name: ClassVar[str] = "aggregate"
    settings_model: ClassVar[type[BaseModel]] = AggregateSettings
    max_batch_size: ClassVar[int] = 1000

    def __init__(self, destination_id: str, settings: AggregateSettings) -> None:
        super().__init__(destination_id, settings)
        self._key = signing_key(settings.secret)

    def recipient(self) -> str:
        """The partner's host (``recipient:`` in the routing file names the organisation)."""
        return urlsplit(self.settings.url).hostname or self.settings.url

    def encode(self, batch: Sequence[Delivery], now: datetime) -> Encoded:
        """Nothing per event leaves: every event is counted into the window instead."""
        return Encoded(
            requests=[],
            dropped=[
                Drop(i, "aggregated", "counted into differentially private aggregates")
                for i in range(len(batch))
            ],
        )

    def deletion_request(self, ids: Sequence[str]) -> DeletionSkipped:
        """No personal data reaches the partner: nothing to delete there."""
        return DeletionSkipped("aggregates_only")

    def release_request(self, body: bytes, now: datetime) -> HttpRequest:
        """The signed POST of one release (``webhook-id``: a digest of the body, stable
        across retries, so the partner can deduplicate)."""
        ident = "release_" + hashlib.sha256(body).hexdigest()[:32]
        settings = self.settings
        return signed_request(
            self._key, settings.url, settings.headers, ident=ident, body=body, now=now
        )
