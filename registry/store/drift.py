"""PostgreSQL adapter of the drift monitor's storage: the statistics of each monitoring
window as the jobs emitted them, and the latest reading of each feature and metric.

PostgreSQL rather than Redis: the windows of a horizon must outlive a monitor's restart (the
online store's Redis may run without persistence), the registry's API serves the readings
beside the events, and a window is a few kilobytes an hour per feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from registry.store.postgres import database_errors
from registry.store.tables import drift_readings, drift_windows


@dataclass(frozen=True)
class WindowParts:
    """Rows of one monitoring window of one feature, by part key
    (:func:`core.domain.drift.part_key`)."""

    view: str
    namespace: str
    feature: str
    window_start_ms: int
    window_end_ms: int
    parts: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class StoredReading:
    view: str
    version: int
    feature: str
    metric: str
    value: float
    severity: str
    alert_at: float
    namespace: str
    window_end_ms: int
    horizon_start_ms: int
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "feature": self.feature, "metric": self.metric,
                "value": self.value, "severity": self.severity, "alert_at": self.alert_at,
                "namespace": self.namespace, "window_end_ms": self.window_end_ms,
                "horizon_start_ms": self.horizon_start_ms,
                "updated_at": self.updated_at.isoformat()}


class DriftStore(Protocol):
    def add_windows(self, windows: Sequence[WindowParts]) -> None:
        """Merge rows into their windows; a row already stored is replaced by itself."""
        ...

    def windows(self, view: str, namespace: str, after_ms: int, until_ms: int,
                ) -> list[WindowParts]:
        """The windows ending after ``after_ms`` and at most at ``until_ms``."""
        ...

    def newest_window_ends(self) -> dict[tuple[str, str], int]:
        """(view, namespace) → the end of its newest window stored."""
        ...

    def forget_windows(self, ending_before_ms: int) -> int:
        """Delete the windows that ended before ``ending_before_ms``; how many."""
        ...

    def save_readings(self, readings: Iterable[StoredReading]) -> None: ...

    def readings(self, view: str | None = None) -> list[StoredReading]: ...


class PostgresDriftStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_windows(self, windows: Sequence[WindowParts]) -> None:
        if not windows:
            return
        now = datetime.now(UTC)
        merged: dict[tuple[str, str, int, str], WindowParts] = {}
        for window in windows:  # one statement may not touch a row twice
            key = (window.view, window.namespace, window.window_end_ms, window.feature)
            earlier = merged.get(key)
            merged[key] = window if earlier is None else WindowParts(
                window.view, window.namespace, window.feature, window.window_start_ms,
                window.window_end_ms, {**earlier.parts, **window.parts})
        statement = insert(drift_windows).values([
            {"view": w.view, "namespace": w.namespace, "feature": w.feature,
             "window_end": w.window_end_ms, "window_start": w.window_start_ms,
             "parts": dict(w.parts), "received_at": now} for w in merged.values()])
        statement = statement.on_conflict_do_update(
            constraint="fp_drift_windows_pkey",
            set_={"parts": drift_windows.c.parts.op("||")(statement.excluded.parts),
                  "received_at": now})
        with database_errors("drift store"), self.engine.begin() as conn:
            conn.execute(statement)

    def windows(self, view: str, namespace: str, after_ms: int, until_ms: int,
                ) -> list[WindowParts]:
        query = (select(drift_windows)
                 .where(drift_windows.c.view == view, drift_windows.c.namespace == namespace,
                        drift_windows.c.window_end > after_ms,
                        drift_windows.c.window_end <= until_ms)
                 .order_by(drift_windows.c.window_end, drift_windows.c.feature))
        with database_errors("drift store"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [WindowParts(r["view"], r["namespace"], r["feature"], r["window_start"],
                            r["window_end"], r["parts"]) for r in rows]

    def newest_window_ends(self) -> dict[tuple[str, str], int]:
        query = (select(drift_windows.c.view, drift_windows.c.namespace,
                        func.max(drift_windows.c.window_end))
                 .group_by(drift_windows.c.view, drift_windows.c.namespace))
        with database_errors("drift store"), self.engine.connect() as conn:
            return {(view, namespace): int(end)
                    for view, namespace, end in conn.execute(query).all()}

    def forget_windows(self, ending_before_ms: int) -> int:
        with database_errors("drift store"), self.engine.begin() as conn:
            result = conn.execute(delete(drift_windows)
                                  .where(drift_windows.c.window_end < ending_before_ms))
        return int(result.rowcount or 0)

    def save_readings(self, readings: Iterable[StoredReading]) -> None:
        values = [{"view": r.view, "version": r.version, "feature": r.feature,
                   "metric": r.metric, "value": r.value, "severity": r.severity,
                   "alert_at": r.alert_at, "namespace": r.namespace,
                   "window_end": r.window_end_ms, "horizon_start": r.horizon_start_ms,
                   "updated_at": r.updated_at} for r in readings]
        if not values:
            return
        statement = insert(drift_readings).values(values)
        statement = statement.on_conflict_do_update(
            constraint="fp_drift_readings_pkey",
            set_={name: statement.excluded[name] for name in values[0]
                  if name not in {"view", "version", "feature", "metric"}})
        with database_errors("drift store"), self.engine.begin() as conn:
            conn.execute(statement)

    def readings(self, view: str | None = None) -> list[StoredReading]:
        query = select(drift_readings).order_by(
            drift_readings.c.view, drift_readings.c.version, drift_readings.c.feature,
            drift_readings.c.metric)
        if view is not None:
            query = query.where(drift_readings.c.view == view)
        with database_errors("drift store"), self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [StoredReading(r["view"], r["version"], r["feature"], r["metric"], r["value"],
                              r["severity"], r["alert_at"], r["namespace"], r["window_end"],
                              r["horizon_start"], r["updated_at"]) for r in rows]
