"""Anomaly detection and holds: volume against a rolling baseline, schema drift, new PII kinds.

What is detected:

- ``volume``: per destination and per source, this hour's event count above
  ``max(volume_floor, volume_factor x baseline)``. The baseline is the mean of the same hour of
  day (UTC) over the last ``baseline_days`` days; with fewer than ``min_baseline_days`` such
  days of history, the mean of the last ``recent_hours`` hours. No history at all: no alarm.
  One alarm per subject and hour.
- ``schema_drift``: a source sends a field path never seen from it (after the first
  ``drift_learning_minutes`` of that source, which only learn).
- ``new_pii``: a personal-data kind (DLP detection or declaration) reaches a destination for the
  first time, unless it is declared as expected for that destination.

Each anomaly goes to the stream ``rt:anomalies``, the counter ``router_anomalies_total``, the
audit trail and the optional alert webhook. A destination listed in ``hold_destinations`` is
then held: ``rt:hold:<destination>`` is set and its workers stop reading (``HoldGate``); its
events stay queued until an operator calls ``release`` or ``discard``.

Redis keys: ``rt:vol:<kind>:<id>:<YYYYMMDD>`` (hash: hour -> count, expires), ``rt:vol:<kind>:
<id>:since`` (first hour seen), ``rt:fields:<source>`` (set of paths) and its ``:since``,
``rt:pii:<destination>`` (set of kinds), ``rt:anomalies``, ``rt:hold:<destination>``.

The hot path calls only ``AnomalyMonitor.observe`` / ``observe_pii`` (in-memory, no I/O); a
task flushes to Redis once per ``flush_every_s``. The detector core (``baseline``,
``volume_alarm``, ``hour_of``) is pure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from destinations.base import HttpRequest
from destinations.errors import TransportError
from destinations.transport import Transport
from router.compliance.audit_log import AuditLog
from router.core.audit_records import AuditKind
from router.observability.metrics import Stats
from router.periodic import Periodic
from router.queue.keys import ANOMALIES, fields_key, pii_key, volume_key
from router.queue.streams import hold
from router.routing import Routing

log = logging.getLogger("router.anomaly")

ANOMALIES_MAXLEN: Final = 10_000
MAX_PATHS_PER_ANOMALY: Final = 20


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """The routing file's ``monitoring`` block."""

    alert_webhook: str | None = None
    alert_timeout_ms: int = 5000
    volume_floor: int = 1000
    """Events per hour below which volume never alarms."""
    volume_factor: float = 10.0
    baseline_days: int = 7
    min_baseline_days: int = 3
    recent_hours: int = 24
    drift_learning_minutes: int = 60
    max_fields_per_source: int = 10_000


class AnomalyKind(StrEnum):
    """What was detected (bounded: a metric label)."""

    VOLUME = "volume"
    SCHEMA_DRIFT = "schema_drift"
    NEW_PII = "new_pii"


class SubjectKind(StrEnum):
    """What an anomaly is about."""

    DESTINATION = "destination"
    SOURCE = "source"


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One detection; ``detail`` holds counts, field paths or kinds, never values."""

    kind: AnomalyKind
    subject_kind: SubjectKind
    subject: str
    detail: Mapping[str, Any]
    at: datetime

    def to_json(self) -> dict[str, Any]:
        """The anomaly as stored, sent to the alert webhook and listed by the admin API."""
        return {
            "kind": self.kind.value,
            "subject_kind": self.subject_kind.value,
            "subject": self.subject,
            "detail": dict(self.detail),
            "at": self.at.astimezone(UTC).isoformat(timespec="seconds"),
        }


# --- pure core -----------------------------------------------------------------------------------


def hour_of(moment: datetime) -> int:
    """Hours since the epoch (UTC): the volume counters' time unit."""
    return int(moment.timestamp() // 3600)


def baseline(
    counts: Mapping[int, int], hour: int, since: int | None, settings: MonitorSettings
) -> float | None:
    """The expected count of ``hour`` from past hours' ``counts`` (missing hours count as 0
    from ``since``, the first hour the subject was seen); None without any history."""
    if since is None or since >= hour:
        return None
    same_hour = [
        counts.get(hour - 24 * day, 0)
        for day in range(1, settings.baseline_days + 1)
        if hour - 24 * day >= since
    ]
    if len(same_hour) >= settings.min_baseline_days:
        return sum(same_hour) / len(same_hour)
    recent = [counts.get(h, 0) for h in range(hour - settings.recent_hours, hour) if h >= since]
    return sum(recent) / len(recent) if recent else None


def volume_threshold(expected: float, settings: MonitorSettings) -> float:
    """The count above which an hour alarms."""
    return max(float(settings.volume_floor), settings.volume_factor * expected)


def volume_alarm(count: int, expected: float | None, settings: MonitorSettings) -> bool:
    """Whether this hour's ``count`` is anomalous against the baseline ``expected``."""
    return expected is not None and count > volume_threshold(expected, settings)


def baseline_hours(hour: int, settings: MonitorSettings) -> list[int]:
    """The past hours ``baseline`` may read."""
    same = [hour - 24 * day for day in range(1, settings.baseline_days + 1)]
    recent = list(range(hour - settings.recent_hours, hour))
    return sorted(set(same) | set(recent))


# --- holds ---------------------------------------------------------------------------------------


async def recent_anomalies(client: aioredis.Redis, limit: int = 100) -> list[dict[str, Any]]:
    """The newest anomalies first."""
    entries = await client.xrevrange(ANOMALIES, count=limit)
    out: list[dict[str, Any]] = []
    for entry_id, fields in entries:
        record = {k.decode(): v.decode() for k, v in fields.items()}
        detail = json.loads(record.get("detail", "{}"))
        out.append({"id": entry_id.decode(), **record, "detail": detail})
    return out


# --- the monitor ---------------------------------------------------------------------------------


def _day_key(kind: SubjectKind, subject: str, hour: int) -> tuple[str, str]:
    moment = datetime.fromtimestamp(hour * 3600, UTC)
    return volume_key(kind.value, subject, f"{moment:%Y%m%d}"), f"{moment:%H}"


def _since_key(kind: SubjectKind, subject: str) -> str:
    return volume_key(kind.value, subject, "since")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class AnomalyMonitor:
    """Buffers observations from the hot path and runs the detectors on each flush."""

    client: aioredis.Redis
    settings: MonitorSettings = field(default_factory=MonitorSettings)
    hold_destinations: frozenset[str] = frozenset()
    expected_pii: Mapping[str, frozenset[str]] = field(default_factory=dict)
    stats: Stats | None = None
    audit: AuditLog | None = None
    flush_every_s: float = 1.0
    clock: Callable[[], datetime] = _utc_now
    _volume: Counter[tuple[SubjectKind, str, int]] = field(default_factory=Counter)
    _paths: dict[str, set[str]] = field(default_factory=dict)
    _pii: dict[str, set[str]] = field(default_factory=dict)
    _known_paths: dict[str, set[str]] = field(default_factory=dict)
    _known_pii: dict[str, set[str]] = field(default_factory=dict)
    _thresholds: dict[tuple[SubjectKind, str, int], float | None] = field(default_factory=dict)
    _alarmed: set[tuple[SubjectKind, str, int]] = field(default_factory=set)
    transport: Transport | None = None
    """Where ``alert_webhook`` alerts are sent (the process's; ``None``: no alerts)."""
    _alerts: set[asyncio.Task[None]] = field(default_factory=set)
    _flusher: Periodic = field(init=False)

    def __post_init__(self) -> None:
        self._flusher = Periodic(
            "anomaly-monitor",
            self.flush,
            self.flush_every_s,
            (RedisError, OSError),
            log,
            "anomaly flush failed",
        )

    # -- hot path: memory only --

    def observe(
        self,
        source_id: str,
        destination_counts: Mapping[str, int],
        field_paths: Iterable[str] = (),
        *,
        events: int = 1,
    ) -> None:
        """Count ``events`` accepted from a source, the deliveries queued per destination, and
        the (normalized) field paths the source sent. No I/O."""
        # The wall clock's hour without a datetime when the clock is the real one (every
        # request comes here: 0.5 us of the 2.1 this took)
        hour = int(time.time() // 3600) if self.clock is _utc_now else hour_of(self.clock())
        volume = self._volume
        volume[(SubjectKind.SOURCE, source_id, hour)] += events
        for destination, count in destination_counts.items():
            if count:
                volume[(SubjectKind.DESTINATION, destination, hour)] += count
        known = self._known_paths.get(source_id)
        paths = field_paths if isinstance(field_paths, set | frozenset) else set(field_paths)
        if known is not None and paths <= known:  # the usual case: no set made
            return
        fresh = paths if known is None else paths - known  # a set difference, in C
        if fresh:
            self._paths.setdefault(source_id, set()).update(fresh)

    def observe_pii(self, destination_id: str, kinds: Iterable[str]) -> None:
        """Personal-data kinds in what is queued for (or sent to) a destination. No I/O."""
        known = self._known_pii.get(destination_id, set())
        fresh = [k for k in kinds if k not in known]
        if fresh:
            self._pii.setdefault(destination_id, set()).update(fresh)

    # -- flush --

    async def flush(self) -> list[Anomaly]:
        """Write the buffered observations and run the detectors; the anomalies found."""
        now = self.clock()
        anomalies: list[Anomaly] = []
        volume, self._volume = self._volume, Counter()
        paths, self._paths = self._paths, {}
        pii, self._pii = self._pii, {}
        try:
            anomalies += await self._flush_volume(volume, now)
            for source, found in paths.items():
                anomalies += await self._flush_paths(source, found, now)
            for destination, kinds in pii.items():
                anomalies += await self._flush_pii(destination, kinds, now)
        except (RedisError, OSError):
            self._volume.update(volume)
            raise
        for anomaly in anomalies:
            await self._report(anomaly)
        return anomalies

    async def _flush_volume(
        self, volume: Counter[tuple[SubjectKind, str, int]], now: datetime
    ) -> list[Anomaly]:
        if not volume:
            return []
        ttl = (self.settings.baseline_days + 2) * 86_400
        items = sorted(volume.items())
        pipe = self.client.pipeline(transaction=False)
        for (kind, subject, hour), count in items:
            key, field_name = _day_key(kind, subject, hour)
            pipe.hincrby(key, field_name, count)
            pipe.expire(key, ttl)
            pipe.set(_since_key(kind, subject), hour, nx=True)
        results = await pipe.execute()
        anomalies: list[Anomaly] = []
        for index, ((kind, subject, hour), _) in enumerate(items):
            total = int(results[3 * index])
            slot = (kind, subject, hour)
            if total <= self.settings.volume_floor or slot in self._alarmed:
                continue
            if slot not in self._thresholds:
                expected = await self._baseline(kind, subject, hour)
                self._thresholds[slot] = (
                    None if expected is None else volume_threshold(expected, self.settings)
                )
            threshold = self._thresholds[slot]
            if threshold is None or total <= threshold:
                continue
            self._alarmed.add(slot)
            key, field_name = _day_key(kind, subject, hour)
            if not await self.client.hsetnx(key, f"alarm:{field_name}", "1"):  # type: ignore[misc]
                continue  # another process alarmed for this hour already
            anomalies.append(
                Anomaly(
                    AnomalyKind.VOLUME,
                    kind,
                    subject,
                    {"hour": _hour_text(hour), "count": total, "threshold": round(threshold, 1)},
                    now,
                )
            )
        self._forget_old(hour_of(now))
        return anomalies

    async def _baseline(self, kind: SubjectKind, subject: str, hour: int) -> float | None:
        hours = baseline_hours(hour, self.settings)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(_since_key(kind, subject))
        for past in hours:
            key, field_name = _day_key(kind, subject, past)
            pipe.hget(key, field_name)
        results = await pipe.execute()
        since = int(results[0]) if results[0] is not None else None
        counts = {h: int(v) for h, v in zip(hours, results[1:], strict=True) if v is not None}
        return baseline(counts, hour, since, self.settings)

    def _forget_old(self, hour: int) -> None:
        self._thresholds = {k: v for k, v in self._thresholds.items() if k[2] >= hour - 1}
        self._alarmed = {k for k in self._alarmed if k[2] >= hour - 1}

    async def _flush_paths(self, source: str, found: set[str], now: datetime) -> list[Anomaly]:
        key = fields_key(source)
        known = self._known_paths.setdefault(source, set())
        fresh = sorted(found - known)
        if not fresh:
            return []
        learning_s = self.settings.drift_learning_minutes * 60
        pipe = self.client.pipeline(transaction=False)
        pipe.set(f"{key}:since", int(now.timestamp()), nx=True)
        pipe.get(f"{key}:since")
        pipe.scard(key)
        _, since, size = await pipe.execute()
        room = self.settings.max_fields_per_source - int(size)
        if room <= 0:
            return []
        fresh = fresh[:room]
        pipe = self.client.pipeline(transaction=False)
        for path in fresh:
            pipe.sadd(key, path)
        added = await pipe.execute()
        if len(known) < self.settings.max_fields_per_source:
            known.update(fresh)
        new = [p for p, a in zip(fresh, added, strict=True) if int(a)]
        if not new or now.timestamp() - int(since) < learning_s:
            return []
        return [
            Anomaly(
                AnomalyKind.SCHEMA_DRIFT,
                SubjectKind.SOURCE,
                source,
                {"paths": new[:MAX_PATHS_PER_ANOMALY], "count": len(new)},
                now,
            )
        ]

    async def _flush_pii(self, destination: str, kinds: set[str], now: datetime) -> list[Anomaly]:
        key = pii_key(destination)
        fresh = sorted(kinds)
        pipe = self.client.pipeline(transaction=False)
        for kind in fresh:
            pipe.sadd(key, kind)
        added = await pipe.execute()
        self._known_pii.setdefault(destination, set()).update(fresh)
        expected = self.expected_pii.get(destination, frozenset())
        new = [k for k, a in zip(fresh, added, strict=True) if int(a) and k not in expected]
        return [
            Anomaly(AnomalyKind.NEW_PII, SubjectKind.DESTINATION, destination, {"pii": k}, now)
            for k in new
        ]

    # -- reporting --

    async def _report(self, anomaly: Anomaly) -> None:
        record = anomaly.to_json()
        fields: dict[str | bytes, str | bytes] = {
            "kind": record["kind"],
            "subject_kind": record["subject_kind"],
            "subject": record["subject"],
            "detail": json.dumps(record["detail"], sort_keys=True),
            "at": record["at"],
        }
        await self.client.xadd(
            ANOMALIES,
            fields,  # type: ignore[arg-type]
            maxlen=ANOMALIES_MAXLEN,
            approximate=True,
        )
        if self.stats is not None:
            labels = {anomaly.subject_kind.value: anomaly.subject, "reason": anomaly.kind.value}
            self.stats.add("router_anomalies_total", 1, **labels)
        log.warning(
            "anomaly detected",
            extra={"reason": anomaly.kind.value, anomaly.subject_kind.value: anomaly.subject},
        )
        if self.audit is not None:
            await self.audit.append(AuditKind.ANOMALY, record)
        if (
            anomaly.subject_kind is SubjectKind.DESTINATION
            and anomaly.subject in self.hold_destinations
        ):
            await hold(
                self.client,
                anomaly.subject,
                reason=anomaly.kind.value,
                at=anomaly.at,
                audit=self.audit,
                actor="anomaly",
            )
        if self.settings.alert_webhook and self.transport is not None:
            task = asyncio.create_task(self._alert(record), name="anomaly-alert")
            self._alerts.add(task)
            task.add_done_callback(self._alerts.discard)

    async def _alert(self, record: Mapping[str, Any]) -> None:
        url = self.settings.alert_webhook
        assert url is not None
        assert self.transport is not None
        request = HttpRequest(
            method="POST",
            url=url,
            headers={"Content-Type": "application/json"},
            body=json.dumps(record).encode(),
            indices=(),
        )
        try:
            response = await self.transport.send(request, self.settings.alert_timeout_ms / 1000)
            status = response.status
        except TransportError as exc:
            log.warning("anomaly alert failed", extra={"error": exc.reason})
            status = 0
        if self.stats is not None:
            self.stats.add("router_anomaly_alerts_total", status=str(status))

    # -- lifecycle --

    def start(self) -> None:
        """Start flushing every ``flush_every_s``."""
        self._flusher.start()

    async def close(self) -> None:
        """Flush, then wait for pending alerts (bounded by their timeout)."""
        await self._flusher.close()
        if self._alerts:
            await asyncio.gather(*self._alerts, return_exceptions=True)


def _hour_text(hour: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=hour)).isoformat(timespec="minutes")


def monitor_settings(routing: Routing) -> MonitorSettings:
    """The anomaly monitor's settings from the routing file's ``monitoring`` block."""
    return MonitorSettings(**routing.file.monitoring.model_dump())


def configure_monitor(monitor: AnomalyMonitor, routing: Routing) -> None:
    """Point the monitor at a (re)loaded routing file: thresholds, holds, expected PII."""
    monitor.settings = monitor_settings(routing)
    monitor.hold_destinations = frozenset(
        d.id for d in routing.destinations if d.config.hold_on_anomaly
    )
    monitor.expected_pii = {d.id: frozenset(d.identifiers.values()) for d in routing.destinations}
