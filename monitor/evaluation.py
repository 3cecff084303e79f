"""Judging a view version's monitoring windows against its baseline (pure; no I/O).

:class:`VersionMonitor` keeps the windows of one rolling horizon of one view version, and on
each new window merges the horizon per feature, judges it against the feature's baseline
(:func:`core.domain.drift.evaluate`) and steps the alert state (:class:`AlertTracker`).  The
monitor's worker feeds it the windows the jobs emitted; tests feed it synthetic ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.domain.definitions import FeatureView, Kind, parse_definition
from core.domain.drift import (
    AlertTracker,
    AlertTransition,
    Baseline,
    DriftMetric,
    DriftThresholds,
    FeatureDrift,
    Severity,
    WindowStatistics,
    evaluate,
)
from core.domain.drift_log import DriftLog
from core.domain.events import (
    DRIFT_STREAM_PREFIX,
    DefinitionRegistered,
    DeploymentStarted,
    RecordedEvent,
)


@dataclass(frozen=True)
class Window:
    """One monitoring window of a job: each feature's statistics (features without values
    in the window are absent)."""

    start_ms: int
    end_ms: int
    features: Mapping[str, WindowStatistics]


@dataclass(frozen=True)
class Evaluation:
    """What one new window made of the horizon ending with it."""

    window_end_ms: int
    horizon_start_ms: int
    """The start of the oldest window merged."""
    drifts: tuple[FeatureDrift, ...]
    transitions: tuple[AlertTransition, ...]
    states: Mapping[tuple[str, DriftMetric], Severity]
    """Each reading's feature and metric → ALERT while its alert is open, else the
    reading's own level (AlertTracker.state)."""


@dataclass
class VersionMonitor:
    baselines: Mapping[str, Baseline]
    """Feature → its baseline; features without one are not judged."""
    thresholds: DriftThresholds
    horizon_ms: int
    open_alerts: Iterable[tuple[str, DriftMetric]] = ()
    _windows: dict[int, Window] = field(default_factory=dict)
    _tracker: AlertTracker = field(init=False)

    def __post_init__(self) -> None:
        self._tracker = AlertTracker(self.open_alerts)

    def remember(self, window: Window) -> None:
        """Add ``window`` to the horizon without judging it (a restarted monitor reloading
        the windows it judged before)."""
        self._windows[window.end_ms] = window
        self._forget_before(max(self._windows) - self.horizon_ms)

    def observe(self, window: Window) -> Evaluation:
        """Add ``window`` and judge the horizon that ends with it."""
        self.remember(window)
        horizon = [self._windows[end] for end in sorted(self._windows)
                   if end <= window.end_ms]
        drifts = []
        for feature, baseline in sorted(self.baselines.items()):
            seen = [w.features[feature] for w in horizon if feature in w.features]
            if seen:
                drifts.append(evaluate(feature, baseline, WindowStatistics.merge_all(seen),
                                       self.thresholds))
        transitions = [t for drift in drifts for t in self._tracker.step(drift)]
        return Evaluation(
            window_end_ms=window.end_ms, horizon_start_ms=horizon[0].start_ms,
            drifts=tuple(drifts), transitions=tuple(transitions),
            states={(d.feature, metric): self._tracker.state(d.feature, metric)
                    for d in drifts for metric in d.readings})

    def _forget_before(self, end_ms: int) -> None:
        # A window belongs to the horizon while its end lies within horizon_ms of the newest.
        for end in [end for end in self._windows if end <= end_ms]:
            del self._windows[end]


@dataclass(frozen=True)
class Target:
    """A view version with a baseline, and the namespace whose job computes its features."""

    view: str
    version: int
    namespace: str
    baseline_position: int
    baselines: Mapping[str, Baseline]


@dataclass
class MonitoredViews:
    """The registry's log folded into what the monitor needs: the baselines, each version's
    namespace, the alerts open and each view's thresholds (its latest definition's, so that a
    metadata version changes them at once)."""

    position: int = 0
    thresholds: dict[str, DriftThresholds] = field(default_factory=dict)
    namespaces: dict[tuple[str, int], str] = field(default_factory=dict)
    logs: dict[str, DriftLog] = field(default_factory=dict)

    def add(self, event: RecordedEvent) -> None:
        self.position = event.position
        payload = event.payload
        if isinstance(payload, DefinitionRegistered) and payload.kind == Kind.FEATURE_VIEW:
            view = parse_definition(payload.spec)
            assert isinstance(view, FeatureView)
            self.thresholds[view.name] = view.drift
        elif isinstance(payload, DeploymentStarted):
            self.namespaces[(payload.view, payload.version)] = payload.namespace
        elif event.stream.startswith(DRIFT_STREAM_PREFIX):
            self.logs.setdefault(event.stream.removeprefix(DRIFT_STREAM_PREFIX),
                                 DriftLog()).add(event)

    def targets(self) -> list[Target]:
        """Every view version with a baseline and a deployment."""
        targets = []
        for view, log in sorted(self.logs.items()):
            for version, registered in sorted(log.baselines.items()):
                namespace = self.namespaces.get((view, version))
                if namespace is not None:
                    targets.append(Target(view, version, namespace, registered.position, {
                        name: Baseline(WindowStatistics.from_json(body))
                        for name, body in registered.baseline.features.items()}))
        return targets

    def open_alerts(self, view: str, version: int) -> list[tuple[str, DriftMetric]]:
        log = self.logs.get(view)
        return [(feature, DriftMetric(metric)) for (alerted, feature, metric)
                in (log.open_alerts if log else {}) if alerted == version]
