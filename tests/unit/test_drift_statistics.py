"""Drift statistics: the fixed buckets, window statistics and their merge, baselines, the
mapping of buckets onto a baseline's bins, and the chi-square distribution."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.drift import (
    CATEGORY_CAP,
    TOP_BUCKET,
    Baseline,
    CategoricalSummary,
    NumericSummary,
    WindowStatistics,
    bucket_bounds,
    bucket_index,
    chi_square_quantile,
    chi_square_survival,
    part_key,
    psi,
    statistics_of_parts,
)

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Moments are compared relative to the values' magnitude: a mean near zero of values near a
# million is known to a millionth of a unit, not to a billionth of itself.
moderate_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
raw_numbers = st.one_of(moderate_floats, st.none(), st.just(math.nan), st.just(math.inf),
                        st.just(-math.inf))
windows_of_numbers = st.lists(st.lists(raw_numbers, max_size=40), min_size=12, max_size=12)
DETERMINISTIC = settings(derandomize=True, deadline=None, max_examples=100)


def _decade_bucket(exponent: int) -> int:
    return 1 + (exponent + 9) * 10


@pytest.mark.parametrize("exponent", range(-9, 20))
def test_a_power_of_ten_starts_a_bucket_and_its_neighbours_above_share_it(
        exponent: int) -> None:
    power = float(f"1e{exponent}")
    above = power
    for _ in range(4):
        above = math.nextafter(above, math.inf)
        assert bucket_index(above) == _decade_bucket(exponent)
    assert bucket_index(power) == _decade_bucket(exponent)
    assert bucket_index(-power) == -_decade_bucket(exponent)
    assert bucket_bounds(_decade_bucket(exponent))[0] == power


@pytest.mark.parametrize("exponent", range(-8, 20))
def test_a_value_a_few_ulps_below_a_power_of_ten_joins_its_bucket(exponent: int) -> None:
    # log10 rounds to the power itself there, in the C library as in Java's Math.log10.
    below = float(f"1e{exponent}")
    for _ in range(4):
        below = math.nextafter(below, 0)
        assert bucket_index(below) == _decade_bucket(exponent)


@pytest.mark.parametrize(("value", "index"), [
    (0.0, 0), (-0.0, 0), (1e-10, 0), (-9.99e-10, 0), (math.nextafter(1e-9, 0), 0),
    (1e-9, 1), (-1e-9, -1), (1.0, 91), (1.25, 91), (1.26, 92), (-1.26, -92), (9.99, 100),
    (2.0**63, 280), (9.9e18, 280), (1e19, TOP_BUCKET), (1e300, TOP_BUCKET),
    (sys.float_info.max, TOP_BUCKET), (-sys.float_info.max, -TOP_BUCKET),
])
def test_bucket_of_zero_tiny_negative_and_huge_values(value: float, index: int) -> None:
    assert bucket_index(value) == index


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_finite_has_no_bucket(value: float) -> None:
    with pytest.raises(ValueError, match="counts as a null"):
        bucket_index(value)


@DETERMINISTIC
@given(finite_floats)
def test_every_finite_value_lies_within_its_buckets_bounds(value: float) -> None:
    low, high = bucket_bounds(bucket_index(value))
    slack = 1e-15 * abs(value)  # bounds are nominal powers of ten: log10 rounds near them
    assert low - slack <= value <= high + slack


def test_buckets_tile_the_line_without_gaps() -> None:
    for index in range(-TOP_BUCKET, TOP_BUCKET):
        assert bucket_bounds(index)[1] == bucket_bounds(index + 1)[0]
    assert bucket_bounds(0) == (-1e-9, 1e-9)
    assert bucket_bounds(TOP_BUCKET) == (1e19, sys.float_info.max)
    assert bucket_bounds(-TOP_BUCKET) == (-sys.float_info.max, -1e19)
    with pytest.raises(ValueError, match="buckets run from"):
        bucket_bounds(TOP_BUCKET + 1)


def test_statistics_of_numbers_count_nulls_nan_and_infinities_as_nulls() -> None:
    statistics = WindowStatistics.of_numbers([1.0, None, 2.0, math.nan, 3.0, math.inf, 0.0])
    summary = statistics.numeric
    assert (statistics.count, statistics.nulls, statistics.rows) == (4, 3, 7)
    assert statistics.null_rate == pytest.approx(3 / 7)
    assert (summary.mean, summary.variance, summary.minimum, summary.maximum) == (
        1.5, 1.25, 0.0, 3.0)
    assert summary.buckets == {0: 1, 91: 1, 94: 1, 95: 1}


def test_statistics_of_no_values() -> None:
    statistics = WindowStatistics.of_numbers([None, None])
    assert (statistics.count, statistics.nulls, statistics.null_rate) == (0, 2, 1.0)
    assert statistics.numeric == NumericSummary(count=0, mean=0.0, squared_deviations=0.0,
                                                minimum=None, maximum=None, buckets={})
    assert WindowStatistics.of_numbers([]).null_rate == 0.0


def _assert_same_statistics(merged: WindowStatistics, direct: WindowStatistics) -> None:
    """Counts exact; moments within 1e-9 of the values' magnitude."""
    assert (merged.count, merged.nulls) == (direct.count, direct.nulls)
    mine, theirs = merged.numeric, direct.numeric
    assert mine.buckets == theirs.buckets
    assert (mine.minimum, mine.maximum) == (theirs.minimum, theirs.maximum)
    scale = max((abs(bound) for bound in (theirs.minimum, theirs.maximum) if bound), default=0)
    assert mine.mean == pytest.approx(theirs.mean, rel=1e-9, abs=1e-9 * scale)
    assert mine.variance == pytest.approx(theirs.variance, rel=1e-9, abs=1e-9 * scale**2)


@DETERMINISTIC
@given(windows_of_numbers)
def test_an_hour_merged_from_twelve_windows_equals_the_hour_at_once(
        windows: list[list[float | None]]) -> None:
    merged = WindowStatistics.merge_all(WindowStatistics.of_numbers(w) for w in windows)
    direct = WindowStatistics.of_numbers([value for w in windows for value in w])
    _assert_same_statistics(merged, direct)


def test_twelve_windows_of_normal_values_merge_to_the_hour() -> None:
    values = np.random.default_rng(5).normal(100, 15, 12 * 5_000)
    merged = WindowStatistics.merge_all(
        WindowStatistics.of_numbers(window) for window in np.split(values, 12))
    _assert_same_statistics(merged, WindowStatistics.of_numbers(values))


@DETERMINISTIC
@given(st.lists(st.lists(raw_numbers, max_size=30), min_size=3, max_size=3))
def test_merge_is_associative_and_commutative(windows: list[list[float | None]]) -> None:
    first, second, third = (WindowStatistics.of_numbers(w) for w in windows)
    assert first.merge(second) == second.merge(first)
    _assert_same_statistics(first.merge(second).merge(third), first.merge(second.merge(third)))


def test_statistics_of_strings_keep_the_most_frequent_categories() -> None:
    # 150 categories: category i occurs i + 1 times (the two least frequent tie with c1).
    values: list[str | None] = [f"c{i:03}" for i in range(150) for _ in range(i + 1)]
    values += ["c000", "c000", None]  # c000 now ties with c002 at 3
    statistics = WindowStatistics.of_strings(values)
    summary = statistics.summary
    assert isinstance(summary, CategoricalSummary)
    assert len(summary.counts) == CATEGORY_CAP
    assert set(summary.counts) == {f"c{i:03}" for i in range(50, 150)}
    assert summary.other == sum(i + 1 for i in range(50)) + 2
    assert (statistics.count, statistics.nulls) == (len(values) - 1, 1)


def test_ties_at_the_cap_are_broken_by_name_not_by_arrival() -> None:
    names = [f"c{i:03}" for i in range(CATEGORY_CAP + 1)]
    for order in (names, names[::-1]):
        summary = WindowStatistics.of_strings(order).summary
        assert isinstance(summary, CategoricalSummary)
        assert "c100" not in summary.counts
        assert summary.other == 1


@DETERMINISTIC
@given(st.lists(st.lists(st.one_of(st.sampled_from("abcdefgh"), st.none()), max_size=30),
                min_size=12, max_size=12))
def test_string_windows_merge_to_the_hour_exactly(windows: list[list[str | None]]) -> None:
    merged = WindowStatistics.merge_all(WindowStatistics.of_strings(w) for w in windows)
    assert merged == WindowStatistics.of_strings([value for w in windows for value in w])


def test_merging_keeps_every_category_and_adds_what_rows_left_out() -> None:
    first = WindowStatistics(nulls=1, summary=CategoricalSummary({"a": 3, "b": 1}, other=2))
    second = WindowStatistics(nulls=0, summary=CategoricalSummary({"b": 4, "c": 5}, other=1))
    assert first.merge(second) == WindowStatistics(
        nulls=1, summary=CategoricalSummary({"a": 3, "b": 5, "c": 5}, other=3))


def test_statistics_of_different_kinds_do_not_merge() -> None:
    with pytest.raises(TypeError, match="cannot merge"):
        WindowStatistics.of_numbers([1.0]).merge(WindowStatistics.of_strings(["a"]))
    with pytest.raises(ValueError, match="no statistics"):
        WindowStatistics.merge_all([])


@pytest.mark.parametrize("statistics", [
    WindowStatistics.of_numbers([-3.5, 0.0, 1e-12, 2.0, 1e20, None, math.nan]),
    WindowStatistics.of_numbers([None]),
    WindowStatistics.of_strings(["a", "b", "a", None]),
])
def test_statistics_travel_as_json(statistics: WindowStatistics) -> None:
    assert WindowStatistics.from_json(json.loads(json.dumps(statistics.to_json()))) \
        == statistics


def test_a_row_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kinds are numeric and categorical"):
        WindowStatistics.from_json({"kind": "boolean", "nulls": 0})


def test_a_numeric_baseline_bins_whole_buckets_at_its_deciles() -> None:
    baseline = Baseline.of_numbers(np.random.default_rng(11).normal(0, 1, 100_000))
    normal_deciles = [-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816]
    # Each decile's bin ends where the decile's bucket does: beyond it, by under 26 %.
    for decile, edge in zip(normal_deciles, baseline.edges[1:-1], strict=True):
        assert decile - 0.02 <= edge <= decile + 0.02 + 0.26 * abs(decile)
    fractions = baseline.fractions(baseline.statistics)
    assert fractions.sum() == 1.0
    assert fractions[0] == fractions[-1] == 0.0  # below and above the training range
    assert fractions[1:-1] == pytest.approx([0.1] * 10, abs=0.05)


def test_bins_count_whole_buckets_exactly() -> None:
    baseline = Baseline.of_numbers([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    # 1 to 9 lie in buckets 91, 94, 95, 97, 97, 98, 99, 100, 100; 10 in 101.
    assert baseline.bin_cuts == (90, 91, 94, 95, 97, 98, 99, 100, 101)
    live = WindowStatistics.of_numbers([0.5, 1.0, 1.1, 2.0, 9.5, 10.0, 20.0, -3.0])
    assert list(baseline.bin_counts(live)) == [2, 2, 1, 0, 0, 0, 0, 1, 1, 1]


def test_a_constant_feature_bins_its_value_apart_from_its_neighbours() -> None:
    baseline = Baseline.of_numbers([2.0] * 10)
    assert baseline.bin_cuts == (bucket_index(2.0) - 1, bucket_index(2.0))
    live = WindowStatistics.of_numbers([1.0, 2.0, 2.01, 3.0])
    assert list(baseline.bin_counts(live)) == [1, 2, 1]


def test_a_discrete_feature_with_ties_on_its_deciles_compares_unbiased() -> None:
    rng = np.random.default_rng(3)
    baseline = Baseline.of_numbers(rng.poisson(3, 100_000).astype(float))
    assert len(baseline.bin_cuts) < 11  # deciles share buckets
    live = WindowStatistics.of_numbers(rng.poisson(3, 5_000).astype(float))
    assert psi(baseline.fractions(baseline.statistics), baseline.fractions(live)) < 0.01


def test_a_string_baseline_bins_its_categories_and_everything_else() -> None:
    baseline = Baseline.of_strings(["a"] * 6 + ["b"] * 3 + [None])
    live = WindowStatistics.of_strings(["a", "b", "b", "new", "new", None])
    assert list(baseline.bin_counts(live)) == [1, 2, 2]
    assert list(baseline.fractions(baseline.statistics)) == pytest.approx([2 / 3, 1 / 3, 0])
    with pytest.raises(TypeError, match="string one's"):
        baseline.bin_counts(WindowStatistics.of_numbers([1.0]))


@pytest.mark.parametrize("baseline", [
    Baseline.of_numbers([1.0, 2.0, 2.0, 7.5, None]), Baseline.of_strings(["x", "y", None]),
])
def test_baselines_travel_as_json(baseline: Baseline) -> None:
    assert Baseline.from_json(json.loads(json.dumps(baseline.to_json()))) == baseline


def test_a_baseline_needs_values() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        Baseline.of_numbers([None, math.nan])
    with pytest.raises(ValueError, match="at least one value"):
        Baseline.of_strings([None])


@pytest.mark.parametrize(("probability", "degrees", "quantile"), [
    # Tables of the chi-square distribution (Abramowitz & Stegun table 26.8, NIST handbook).
    (0.95, 1, 3.841459), (0.99, 1, 6.634897), (0.999, 1, 10.827566),
    (0.95, 2, 5.991465), (0.999, 2, 13.815511), (0.999, 3, 16.266236),
    (0.95, 9, 16.918978), (0.99, 9, 21.665994), (0.999, 9, 27.877165),
    (0.95, 20, 31.410433), (0.99, 50, 76.153891), (0.999, 100, 149.449252),
])
def test_chi_square_quantiles_match_the_tables(probability: float, degrees: int,
                                               quantile: float) -> None:
    assert chi_square_quantile(probability, degrees) == pytest.approx(quantile, rel=1e-6)


def test_chi_square_survival_at_its_closed_forms() -> None:
    assert chi_square_survival(0.0, 4) == 1.0
    assert chi_square_survival(3.0, 2) == pytest.approx(math.exp(-1.5), rel=1e-14)
    assert chi_square_survival(4.0, 1) == pytest.approx(math.erfc(math.sqrt(2)), rel=1e-14)
    with pytest.raises(ValueError, match="degrees of freedom"):
        chi_square_survival(1.0, 0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        chi_square_quantile(1.0, 3)


def _parts_as_the_job_counts(values: list[float | None]) -> dict[str, dict[str, float]]:
    """What the streaming job's statistics statement emits for one window and feature: per
    bucket the row count, sum, sum of squares, minimum and maximum; the nulls apart."""
    parts: dict[str, dict[str, float]] = {}
    for value in values:
        finite = value is not None and math.isfinite(value)
        key = part_key(bucket_index(value) if finite else None, None)  # type: ignore[arg-type]
        part = parts.setdefault(key, {"r": 0, "sum": 0.0, "sq": 0.0, "lo": math.inf,
                                      "hi": -math.inf})
        part["r"] += 1
        if finite:
            assert value is not None
            part["sum"] += value
            part["sq"] += value * value
            part["lo"], part["hi"] = min(part["lo"], value), max(part["hi"], value)
    return parts


@DETERMINISTIC
@given(st.lists(raw_numbers, max_size=200))
def test_a_windows_bucket_rows_merge_to_its_statistics(values: list[float | None]) -> None:
    merged = statistics_of_parts(_parts_as_the_job_counts(values), categorical=False)
    _assert_same_statistics(merged, WindowStatistics.of_numbers(values))


def test_bucket_rows_lose_the_digits_of_the_variance_that_sums_of_squares_do() -> None:
    # A relative spread of 1e-4 leaves the variance about 8 of a double's 16 digits.
    values = list(np.random.default_rng(12).normal(1e4, 1, 5_000))
    merged = statistics_of_parts(_parts_as_the_job_counts(values), categorical=False)
    assert merged.numeric.variance == pytest.approx(np.var(values), rel=1e-6)


def test_category_rows_keep_the_most_frequent_categories() -> None:
    values: list[str | None] = [f"c{i:03}" for i in range(150) for _ in range(i + 1)] + [None]
    parts = {part_key(None, value): {"r": count}
             for value, count in Counter(values).items()}
    assert statistics_of_parts(parts, categorical=True) == WindowStatistics.of_strings(values)
