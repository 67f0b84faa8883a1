"""Differentially private aggregates: the noise (OpenDP) and the Redis store of windows,
contribution bounds, budgets and releases (``destinations.aggregate`` has the pure rules).

Noise: OpenDP's ``make_laplace`` over vectors of 64-bit integers with the L1 distance, which
for integers is the discrete Laplace (geometric) mechanism: exact sampling, no floating-point
leaks. Its scale is found by OpenDP's ``binary_search_param`` so that the privacy map of the
sensitivity is within the share of ``epsilon`` (counts and sums each get half when both are
released); the epsilon charged to the budget is what OpenDP's maps say the release costs.
OpenDP marks these constructors ``contrib`` (not yet vetted by its own review process); the
feature is enabled only when a noise plan is built.

Redis keys (``{d}`` is the destination id as a hash tag, ``<w>`` a window's start in Unix
seconds; raw keys expire a day after their window ends):

- ``rt:agg:{d}:<w>:counts`` / ``:sums``   per cell (``Layout.keys``): events counted / clipped
                                          sum (hashes)
- ``rt:agg:{d}:<w>:who``                  per hashed subject id: contributions this window
- ``rt:agg:{d}:<w>:seen``                 stream entries already counted (a retry after a
                                          crash between counting and acknowledging counts
                                          nothing twice)
- ``rt:agg:{d}:<w>:closed``               ``released`` / ``refused``: later entries are late
- ``rt:agg:{d}:next``                     the next window to release (every window is released
                                          on schedule, empty or not: whether one is released
                                          says nothing about who was counted)
- ``rt:agg:{d}:budget``                   per UTC day: epsilon spent (hash of floats)
- ``rt:agg:{d}:pending``                  per window: the release or refusal record, until it
                                          is audited (and, for a release, delivered)
- ``rt:agg:{d}:unaudited``                windows whose record is not in the audit trail yet
- ``rt:agg:{d}:lock``                     one process releases a destination at a time
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import opendp.prelude as dp
import redis.asyncio as aioredis

from destinations.aggregate import DAY_S, AggregateSettings, Layout, sensitivities
from router.queue.keys import aggregate_key

MECHANISM: Final = "discrete_laplace"
"""OpenDP ``make_laplace`` on ``i64`` vectors (L1 sensitivity)."""
RAW_TTL_S: Final = DAY_S


def _measurement(sensitivity: int, epsilon: float) -> tuple[Any, float, float]:
    """The vector mechanism for this L1 sensitivity within ``epsilon``: (measurement, scale,
    epsilon it costs by OpenDP's privacy map)."""
    space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64")

    def make(scale: float) -> Any:
        return dp.m.make_laplace(*space, scale=scale)

    scale = float(dp.binary_search_param(make, d_in=sensitivity, d_out=epsilon))
    measurement = make(scale)
    spent = float(measurement.map(sensitivity))
    if spent > epsilon:  # binary_search_param guarantees it; a bug must not release
        raise ValueError(f"OpenDP's map gives {spent} > {epsilon}")
    return measurement, scale, spent


def discrete_laplace_variance(scale: float) -> float:
    """The variance of the discrete Laplace with this scale: 2e^(-1/b) / (1 - e^(-1/b))^2."""
    t = math.exp(-1 / scale)
    return 2 * t / (1 - t) ** 2


@dataclass(frozen=True, slots=True)
class NoisePlan:
    """The mechanisms of one destination's releases."""

    count_scale: float
    sum_scale: float | None
    epsilon: float
    """What one release costs (OpenDP's privacy maps, at most ``settings.epsilon``)."""
    _count: Any
    _sum: Any

    def noisy(
        self, counts: Sequence[int], sums: Sequence[int] | None
    ) -> tuple[list[int], list[int] | None]:
        """Noisy copies of the true counts (and sums)."""
        noisy_counts = [int(v) for v in self._count(list(counts))]
        if sums is None or self._sum is None:
            return noisy_counts, None
        return noisy_counts, [int(v) for v in self._sum(list(sums))]


def noise_plan(settings: AggregateSettings) -> NoisePlan:
    """The noise of a destination's releases, from its epsilon and sensitivities."""
    dp.enable_features("contrib")
    count_sensitivity, sum_sensitivity = sensitivities(settings)
    share = settings.epsilon / (2 if settings.sum is not None else 1)
    count, count_scale, spent = _measurement(count_sensitivity, share)
    if settings.sum is None:
        return NoisePlan(count_scale, None, spent, count, None)
    summed, sum_scale, sum_spent = _measurement(sum_sensitivity, share)
    return NoisePlan(count_scale, sum_scale, spent + sum_spent, count, summed)


def window_of(seconds: float, window_s: int) -> int:
    """The start (Unix seconds) of the window holding this moment."""
    return int(seconds // window_s * window_s)


_COUNT = """
-- KEYS: counts, sums, who, seen, closed, next; ARGV: window, ttl, bound, then per entry:
-- entry id, k, then k x (cell, value, n, n subject hashes).
-- Returns {counted, over_bound, late}.
local ttl, bound = tonumber(ARGV[2]), tonumber(ARGV[3])
local counted, over, late = 0, 0, 0
local closed = redis.call('EXISTS', KEYS[5]) == 1
local nxt = tonumber(redis.call('GET', KEYS[6]) or '-1')
if nxt > tonumber(ARGV[1]) then closed = true end
local i = 4
while i <= #ARGV do
  local entry, k = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local fresh = redis.call('SISMEMBER', KEYS[4], entry) == 0
  for _ = 1, k do
    local cell, value, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    local subjects = {}
    for j = 1, n do subjects[j] = ARGV[i + 2 + j] end
    i = i + 3 + n
    if fresh then
      if closed then
        late = late + 1
      else
        local room = true
        for _, s in ipairs(subjects) do
          if tonumber(redis.call('HGET', KEYS[3], s) or '0') >= bound then room = false end
        end
        if room then
          for _, s in ipairs(subjects) do redis.call('HINCRBY', KEYS[3], s, 1) end
          redis.call('HINCRBY', KEYS[1], cell, 1)
          if value ~= 0 then redis.call('HINCRBY', KEYS[2], cell, value) end
          counted = counted + 1
        else
          over = over + 1
        end
      end
    end
  end
  if fresh then redis.call('SADD', KEYS[4], entry) end
end
for j = 1, 4 do redis.call('EXPIRE', KEYS[j], ttl) end
return {counted, over, late}
"""

_RELEASE = """
-- KEYS: budget, closed, pending, unaudited, next, counts, sums, who
-- ARGV: day, epsilon, daily budget, window, released record, refused record, ttl, next window
-- Returns {1 released | 0 refused | -1 already closed, spent that day}
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, '0'} end
local spent = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local status, record = 'refused', ARGV[6]
if spent + tonumber(ARGV[2]) <= tonumber(ARGV[3]) * (1 + 1e-12) then
  spent = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[2]))
  status, record = 'released', ARGV[5]
end
redis.call('EXPIRE', KEYS[1], 3 * 86400)
local data = cjson.decode(record)
data['spent_today'] = spent
redis.call('SET', KEYS[2], status, 'EX', tonumber(ARGV[7]))
redis.call('HSET', KEYS[3], ARGV[4], cjson.encode(data))
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SET', KEYS[5], ARGV[8])
redis.call('DEL', KEYS[6], KEYS[7], KEYS[8])
if status == 'released' then return {1, tostring(spent)} end
return {0, tostring(spent)}
"""


@dataclass(frozen=True, slots=True)
class Contribution:
    """One event's part of a window: its cell, its clipped value, its hashed subjects."""

    cell: str
    """``Layout.keys`` of the cell."""
    value: int
    subjects: tuple[str, ...]


@dataclass(slots=True)
class CountResult:
    """What one counting call did."""

    counted: int = 0
    over_bound: int = 0
    late: int = 0


class AggregateStore:
    """The Redis side of one aggregate destination."""

    def __init__(self, client: aioredis.Redis, destination: str, settings: AggregateSettings):
        self.client = client
        self.destination = destination
        self.settings = settings
        self._count = client.register_script(_COUNT)
        self._release = client.register_script(_RELEASE)

    def key(self, part: str, window: int | None = None) -> str:
        """The Redis key of a part (of a window)."""
        return aggregate_key(self.destination, part, window)

    async def count(
        self, window: int, entries: Sequence[tuple[str, Sequence[Contribution]]]
    ) -> CountResult:
        """Count stream entries' contributions into a window, atomically, each entry once,
        each subject at most ``max_contributions`` times."""
        args: list[str | int] = [
            window,
            RAW_TTL_S + self.settings.window_s,
            self.settings.max_contributions,
        ]
        for entry_id, contributions in entries:
            args += [entry_id, len(contributions)]
            for c in contributions:
                args += [c.cell, c.value, len(c.subjects), *c.subjects]
        keys = [self.key(p, window) for p in ("counts", "sums", "who", "seen", "closed")]
        counted, over, late = await self._count(keys=[*keys, self.key("next")], args=args)
        return CountResult(int(counted), int(over), int(late))

    async def next_window(self, now_s: float) -> int:
        """The next window to release; the current one the first time (nothing before it
        was counted)."""
        current = window_of(now_s, self.settings.window_s)
        await self.client.set(self.key("next"), current, nx=True)
        stored = await self.client.get(self.key("next"))
        return int(stored) if stored is not None else current

    async def raw(self, window: int, layout: Layout) -> tuple[list[int], list[int] | None]:
        """A window's true counts (and sums), one per cell of ``layout``."""
        counts = await self._vector(self.key("counts", window), layout)
        if self.settings.sum is None:
            return counts, None
        return counts, await self._vector(self.key("sums", window), layout)

    async def _vector(self, key: str, layout: Layout) -> list[int]:
        stored = await self.client.hgetall(key)  # type: ignore[misc]
        vector = [0] * len(layout)
        for cell, value in stored.items():
            position = layout.position_of(cell.decode())
            if position is not None:
                vector[position] = int(value)
        return vector

    async def close(
        self, window: int, day: str, epsilon: float, released: bytes, refused: bytes
    ) -> tuple[bool | None, float]:
        """Charge the day's budget and store the release, or refuse it; in one step. (True:
        released, False: refused, None: the window was already closed; epsilon spent that
        day)."""
        keys = [
            self.key("budget"),
            self.key("closed", window),
            self.key("pending"),
            self.key("unaudited"),
            self.key("next"),
            *(self.key(p, window) for p in ("counts", "sums", "who")),
        ]
        args: list[str | int | bytes] = [
            day,
            repr(epsilon),
            repr(self.settings.daily_epsilon),
            window,
            released,
            refused,
            RAW_TTL_S + self.settings.window_s,
            window + self.settings.window_s,
        ]
        status, spent = await self._release(keys=keys, args=args)
        outcome = None if int(status) < 0 else bool(int(status))
        return outcome, float(spent)

    async def spent(self, day: str) -> float:
        """Epsilon spent on a UTC day."""
        value = await self.client.hget(self.key("budget"), day)  # type: ignore[misc]
        return float(value) if value is not None else 0.0

    async def pending(self) -> dict[int, bytes]:
        """Records not yet audited or delivered, by window."""
        rows = await self.client.hgetall(self.key("pending"))  # type: ignore[misc]
        return {int(w): v for w, v in rows.items()}

    async def unaudited(self) -> set[int]:
        """Windows whose record is not in the audit trail yet."""
        members = await self.client.smembers(self.key("unaudited"))  # type: ignore[misc]
        return {int(m) for m in members}

    async def audited(self, window: int) -> None:
        """The window's record is in the audit trail."""
        await self.client.srem(self.key("unaudited"), window)  # type: ignore[misc]

    async def done(self, window: int) -> None:
        """The window's record is audited and, for a release, delivered."""
        await self.client.hdel(self.key("pending"), str(window))  # type: ignore[misc]

    async def forget(self, subjects: Sequence[str]) -> int:
        """Erasure: remove hashed subjects from every open window's contribution ledger (what
        they added to the counts stays: it is released only with noise). How many were
        removed."""
        removed = 0
        async for key in self.client.scan_iter(match=aggregate_key(self.destination, "who", "*")):
            removed += int(await self.client.hdel(key, *subjects))  # type: ignore[misc]
        return removed

    async def lock(self, owner: str, ttl_ms: int) -> bool:
        """Take the destination's release lock (one process at a time)."""
        return bool(await self.client.set(self.key("lock"), owner, nx=True, px=ttl_ms))

    async def unlock(self, owner: str) -> None:
        """Give the lock back if it is still ours."""
        if await self.client.get(self.key("lock")) == owner.encode():
            await self.client.delete(self.key("lock"))
