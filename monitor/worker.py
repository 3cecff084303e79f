"""`fp monitor run`: one drift monitor; several may run, the one elected leads.

The leader stores the statistics rows every job emits (:mod:`monitor.statistics` →
``fp_drift_windows``), follows the registry's log for baselines, deployments and thresholds,
and judges each view version that has a baseline once per completed monitoring window
(:class:`monitor.evaluation.VersionMonitor`): the latest readings go to
``fp_drift_readings``, each alert opened or resolved to the view's ``drift:{view}`` stream as
DriftDetected / DriftResolved, and to the webhook when one is set.

A window is complete once a row of a later window of its job arrived ``grace_ms`` ago, or
once its job sent nothing for ``settle_ms`` (all of a window's rows leave the job at once,
when its watermark passes the window's end; the grace covers the statistics topic's
partitions being read a little apart).  A new leader takes the windows stored before it led
as judged, reloads the newest horizon of them, and recovers the open alerts from the log: an
alert opened by an earlier leader is resolved, never opened twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from core.domain.drift import (
    AlertChange,
    CategoricalSummary,
    DriftThresholds,
    statistics_of_parts,
)
from core.domain.events import (
    DriftDetected,
    DriftEvent,
    DriftResolved,
    NewEvent,
    StreamAppend,
    drift_stream,
)
from core.errors import ConcurrencyConflictError
from deployer.coordination import LeaderElection, Leadership, lead_when_elected
from monitor.alerts import AlertSink
from monitor.evaluation import Evaluation, MonitoredViews, Target, VersionMonitor, Window
from monitor.statistics import StatisticsSource
from registry.store.base import RegistryStore
from registry.store.drift import DriftStore, StoredReading, WindowParts

logger = logging.getLogger(__name__)

ACTOR = {"actor": "monitor"}
MONITOR_LOCK_KEY = 7_214_003
"""The advisory lock of the monitors' leader (the deployers' is 7_214_002)."""
RETENTION_FLOOR_MS = 86_400_000
"""Windows are kept at least a day (and two horizons), then deleted."""
APPEND_ATTEMPTS = 5

NamespaceKey = tuple[str, str]


@dataclass
class _Judged:
    monitor: VersionMonitor
    target: Target


@dataclass
class WindowArrivals:
    """When the first row of each window of a job arrived, and its last row of any."""

    first_seen: dict[NamespaceKey, dict[int, float]] = field(default_factory=dict)
    last_seen: dict[NamespaceKey, float] = field(default_factory=dict)

    def note(self, windows: list[WindowParts], now: float) -> None:
        for window in windows:
            key = (window.view, window.namespace)
            self.first_seen.setdefault(key, {}).setdefault(window.window_end_ms, now)
            self.last_seen[key] = now

    def complete_until(self, key: NamespaceKey, now: float, grace_s: float,
                       settle_s: float) -> int:
        """The end of the newest window of the job whose rows have all arrived: every
        window, once the job has been quiet ``settle_s``; else those before a window whose
        first row came ``grace_s`` ago (the statistics topic's partitions are read a little
        apart, so a later window's first row may arrive before an earlier one's last)."""
        seen = self.first_seen[key]
        if now - self.last_seen[key] >= settle_s:
            return max(seen)
        settled = [end for end, at in seen.items() if now - at >= grace_s]
        until = max(settled, default=0) - 1
        for end in [end for end in seen if end < until]:
            del seen[end]  # judged by now: only the newer ones matter
        return until


class DriftMonitorWorker:
    def __init__(self, *, store: RegistryStore, drift: DriftStore, election: LeaderElection,
                 statistics: Callable[[], StatisticsSource], horizon_ms: int,
                 alerts: AlertSink | None = None, poll_interval: float = 1.0,
                 settle_ms: int = 10_000, grace_ms: int = 2_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.drift = drift
        self.election = election
        self.statistics = statistics
        self.horizon_ms = horizon_ms
        self.alerts = alerts
        self.poll_interval = poll_interval
        self.settle_ms = settle_ms
        self.grace_ms = grace_ms
        self.clock = clock
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Lead when elected, else wait to be; until :meth:`stop`."""
        lead_when_elected(self.election, self.stopping, self._lead, name="drift monitor",
                          poll_interval=self.poll_interval)

    def _lead(self, leadership: Leadership) -> None:
        session = _Session(self, self.drift.newest_window_ends())
        source = self.statistics()
        try:
            while not self.stopping.is_set():
                windows = source.poll(timeout=min(self.poll_interval, 0.5))
                if windows:
                    self.drift.add_windows(windows)
                    source.commit()
                    session.arrivals.note(windows, self.clock())
                session.follow_registry()
                session.judge_complete_windows()
                session.forget_old_windows()
        finally:
            source.close()


class _Session:
    """One leadership: the monitors of every view version with a baseline."""

    def __init__(self, worker: DriftMonitorWorker, judged_until: dict[NamespaceKey, int]
                 ) -> None:
        self.worker = worker
        self.judged_until = judged_until
        self.views = MonitoredViews()
        self.monitors: dict[tuple[str, int], _Judged] = {}
        self.arrivals = WindowArrivals()
        self._forgot_at = 0.0

    def follow_registry(self) -> None:
        store = self.worker.store
        while events := store.read_events(self.views.position, limit=1000):
            for event in events:
                self.views.add(event)
        targets = {(t.view, t.version): t for t in self.views.targets()}
        for key in self.monitors.keys() - targets.keys():
            del self.monitors[key]
        for key, target in targets.items():
            judged = self.monitors.get(key)
            if judged is None or judged.target.baseline_position != target.baseline_position:
                self.monitors[key] = _Judged(self._primed(target), target)
            else:  # a metadata version may have changed them
                judged.monitor.thresholds = self._thresholds(target)

    def _thresholds(self, target: Target) -> DriftThresholds:
        return self.views.thresholds[target.view]

    def _primed(self, target: Target) -> VersionMonitor:
        """A monitor of ``target`` holding the horizon judged before, its alerts recovered."""
        monitor = VersionMonitor(target.baselines, self._thresholds(target),
                                 self.worker.horizon_ms,
                                 open_alerts=self.views.open_alerts(target.view,
                                                                    target.version))
        until = self.judged_until.get((target.view, target.namespace))
        if until is not None:
            for window in self._windows(target.view, target.namespace,
                                        until - self.worker.horizon_ms, until):
                monitor.remember(window)
        logger.info("drift monitor judges %s@%s (namespace %s) against baseline %s",
                    target.view, target.version, target.namespace, target.baseline_position)
        return monitor

    def judge_complete_windows(self) -> None:
        now = self.worker.clock()
        for key in self.arrivals.first_seen:
            until = self.arrivals.complete_until(key, now, self.worker.grace_ms / 1000,
                                                 self.worker.settle_ms / 1000)
            after = self.judged_until.get(key, 0)
            if until <= after:
                continue
            judged = [j for j in self.monitors.values()
                      if (j.target.view, j.target.namespace) == key]
            windows = self._windows(*key, after, until) if judged else []
            for window in windows:
                for one in judged:
                    self._record(one.target, one.monitor.observe(window))
            self.judged_until[key] = max([until, *(w.end_ms for w in windows)])

    def _windows(self, view: str, namespace: str, after_ms: int, until_ms: int
                 ) -> list[Window]:
        """The stored windows of a job, read as the statistics of the features judged."""
        categorical = {name: isinstance(baseline.statistics.summary, CategoricalSummary)
                       for j in self.monitors.values()
                       if (j.target.view, j.target.namespace) == (view, namespace)
                       for name, baseline in j.target.baselines.items()}
        by_end: dict[int, dict[str, Any]] = defaultdict(dict)
        starts: dict[int, int] = {}
        for stored in self.worker.drift.windows(view, namespace, after_ms, until_ms):
            kind = categorical.get(stored.feature)
            if kind is None:
                continue
            by_end[stored.window_end_ms][stored.feature] = statistics_of_parts(
                stored.parts, categorical=kind)
            starts[stored.window_end_ms] = stored.window_start_ms
        return [Window(starts[end], end, by_end[end]) for end in sorted(by_end)]

    def _record(self, target: Target, evaluation: Evaluation) -> None:
        now = datetime.now(UTC)
        self.worker.drift.save_readings(
            StoredReading(target.view, target.version, drift.feature, metric.value,
                          reading.value, evaluation.states[(drift.feature, metric)].value,
                          reading.alert_at, target.namespace, evaluation.window_end_ms,
                          evaluation.horizon_start_ms, now)
            for drift in evaluation.drifts for metric, reading in drift.readings.items())
        for transition in evaluation.transitions:
            event_type = (DriftDetected if transition.change is AlertChange.OPENED
                          else DriftResolved)
            reading = next(d.readings[transition.metric] for d in evaluation.drifts
                           if d.feature == transition.feature)
            event = event_type(
                view=target.view, version=target.version, namespace=target.namespace,
                feature=transition.feature, metric=transition.metric.value,
                value=transition.value, alert_at=reading.alert_at,
                window_end_ms=evaluation.window_end_ms,
                horizon_start_ms=evaluation.horizon_start_ms,
                baseline_position=target.baseline_position)
            position = self._append(event)
            logger.warning("%s@%s %s: %s %s %.4g (alerts at %.4g)", target.view,
                           target.version, transition.feature, event.TYPE,
                           transition.metric.value, transition.value, reading.alert_at)
            if self.worker.alerts is not None:
                self.worker.alerts.send({"type": str(event.TYPE), "position": position,
                                         **_json(event)})

    def _append(self, event: DriftEvent) -> int:
        stream = drift_stream(event.view)
        for _ in range(APPEND_ATTEMPTS):
            current = len(self.worker.store.read_stream(stream))
            try:
                return self.worker.store.append([StreamAppend(
                    stream, current, (NewEvent(event, ACTOR),))])[0].position
            except ConcurrencyConflictError:
                continue  # a baseline was registered meanwhile
        raise ConcurrencyConflictError(f"{stream} kept changing; the alert is retried")

    def forget_old_windows(self) -> None:
        now = self.worker.clock()
        if now - self._forgot_at < 600:
            return
        self._forgot_at = now
        keep_ms = max(2 * self.worker.horizon_ms, RETENTION_FLOOR_MS)
        forgotten = self.worker.drift.forget_windows(int(now * 1000) - keep_ms)
        if forgotten:
            logger.info("drift monitor deleted %d windows older than %d s", forgotten,
                        keep_ms // 1000)


def _json(event: DriftEvent) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(event)
    return body
