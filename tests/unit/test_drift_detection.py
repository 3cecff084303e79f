"""Drift detection: the metrics against their reference formulas, the sample-size-aware
critical values, the alert state machine, and detection power and false alarms on synthetic
data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.domain.drift import (
    AlertChange,
    AlertTracker,
    AlertTransition,
    Baseline,
    DriftMetric,
    DriftThresholds,
    FeatureDrift,
    MetricReading,
    Severity,
    WindowStatistics,
    evaluate,
    js_distance,
    mean_shift,
    null_rate_change,
    psi,
    psi_critical_value,
)

DEFAULTS = DriftThresholds()
WINDOW = 5_000


def test_psi_equals_its_formula() -> None:
    # (0.4 - 0.5)·ln(0.4/0.5) + (0.4 - 0.3)·ln(0.4/0.3), in 40-digit decimal arithmetic.
    assert psi([0.5, 0.3, 0.2], [0.4, 0.4, 0.2]) == pytest.approx(
        0.05108256237659906832, abs=1e-9)


def test_psi_takes_an_empty_bin_as_a_ten_thousandth() -> None:
    # The third bin: (0.05 - 1e-4)·ln(0.05/1e-4).
    assert psi([0.5, 0.5, 0.0], [0.45, 0.5, 0.05]) == pytest.approx(
        0.31537696989415868302, abs=1e-9)
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0.0


def test_js_distance_equals_its_formula() -> None:
    # p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4): sqrt((KL(p‖m) + KL(q‖m)) / 2) in bits.
    assert js_distance([0.5, 0.5], [1.0, 0.0]) == pytest.approx(
        0.55792304528414388120, abs=1e-9)
    assert js_distance([0.2, 0.3, 0.5], [0.5, 0.3, 0.2]) == pytest.approx(
        0.30954095367714802388, abs=1e-9)


def test_js_distance_spans_zero_to_one_symmetrically() -> None:
    assert js_distance([0.2, 0.8], [0.2, 0.8]) == 0.0
    assert js_distance([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert js_distance([0.1, 0.9], [0.6, 0.4]) == js_distance([0.6, 0.4], [0.1, 0.9])


def test_distributions_over_different_bins_are_refused() -> None:
    with pytest.raises(ValueError, match="bins"):
        psi([0.5, 0.5], [1.0])


def test_mean_shift_is_in_baseline_standard_deviations() -> None:
    baseline = Baseline.of_numbers([1.0, 2.0, 3.0, 4.0])  # mean 2.5, std sqrt(1.25)
    live = WindowStatistics.of_numbers([3.0, 4.0, 5.0, 6.0])
    assert mean_shift(baseline, live) == pytest.approx(1.78885438199983175713, abs=1e-9)


def test_a_constant_baselines_mean_shift_is_infinite_once_the_mean_moves() -> None:
    baseline = Baseline.of_numbers([5.0, 5.0])
    assert mean_shift(baseline, WindowStatistics.of_numbers([5.0])) == 0.0
    assert mean_shift(baseline, WindowStatistics.of_numbers([5.0, 6.0])) == math.inf


def test_null_rate_change_is_absolute() -> None:
    baseline = Baseline.of_numbers([1.0, None, 3.0, None])
    assert null_rate_change(baseline, WindowStatistics.of_numbers([1.0, 2.0, 3.0, None])) \
        == 0.25
    assert null_rate_change(baseline, WindowStatistics.of_numbers([None, None, None, 1.0])) \
        == 0.25


def test_psi_critical_value_scales_chi_square_by_both_sample_sizes() -> None:
    # (1/5000 + 1/100000) · 27.877165 (chi-square's 99.9 % quantile at 9 degrees).
    assert psi_critical_value(5_000, 100_000, 10, 0.001) == pytest.approx(
        0.0058542046229, rel=1e-8)
    assert psi_critical_value(1_000, 1_000, 10, 0.001) \
        == pytest.approx(4 * psi_critical_value(4_000, 4_000, 10, 0.001))


@pytest.mark.parametrize("thresholds", [
    {"psi_warn": 0.3}, {"psi_warn": 0.0}, {"min_samples": 0}, {"alpha": 0.0}, {"alpha": 1.0},
])
def test_inconsistent_thresholds_are_refused(thresholds: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        DriftThresholds(**thresholds)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def normal_baseline() -> Baseline:
    return Baseline.of_numbers(np.random.default_rng(1).normal(0, 1, 100_000))


def test_too_few_values_are_not_judged(normal_baseline: Baseline) -> None:
    rng = np.random.default_rng(2)
    small = evaluate("f", normal_baseline, WindowStatistics.of_numbers(rng.normal(0, 1, 999)),
                     DEFAULTS)
    assert small.readings == {}
    # The null rate counts rows, the distribution non-null values.
    mostly_null = WindowStatistics.of_numbers([*rng.normal(0, 1, 500), *[None] * 600])
    drift = evaluate("f", normal_baseline, mostly_null, DEFAULTS)
    assert set(drift.readings) == {DriftMetric.NULL_RATE_CHANGE}
    assert drift.breaches == {DriftMetric.NULL_RATE_CHANGE}


def test_a_constant_baseline_has_no_mean_shift_reading() -> None:
    drift = evaluate("f", Baseline.of_numbers([2.0] * 2_000),
                     WindowStatistics.of_numbers([2.0] * 1_000 + [3.0] * 1_000), DEFAULTS)
    assert set(drift.readings) == {DriftMetric.NULL_RATE_CHANGE, DriftMetric.PSI,
                                   DriftMetric.JS_DISTANCE}
    assert drift.breaches == {DriftMetric.PSI, DriftMetric.JS_DISTANCE}


def test_psi_between_its_thresholds_warns(normal_baseline: Baseline) -> None:
    live = WindowStatistics.of_numbers(np.random.default_rng(4).normal(0.45, 1, WINDOW))
    reading = evaluate("f", normal_baseline, live, DEFAULTS).readings[DriftMetric.PSI]
    assert DEFAULTS.psi_warn <= reading.value < DEFAULTS.psi_alert
    assert (reading.severity, reading.alert_at) == (Severity.WARNING, DEFAULTS.psi_alert)


def test_small_windows_over_many_categories_are_judged_against_chance() -> None:
    # Without drift, 1,000 values over 100 equally likely categories give a PSI around
    # 99/1000 ≈ 0.1: the plain warning threshold would flag most windows.
    rng = np.random.default_rng(6)
    categories = [f"c{i}" for i in range(100)]
    baseline = Baseline.of_strings(rng.choice(categories, 100_000).tolist())
    readings = [
        evaluate("s", baseline, WindowStatistics.of_strings(
            rng.choice(categories, 1_000).tolist()), DEFAULTS).readings[DriftMetric.PSI]
        for _ in range(200)]
    assert sum(r.value >= DEFAULTS.psi_warn for r in readings) > 100
    assert sum(r.severity is not Severity.OK for r in readings) <= 4


def _drift(severities: dict[DriftMetric, Severity], feature: str = "f") -> FeatureDrift:
    values = {Severity.OK: 0.01, Severity.WARNING: 0.15, Severity.ALERT: 0.3}
    return FeatureDrift(feature, {metric: MetricReading(values[severity], severity, 0.25)
                                  for metric, severity in severities.items()})


OK, WARNING, ALERT = Severity.OK, Severity.WARNING, Severity.ALERT
PSI = DriftMetric.PSI


def _run(tracker: AlertTracker, severities: list[Severity]) -> list[list[AlertChange]]:
    return [[t.change for t in tracker.step(_drift({PSI: s}))] for s in severities]


def test_an_alert_opens_when_two_of_the_last_three_evaluations_breach() -> None:
    tracker = AlertTracker()
    assert _run(tracker, [ALERT, OK, OK, ALERT, OK, ALERT]) \
        == [[], [], [], [], [], [AlertChange.OPENED]]
    assert tracker.state("f", PSI) is ALERT


def test_an_open_alert_stays_one_alert_and_warnings_keep_it_open() -> None:
    tracker = AlertTracker()
    assert _run(tracker, [ALERT, ALERT, ALERT, WARNING, OK, OK, WARNING, OK, OK]) \
        == [[], [AlertChange.OPENED], [], [], [], [], [], [], []]
    assert tracker.state("f", PSI) is ALERT


def test_an_alert_resolves_after_three_consecutive_clean_evaluations() -> None:
    tracker = AlertTracker()
    transitions = [tracker.step(_drift({PSI: s})) for s in [ALERT, ALERT, OK, OK, OK]]
    assert transitions[-1] == [AlertTransition("f", PSI, AlertChange.RESOLVED, 0.01)]
    assert tracker.state("f", PSI) is OK
    assert _run(tracker, [ALERT, WARNING, ALERT]) == [[], [], [AlertChange.OPENED]]


def test_state_before_an_alert_is_the_latest_readings() -> None:
    tracker = AlertTracker()
    assert tracker.state("f", PSI) is OK
    _run(tracker, [WARNING])
    assert tracker.state("f", PSI) is WARNING
    _run(tracker, [ALERT])  # one breach: no alert yet
    assert tracker.state("f", PSI) is WARNING
    _run(tracker, [OK])
    assert tracker.state("f", PSI) is OK


def test_features_and_metrics_are_tracked_apart() -> None:
    tracker = AlertTracker()
    tracker.step(_drift({PSI: ALERT, DriftMetric.MEAN_SHIFT: OK}, feature="a"))
    tracker.step(_drift({PSI: ALERT}, feature="b"))
    opened = tracker.step(_drift({PSI: ALERT, DriftMetric.MEAN_SHIFT: ALERT}, feature="a"))
    assert [(t.feature, t.metric) for t in opened] == [("a", PSI)]
    assert tracker.state("b", PSI) is WARNING


def _windows_until_alert(baseline: Baseline, windows: list[WindowStatistics]) -> int | None:
    tracker = AlertTracker()
    for number, window in enumerate(windows, start=1):
        if tracker.step(evaluate("f", baseline, window, DEFAULTS)):
            return number
    return None


def test_a_quarter_standard_deviation_shift_alerts_within_two_windows(
        normal_baseline: Baseline) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):  # twenty independent onsets, each detected at its second window
        windows = [WindowStatistics.of_numbers(rng.normal(0.25, 1, WINDOW)) for _ in range(2)]
        assert _windows_until_alert(normal_baseline, windows) == 2


def test_a_thousand_windows_without_drift_raise_at_most_ten_alerts(
        normal_baseline: Baseline) -> None:
    values = np.random.default_rng(8).normal(0, 1, (1_000, WINDOW))
    tracker = AlertTracker()
    alerting_windows = sum(
        any(t.change is AlertChange.OPENED
            for t in tracker.step(evaluate("f", normal_baseline,
                                           WindowStatistics.of_numbers(window), DEFAULTS)))
        for window in values)
    assert alerting_windows <= 10
    assert alerting_windows == 0  # measured: no window comes near a threshold


def test_a_new_category_with_five_percent_of_the_mass_alerts() -> None:
    rng = np.random.default_rng(9)
    categories = [f"merchant-{i}" for i in range(20)]
    weights = np.array([1 / (rank + 1) for rank in range(20)])
    weights /= weights.sum()
    baseline = Baseline.of_strings(rng.choice(categories, 100_000, p=weights).tolist())
    quiet = [WindowStatistics.of_strings(rng.choice(categories, WINDOW, p=weights).tolist())
             for _ in range(10)]
    assert _windows_until_alert(baseline, quiet) is None
    drifted = [WindowStatistics.of_strings(
        [*rng.choice(categories, WINDOW * 95 // 100, p=weights).tolist(),
         *["merchant-new"] * (WINDOW * 5 // 100)]) for _ in range(2)]
    assert _windows_until_alert(baseline, drifted) == 2
    assert evaluate("s", baseline, drifted[0], DEFAULTS).breaches \
        == {DriftMetric.PSI, DriftMetric.JS_DISTANCE}
