"""The monitor's code path on synthetic windows: horizons merged and judged per feature,
detection power and false alarms, alerts recovered from the log, the registry folded."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest

from core.domain.drift import (
    AlertChange,
    Baseline,
    DriftMetric,
    DriftThresholds,
    Severity,
    WindowStatistics,
)
from core.domain.events import (
    BaselineRegistered,
    DefinitionRegistered,
    DeploymentKind,
    DeploymentStarted,
    DriftDetected,
    EventPayload,
    RecordedEvent,
    deployment_stream,
    drift_stream,
)
from monitor.evaluation import MonitoredViews, VersionMonitor, Window
from monitor.worker import WindowArrivals
from registry.store.drift import WindowParts

MINUTE = 60_000
WINDOW_MS = 5 * MINUTE
HORIZON_MS = 60 * MINUTE
PER_WINDOW = 1_000
"""Values a 5-minute window holds: a view emitting 200 feature values a minute."""


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return Baseline.of_numbers(np.random.default_rng(1).normal(0, 1, 100_000))


def window(number: int, values: npt.NDArray[np.float64]) -> Window:
    return Window(number * WINDOW_MS, (number + 1) * WINDOW_MS,
                  {"amount": WindowStatistics.of_numbers(values)})


def alerts_opened(monitor: VersionMonitor, windows: list[Window]) -> list[int]:
    """The numbers of the windows whose evaluation opened an alert."""
    return [number for number, w in enumerate(windows)
            if any(t.change is AlertChange.OPENED for t in monitor.observe(w).transitions)]


def test_a_shift_of_half_a_standard_deviation_alerts_within_the_horizon(
        baseline: Baseline) -> None:
    rng = np.random.default_rng(2)
    onsets = []
    for _ in range(10):  # ten independent runs: an hour of no drift, then a shift
        monitor = VersionMonitor({"amount": baseline}, DriftThresholds(), HORIZON_MS)
        quiet = [window(n, rng.normal(0, 1, PER_WINDOW)) for n in range(12)]
        shifted = [window(n, rng.normal(0.5, 1, PER_WINDOW)) for n in range(12, 24)]
        opened = alerts_opened(monitor, quiet + shifted)
        assert opened, "the shift opened an alert"
        onsets.append(opened[0] - 12 + 1)
    # The hour's horizon dilutes the shift by the windows before it: the horizon's mean has
    # moved 0.2 standard deviations (mean_shift_alert) once 5 of its 12 windows are shifted,
    # and the second breach opens the alert — 30 to 35 minutes after the onset.
    assert set(onsets) <= {6, 7}


def test_no_drift_over_a_day_of_windows_opens_no_alert(baseline: Baseline) -> None:
    rng = np.random.default_rng(3)
    monitor = VersionMonitor({"amount": baseline}, DriftThresholds(), HORIZON_MS)
    windows = [window(n, rng.normal(0, 1, PER_WINDOW)) for n in range(288)]
    assert alerts_opened(monitor, windows) == []


def test_an_alert_resolves_once_the_horizon_is_clean_again(baseline: Baseline) -> None:
    rng = np.random.default_rng(4)
    monitor = VersionMonitor({"amount": baseline}, DriftThresholds(), 3 * WINDOW_MS)
    changes = []
    for number in range(12):
        mean = 2.0 if 2 <= number < 5 else 0.0
        evaluation = monitor.observe(window(number, rng.normal(mean, 1, PER_WINDOW)))
        changes += [(number, t.change) for t in evaluation.transitions
                    if t.metric is DriftMetric.PSI]
    # Opened at the second shifted window; the horizon holds a shifted window until the
    # seventh, then three clean evaluations resolve it.
    assert changes == [(3, AlertChange.OPENED), (9, AlertChange.RESOLVED)]


def test_too_few_values_in_the_horizon_are_not_judged(baseline: Baseline) -> None:
    monitor = VersionMonitor({"amount": baseline}, DriftThresholds(min_samples=5_000),
                             2 * WINDOW_MS)
    evaluation = monitor.observe(window(0, np.full(1_000, 9.0)))
    [drift] = evaluation.drifts
    assert drift.readings == {}
    assert monitor.observe(window(1, np.full(1_000, 9.0))).drifts[0].readings == {}


def test_an_alert_open_in_the_log_is_resolved_not_opened_again(baseline: Baseline) -> None:
    rng = np.random.default_rng(5)
    monitor = VersionMonitor({"amount": baseline}, DriftThresholds(), WINDOW_MS,
                             open_alerts=[("amount", DriftMetric.PSI)])
    shifted = monitor.observe(window(0, rng.normal(3, 1, PER_WINDOW)))
    assert shifted.states[("amount", DriftMetric.PSI)] is Severity.ALERT
    assert not [t for t in shifted.transitions if t.metric is DriftMetric.PSI]
    changes = [t.change for n in range(1, 4)
               for t in monitor.observe(window(n, rng.normal(0, 1, PER_WINDOW))).transitions
               if t.metric is DriftMetric.PSI]
    assert changes == [AlertChange.RESOLVED]


def test_features_without_values_in_the_horizon_are_skipped(baseline: Baseline) -> None:
    monitor = VersionMonitor({"amount": baseline, "other": baseline}, DriftThresholds(),
                             HORIZON_MS)
    evaluation = monitor.observe(window(0, np.zeros(10)))
    assert [d.feature for d in evaluation.drifts] == ["amount"]


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def recorded(position: int, stream: str, payload: EventPayload) -> RecordedEvent:
    return RecordedEvent(position, stream, 1, payload, {}, T0)


def test_the_registry_log_gives_targets_thresholds_and_open_alerts() -> None:
    spec = {"kind": "feature_view", "name": "pay", "entities": ["user"], "source": "s",
            "features": [{"name": "amount", "aggregation": "sum", "column": "a",
                          "window": "1m"}], "drift": {"psi_alert": 0.4}}
    statistics = WindowStatistics.of_numbers([1.0, 2.0, 3.0]).to_json()
    views = MonitoredViews()
    for event in [
        recorded(1, "feature_view:pay", DefinitionRegistered(
            kind="feature_view", name="pay", version=1, from_version=None, spec=spec,
            spec_hash="h", change_class=None)),
        recorded(2, drift_stream("pay"), BaselineRegistered(
            view="pay", version=1, features={"amount": statistics}, origin={})),
        recorded(3, deployment_stream("pay"), DeploymentStarted(
            view="pay", deployment=1, version=1, namespace="v1",
            kind=DeploymentKind.BLUE_GREEN, job_id="j", blue_version=None,
            blue_namespace=None, blue_job_id=None)),
        recorded(4, drift_stream("pay"), DriftDetected(
            view="pay", version=1, namespace="v1", feature="amount", metric="psi",
            value=0.5, alert_at=0.4, window_end_ms=1, horizon_start_ms=0,
            baseline_position=2)),
    ]:
        views.add(event)
    [target] = views.targets()
    assert (target.view, target.version, target.namespace, target.baseline_position) == (
        "pay", 1, "v1", 2)
    assert views.thresholds["pay"].psi_alert == 0.4
    assert views.open_alerts("pay", 1) == [("amount", DriftMetric.PSI)]
    assert views.open_alerts("pay", 2) == []


def test_a_window_is_complete_once_a_later_ones_rows_settled_or_the_job_is_quiet() -> None:
    def parts(end_ms: int) -> WindowParts:
        return WindowParts("pay", "v1", "amount", end_ms - WINDOW_MS, end_ms, {})

    arrivals, key = WindowArrivals(), ("pay", "v1")
    arrivals.note([parts(WINDOW_MS)], now=100.0)
    arrivals.note([parts(2 * WINDOW_MS)], now=105.0)
    complete = functools.partial(arrivals.complete_until, key, grace_s=2.0, settle_s=10.0)
    assert complete(now=106.0) == WINDOW_MS - 1, "the second window's rows may still arrive"
    assert complete(now=107.0) == 2 * WINDOW_MS - 1, "the first is complete"
    arrivals.note([parts(WINDOW_MS)], now=107.5)  # a last row of the first window
    assert complete(now=117.5) == 2 * WINDOW_MS, "quiet: the newest too"
