"""Drift detection's statistics: what a streaming job summarises of the feature values it
emits, how summaries merge, and how they are judged against a training set's baseline.

**Windows.**  Per feature and per monitoring window (5 minutes by default) the job emits one
:class:`WindowStatistics` row.  A monitor merges the rows of a rolling horizon (an hour by
default) with :meth:`WindowStatistics.merge_all` and compares the result with the feature's
:class:`Baseline`.  Merging is exact for every count and order-independent, so an hour
merged from twelve windows is the hour summarised at once (means and variances agree to
rounding).

**Fixed buckets.**  A row must not depend on the baseline, so that a baseline can be
recomputed without touching the job: numeric values are counted in buckets fixed once for
all features (:func:`bucket_index`), ten per decade of magnitude on each side of zero, which
Flink SQL computes with ``ABS``, ``SIGN``, ``LOG10``, ``FLOOR`` and ``CASE``.  A value whose
magnitude is below 1e-9 counts as zero; every magnitude from 1e19 on (beyond every int64)
shares the outermost bucket.  A null, NaN or infinity has no magnitude to compare and is
counted as a null.

**Moments.**  A row carries count, mean and the sum of squared deviations from the mean
rather than sums of powers, which lose every digit of a variance that is small next to the
squared mean; rows merge by Chan, Golub and LeVeque's pairwise update (1979).

**Categories.**  A string feature's row counts its 100 most frequent values (ties broken by
the value, so the choice does not depend on arrival order) and folds the rest into one
``other`` count: one row stays small on the wire whatever the cardinality.  Merging adds
counts and keeps every category, which keeps it exact and associative; capping a merge again
would not be (which categories survive would depend on the order of merging).  A category
cut from a window's row counts as ``other`` in that window, so a live category that is
frequent in the baseline but rare in a window with more than 100 categories is undercounted
by at most that window's ``other`` share.

**Baseline.**  A training set's statistics, the same summary as a window's, from which the
bins follow (so a merge of past windows can serve as a baseline too).  A string feature's
bins are the baseline's kept categories plus one for everything else, where a category never
seen in training lands.

**Bins of whole buckets.**  Live data has only bucket counts, so a numeric baseline's bins are
runs of whole buckets: each decile ends a bin at the end of the bucket holding it, and two
more bins hold the buckets below the lowest training value's and above the highest's (empty
in the baseline: live values beyond the training range weigh there).  That makes up to
twelve bins, fewer where deciles share a bucket.  Live and baseline values are binned by the
same buckets and no count is split, so binning adds no error to the comparison.  Splitting a
bucket that straddles a decile in proportion to its width, the alternative, smears a point
mass over both sides of an edge placed exactly on it, as every decile of a discrete feature
is: a feature constant at 2 that starts emitting 3 would look almost unchanged.  The price is
that a bin ends up to 26 % of its decile's magnitude (10^(1/10) - 1) beyond it, so the
baseline's shares are near a tenth rather than at it (5 % to 14 % for N(0, 1)).

**Metrics.**  Over the bins: the population stability index :func:`psi` and the
Jensen-Shannon distance :func:`js_distance`.  For numeric features :func:`mean_shift`, the
change of mean in baseline standard deviations.  For all :func:`null_rate_change`, the
absolute change of the share of null rows.

**Chance.**  A metric computed on a sample moves without any drift, the more the smaller the
sample.  Each metric breaches at the larger of its threshold and the value chance alone
exceeds with probability ``alpha`` at the sample sizes compared: :func:`psi_critical_value`
(PSI is approximately chi-square distributed, Yurdakul 2018), the JS distance that critical
PSI corresponds to, and a two-sample z-test's bound for the mean and the null rate.  Below
``min_samples`` values a metric is not judged at all.

**Alerts.**  :class:`AlertTracker` opens an alert for a feature and metric when two of its
last three judged evaluations breach the alert threshold, and resolves it after three
consecutive clean ones (below the warning threshold, so a PSI hovering between warning and
alert keeps an alert open).  The defaults (:class:`DriftThresholds`) detect a shift of the
mean by a quarter of a standard deviation in 5,000-value windows within two windows and raise
no alert over a thousand windows without drift (tests/unit/test_drift_detection.py).
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

# Re-exported: the thresholds belong to a view's definition, and the metrics' callers name
# them with the metrics.
from core.domain.definitions import DriftThresholds as DriftThresholds  # noqa: PLC0414
from core.domain.definitions import ValueType

FloatArray = npt.NDArray[np.float64]
Key = TypeVar("Key")

ZERO_BELOW: Final = 1e-9
"""Magnitudes below this count as zero (bucket 0); the log-scale buckets resolve 1e-9 to
1e19."""

BUCKETS_PER_DECADE: Final = 10
"""Ten buckets per factor of ten: fine enough that a baseline's bins, made of whole buckets,
end within 26 % of its deciles, coarse enough that a window over values spanning three
decades emits about sixty buckets."""

_LOWEST_DECADE: Final = -9
_TOP_DECADE: Final = 19

TOP_BUCKET: Final = 1 + (_TOP_DECADE - _LOWEST_DECADE) * BUCKETS_PER_DECADE
"""281: the outermost bucket, holding every magnitude from 1e19 on (int64 stays below)."""

CATEGORY_CAP: Final = 100
"""Categories one row keeps by name; the rest is counted as ``other``."""

QUANTILE_BINS: Final = 10
"""A numeric baseline's bins end at its deciles (and two more hold what lies beyond the
training range)."""

EMPTY_BIN_FRACTION: Final = 1e-4
"""The fraction PSI uses for an empty bin, whose logarithm is otherwise infinite: below one
value in a 5,000-value window (2e-4), so an empty bin reads as "less than one value", and a
category appearing from nothing with 5 % of the mass scores 0.05·ln(0.05/1e-4) ≈ 0.31, an
alert by itself."""


def bucket_index(x: float) -> int:
    """The fixed bucket of a finite ``x``, by this formula (which the streaming job's SQL
    reproduces exactly)::

        0                                                        if |x| < 1e-9
        sign(x) * min(281, 1 + floor((log10(|x|) + 9) * 10))     otherwise

    in Flink SQL, after nulls, NaN and infinities are set aside as nulls
    (``NOT ABS(x) <= 1.7976931348623157E308`` holds for exactly those)::

        CASE WHEN ABS(x) < 1E-9 THEN 0
             WHEN ABS(x) >= 1E19 THEN CAST(SIGN(x) AS INT) * 281
             ELSE CAST(SIGN(x) AS INT)
                  * (1 + CAST(FLOOR((LOG10(ABS(x)) + 9) * 10) AS INT)) END

    (both forms agree: below 1e19 the formula stays at or under 281).  The addition comes
    before the multiplication so that the rounding of ``+ 9`` absorbs a last-bit difference
    between two log10 implementations near a power of ten.  Python's log10 (the C library's)
    and Java's ``Math.log10`` both return exactly ``p`` for every power of ten ``1e{p}`` in
    the range, and round the few values just below it up to ``p`` alike, so powers of ten
    and their neighbours bucket alike in both.  The two differ in the last bit for some other
    inputs (about one in ten), which can only move a value lying within an ulp or so of an
    interior boundary ``10^(j/10)`` into the neighbouring bucket: against OpenJDK 17, three
    million random values all bucketed alike, and 4 of 2,900 values constructed on interior
    boundaries did not.
    """
    if not math.isfinite(x):
        raise ValueError(f"{x} has no bucket: a value that is not finite counts as a null")
    return int(bucket_indices(np.array([x], dtype=np.float64))[0])


def bucket_indices(values: FloatArray) -> npt.NDArray[np.int64]:
    """:func:`bucket_index` of each of the finite ``values``."""
    magnitudes = np.abs(values)
    beyond_zero = magnitudes >= ZERO_BELOW
    # The C library's log10 through math, not numpy's: numpy may dispatch to its own SIMD
    # log10, which need not return exact powers of ten as Java's does.
    logs = np.fromiter(map(math.log10, magnitudes[beyond_zero].tolist()), np.float64,
                       count=int(np.count_nonzero(beyond_zero)))
    steps = np.floor((logs - _LOWEST_DECADE) * BUCKETS_PER_DECADE)
    unsigned = np.zeros(values.shape)
    unsigned[beyond_zero] = np.minimum(1 + steps, TOP_BUCKET)
    indices: npt.NDArray[np.int64] = (np.sign(values) * unsigned).astype(np.int64)
    return indices


def bucket_bounds(index: int) -> tuple[float, float]:
    """The values of bucket ``index``: ``[low, high)`` for a positive index, ``(low, high]``
    for a negative one, ``(-1e-9, 1e-9)`` for zero; the outermost buckets end at the largest
    float.  The bounds are the nominal powers ``10^(j/10)``: a value within a few ulps of one
    may land on either side, as log10 rounds."""
    if index == 0:
        return -ZERO_BELOW, ZERO_BELOW
    magnitude = abs(index)
    if magnitude > TOP_BUCKET:
        raise ValueError(f"no bucket {index}: buckets run from {-TOP_BUCKET} to {TOP_BUCKET}")
    low = _bucket_power(magnitude - 1)
    high = sys.float_info.max if magnitude == TOP_BUCKET else _bucket_power(magnitude)
    return (low, high) if index > 0 else (-high, -low)


def _bucket_power(step: int) -> float:
    # One rounding (of the exponent's division), so that whole decades are exact powers of ten.
    return float(10.0 ** ((step + _LOWEST_DECADE * BUCKETS_PER_DECADE) / BUCKETS_PER_DECADE))


class Kind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


def monitored_kind(value_type: ValueType) -> Kind | None:
    """How a feature of ``value_type`` is summarised: numbers by buckets, strings and booleans
    (:func:`category_text`) by categories; a timestamp not at all — its values only move
    forward, so no training set's can describe live ones."""
    if value_type is ValueType.TIMESTAMP:
        return None
    return Kind.NUMERIC if value_type.is_numeric else Kind.CATEGORICAL


def category_text(value: str | bool) -> str:
    """A categorical value as the streaming job counts it: booleans as ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


@dataclass(frozen=True)
class NumericSummary:
    """The finite values of a numeric feature."""

    count: int
    mean: float
    squared_deviations: float
    """The sum of squared deviations from the mean (the variance times the count)."""
    minimum: float | None
    maximum: float | None
    buckets: Mapping[int, int]
    """Values per :func:`bucket_index`; only buckets holding values appear."""

    @classmethod
    def of(cls, finite: FloatArray) -> NumericSummary:
        if finite.size == 0:
            return cls(count=0, mean=0.0, squared_deviations=0.0, minimum=None, maximum=None,
                       buckets={})
        mean = float(np.mean(finite))
        indices, counts = np.unique(bucket_indices(finite), return_counts=True)
        return cls(count=int(finite.size), mean=mean,
                   squared_deviations=float(np.sum(np.square(finite - mean))),
                   minimum=float(np.min(finite)), maximum=float(np.max(finite)),
                   buckets=dict(zip(indices.tolist(), counts.tolist(), strict=True)))

    @property
    def variance(self) -> float:
        """The population variance; 0 without values."""
        return self.squared_deviations / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def merge(self, other: NumericSummary) -> NumericSummary:
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        # Each expression is symmetric in the two operands, so the merge commutes bit for bit.
        return NumericSummary(
            count=count, mean=(self.count * self.mean + other.count * other.mean) / count,
            squared_deviations=self.squared_deviations + other.squared_deviations
            + delta * delta * (self.count * other.count) / count,
            minimum=min(_present(self.minimum), _present(other.minimum)),
            maximum=max(_present(self.maximum), _present(other.maximum)),
            buckets=_added(self.buckets, other.buckets))


@dataclass(frozen=True)
class CategoricalSummary:
    """The values of a string feature."""

    counts: Mapping[str, int]
    """Values per category: every category of a merge, the :data:`CATEGORY_CAP` most frequent
    of one window's row."""
    other: int
    """Values of the categories a row left out."""

    @classmethod
    def of(cls, values: Iterable[str]) -> CategoricalSummary:
        return cls.of_counts(Counter(values))

    @classmethod
    def of_counts(cls, counts: Mapping[str, int]) -> CategoricalSummary:
        """One row's summary of values counted per category."""
        by_frequency = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = by_frequency[:CATEGORY_CAP]
        return cls(counts=dict(kept),
                   other=sum(count for _, count in by_frequency[CATEGORY_CAP:]))

    @property
    def count(self) -> int:
        return sum(self.counts.values()) + self.other

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        return CategoricalSummary(counts=_added(self.counts, other.counts),
                                  other=self.other + other.other)


@dataclass(frozen=True)
class WindowStatistics:
    """One feature's values over a window (or a merge of windows, or a training set)."""

    nulls: int
    """Rows without a usable value: null, NaN or an infinity."""
    summary: NumericSummary | CategoricalSummary

    @classmethod
    def of_numbers(cls, values: Iterable[float | None]) -> WindowStatistics:
        numbers = _number_array(values)
        finite = numbers[np.isfinite(numbers)]
        return cls(nulls=numbers.size - finite.size, summary=NumericSummary.of(finite))

    @classmethod
    def of_strings(cls, values: Iterable[str | None]) -> WindowStatistics:
        rows = list(values)
        present = [value for value in rows if value is not None]
        return cls(nulls=len(rows) - len(present), summary=CategoricalSummary.of(present))

    @property
    def count(self) -> int:
        """Values other than nulls."""
        return self.summary.count

    @property
    def rows(self) -> int:
        return self.count + self.nulls

    @property
    def null_rate(self) -> float:
        """The share of rows that are nulls; 0 without rows."""
        return self.nulls / self.rows if self.rows else 0.0

    @property
    def numeric(self) -> NumericSummary:
        """The summary of a numeric feature; TypeError for a string feature's."""
        if not isinstance(self.summary, NumericSummary):
            raise TypeError("a string feature's statistics, where a numeric one's are needed")
        return self.summary

    def merge(self, other: WindowStatistics) -> WindowStatistics:
        """Both windows as one: associative and commutative."""
        mine, theirs = self.summary, other.summary
        nulls = self.nulls + other.nulls
        if isinstance(mine, NumericSummary) and isinstance(theirs, NumericSummary):
            return WindowStatistics(nulls=nulls, summary=mine.merge(theirs))
        if isinstance(mine, CategoricalSummary) and isinstance(theirs, CategoricalSummary):
            return WindowStatistics(nulls=nulls, summary=mine.merge(theirs))
        raise TypeError("a numeric feature's statistics cannot merge with a string feature's")

    @classmethod
    def merge_all(cls, statistics: Iterable[WindowStatistics]) -> WindowStatistics:
        """The windows of ``statistics`` as one; ValueError without any."""
        windows = iter(statistics)
        merged = next(windows, None)
        if merged is None:
            raise ValueError("no statistics to merge")
        for window in windows:
            merged = merged.merge(window)
        return merged

    def to_json(self) -> dict[str, Any]:
        """The row as the streaming job emits it and the registry stores it."""
        summary = self.summary
        if isinstance(summary, CategoricalSummary):
            return {"kind": Kind.CATEGORICAL.value, "nulls": self.nulls,
                    "categories": dict(summary.counts), "other": summary.other}
        return {"kind": Kind.NUMERIC.value, "nulls": self.nulls, "count": summary.count,
                "mean": summary.mean, "squared_deviations": summary.squared_deviations,
                "min": summary.minimum, "max": summary.maximum,
                "buckets": {str(index): summary.buckets[index]
                            for index in sorted(summary.buckets)}}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> WindowStatistics:
        kind = body["kind"]
        if kind == Kind.CATEGORICAL:
            return cls(nulls=int(body["nulls"]), summary=CategoricalSummary(
                counts={str(name): int(count) for name, count in body["categories"].items()},
                other=int(body["other"])))
        if kind == Kind.NUMERIC:
            return cls(nulls=int(body["nulls"]), summary=NumericSummary(
                count=int(body["count"]), mean=float(body["mean"]),
                squared_deviations=float(body["squared_deviations"]),
                minimum=_optional_float(body["min"]), maximum=_optional_float(body["max"]),
                buckets={int(index): int(count) for index, count in body["buckets"].items()}))
        raise ValueError(f"statistics of kind {kind!r}: the kinds are numeric and categorical")


NULL_PART: Final = "null"


def part_key(bucket: int | None, category: str | None) -> str:
    """The name of one row of the streaming job's statistics within its window and feature:
    ``b:{bucket}`` for the finite values of a numeric bucket, ``c:{category}`` for a string
    category, ``null`` for the nulls."""
    if category is not None:
        return f"c:{category}"
    return NULL_PART if bucket is None else f"b:{bucket}"


def statistics_of_parts(parts: Mapping[str, Mapping[str, Any]], *,
                        categorical: bool) -> WindowStatistics:
    """One window of one feature from the job's rows, by :func:`part_key`: each holds ``r``,
    its row count, and a bucket's also ``sum``, ``sq`` (the sum of squares), ``lo`` and
    ``hi``.  A bucket's squared deviations are ``sq - sum²/r`` (SQL has no one-pass update of
    them), which loses about ``log10(mean²/variance)`` of a double's 16 digits: the variance
    of values with a relative spread of 1e-4 keeps 8, enough for the noise estimate it feeds
    (:func:`evaluate`), and the mean, which the metrics compare, keeps them all.  Buckets then
    merge exactly as windows do."""
    nulls = 0
    counts: dict[str, int] = {}
    buckets: list[NumericSummary] = []
    for key, part in sorted(parts.items()):
        rows = int(part["r"])
        if key == NULL_PART:
            nulls += rows
        elif key.startswith("c:"):
            counts[key[2:]] = rows
        else:
            total, squares = float(part["sum"]), float(part["sq"])
            mean = total / rows
            buckets.append(NumericSummary(
                count=rows, mean=mean, squared_deviations=max(squares - total * mean, 0.0),
                minimum=float(part["lo"]), maximum=float(part["hi"]),
                buckets={int(key[2:]): rows}))
    if categorical:
        return WindowStatistics(nulls=nulls, summary=CategoricalSummary.of_counts(counts))
    summary = NumericSummary.of(np.array([], dtype=np.float64))
    for bucket in buckets:
        summary = summary.merge(bucket)
    return WindowStatistics(nulls=nulls, summary=summary)


@dataclass(frozen=True)
class Baseline:
    """A feature's values in a training set, and the bins live values are compared over.
    Everything follows from the statistics, so a merge of past windows serves as well."""

    statistics: WindowStatistics

    def __post_init__(self) -> None:
        if not self.statistics.count:
            raise ValueError("a baseline needs at least one value that is not a null "
                             "(nor NaN or infinite)")

    @classmethod
    def of_numbers(cls, values: Iterable[float | None]) -> Baseline:
        return cls(WindowStatistics.of_numbers(values))

    @classmethod
    def of_strings(cls, values: Iterable[str | None]) -> Baseline:
        return cls(WindowStatistics.of_strings(values))

    @cached_property
    def bin_cuts(self) -> tuple[int, ...]:
        """A numeric feature's bins as bucket indices: bin ``i`` holds the buckets after
        ``bin_cuts[i-1]`` up to ``bin_cuts[i]``, the first and last open-ended.  The cuts are
        the bucket just below the lowest value's, the buckets holding the deciles (of the
        ``ceil(k·n/10)``-th smallest value), and the highest value's bucket."""
        buckets = self.statistics.numeric.buckets
        indices = sorted(buckets)
        cumulative = np.cumsum([buckets[index] for index in indices])
        count = self.statistics.count
        ranks = [-(-tenth * count // QUANTILE_BINS) for tenth in range(1, QUANTILE_BINS)]
        decile_positions = np.searchsorted(cumulative, ranks).tolist()
        return tuple(sorted({indices[0] - 1, *(indices[p] for p in decile_positions),
                             indices[-1]}))

    @property
    def edges(self) -> tuple[float, ...]:
        """The values at which the bins of :attr:`bin_cuts` end."""
        return tuple(bucket_bounds(cut)[1] for cut in self.bin_cuts)

    def bin_counts(self, statistics: WindowStatistics) -> FloatArray:
        """The values of ``statistics`` per bin of this baseline."""
        mine = self.statistics.summary
        if isinstance(mine, CategoricalSummary):
            theirs = statistics.summary
            if not isinstance(theirs, CategoricalSummary):
                raise TypeError("a numeric feature's statistics, where a string one's are "
                                "needed")
            kept = [theirs.counts.get(category, 0) for category in mine.counts]
            return np.array([*kept, theirs.count - sum(kept)], dtype=np.float64)
        counts = np.zeros(len(self.bin_cuts) + 1)
        for index, count in statistics.numeric.buckets.items():
            counts[bisect_left(self.bin_cuts, index)] += count
        return counts

    def fractions(self, statistics: WindowStatistics) -> FloatArray:
        """:meth:`bin_counts` as shares of the values of ``statistics``."""
        return self.bin_counts(statistics) / statistics.count

    def to_json(self) -> dict[str, Any]:
        return {"statistics": self.statistics.to_json()}

    def describe(self) -> dict[str, Any]:
        """For people: count, null rate, and a numeric feature's mean, std, min, max and bins
        (each with the value it ends at, the last none, and its count), or a string
        feature's categories and the count of everything else."""
        statistics = self.statistics
        summary = statistics.summary
        described: dict[str, Any] = {"count": statistics.count,
                                     "null_rate": statistics.null_rate}
        if isinstance(summary, CategoricalSummary):
            by_frequency = sorted(summary.counts.items(), key=lambda item: (-item[1], item[0]))
            return {**described, "kind": Kind.CATEGORICAL.value,
                    "categories": dict(by_frequency), "other": summary.other}
        counts = self.bin_counts(statistics).astype(int).tolist()
        return {**described, "kind": Kind.NUMERIC.value, "mean": summary.mean,
                "std": summary.std, "min": summary.minimum, "max": summary.maximum,
                "bins": [{"upper": upper, "count": count} for upper, count
                         in zip([*self.edges, None], counts, strict=True)]}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Baseline:
        return cls(WindowStatistics.from_json(body["statistics"]))


def psi(expected_fractions: npt.ArrayLike, actual_fractions: npt.ArrayLike) -> float:
    """The population stability index ``Σ (a - e)·ln(a / e)`` over bins, each fraction taken
    as at least :data:`EMPTY_BIN_FRACTION`."""
    expected, actual = _same_shape(expected_fractions, actual_fractions)
    expected = np.maximum(expected, EMPTY_BIN_FRACTION)
    actual = np.maximum(actual, EMPTY_BIN_FRACTION)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def js_distance(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """The Jensen-Shannon distance of two distributions over the same bins: the square root
    of their JS divergence in bits, in [0, 1].  Empty bins need no correction: ``0·log 0``
    is 0."""
    first, second = _same_shape(p, q)
    middle = (first + second) / 2

    def divergence_from_middle(distribution: FloatArray) -> float:
        held = distribution > 0
        return float(np.sum(distribution[held] * np.log2(distribution[held] / middle[held])))

    divergence = (divergence_from_middle(first) + divergence_from_middle(second)) / 2
    return math.sqrt(min(max(divergence, 0.0), 1.0))  # rounding can step just outside [0, 1]


def mean_shift(baseline: Baseline, live: WindowStatistics) -> float:
    """How far the live mean moved, in baseline standard deviations: ``|live mean - baseline
    mean| / baseline std``; infinite when a constant baseline's mean moved at all."""
    base, now = baseline.statistics.numeric, live.numeric
    difference = abs(now.mean - base.mean)
    return difference / base.std if base.std else (math.inf if difference else 0.0)


def null_rate_change(baseline: Baseline, live: WindowStatistics) -> float:
    """``|null rate live - null rate baseline|``, in shares of rows."""
    return abs(live.null_rate - baseline.statistics.null_rate)


def chi_square_survival(x: float, degrees: int) -> float:
    """``P(X > x)`` for ``X`` chi-square distributed with a whole number of degrees of
    freedom, by the closed form of the regularized upper incomplete gamma function at whole
    and half-integer shapes ``k = degrees/2`` with ``h = x/2``::

        Q(k, h) = [erfc(√h) if k is a half-integer] + Σ e^(-h)·h^a / Γ(a + 1)

    over ``a = k-1, k-2, …`` down to 0 or ½ (each term computed in logarithms, so none
    overflows).  scipy would give the same; the platform does not depend on it."""
    if degrees < 1:
        raise ValueError(f"{degrees} degrees of freedom: at least 1 is needed")
    if x <= 0:
        return 1.0
    half = x / 2
    tail = math.erfc(math.sqrt(half)) if degrees % 2 else 0.0
    powers = (degrees / 2 - i for i in range(1, degrees // 2 + 1))
    return tail + math.fsum(math.exp(a * math.log(half) - half - math.lgamma(a + 1))
                            for a in powers)


def chi_square_quantile(probability: float, degrees: int) -> float:
    """The ``x`` with ``P(X ≤ x) = probability`` for ``X`` chi-square with ``degrees``
    degrees of freedom, by bisection of :func:`chi_square_survival` to 1e-12 relative."""
    if not 0 < probability < 1:
        raise ValueError(f"a probability strictly between 0 and 1, not {probability}")
    tail = 1 - probability
    low, high = 0.0, float(degrees)
    while chi_square_survival(high, degrees) > tail:
        low, high = high, 2 * high
    while high - low > 1e-12 * high:
        middle = (low + high) / 2
        if chi_square_survival(middle, degrees) > tail:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def psi_critical_value(samples: int, baseline_samples: int, bins: int, alpha: float) -> float:
    """The PSI that chance alone exceeds with probability ``alpha`` when ``samples`` live and
    ``baseline_samples`` baseline values come from one distribution over ``bins`` bins::

        (1/samples + 1/baseline_samples) · chi2_quantile(1 - alpha, bins - 1)

    Yurdakul (2018, "Statistical properties of population stability index"): for small
    differences ``PSI ≈ Σ (a - e)² / e``, and when both fractions are sample proportions of
    one distribution that sum divided by ``1/samples + 1/baseline_samples`` is chi-square
    distributed with ``bins - 1`` degrees of freedom."""
    return ((1 / samples + 1 / baseline_samples)
            * chi_square_quantile(1 - alpha, bins - 1))


_JS_BITS_PER_PSI: Final = 1 / (8 * math.log(2))
"""Near no drift the JS divergence in nats is about an eighth of ``Σ (a - e)² / e``, which
PSI approximates; in bits divide further by ln 2."""


class DriftMetric(StrEnum):
    PSI = "psi"
    JS_DISTANCE = "js_distance"
    MEAN_SHIFT = "mean_shift"
    NULL_RATE_CHANGE = "null_rate_change"


class Severity(StrEnum):
    """Of one reading: the highest threshold it reaches.  Of a feature's metric in an
    :class:`AlertTracker`: ALERT while an alert is open, else WARNING when the latest
    reading reached a threshold."""

    OK = "ok"
    WARNING = "warning"
    ALERT = "alert"


@dataclass(frozen=True)
class MetricReading:
    value: float
    severity: Severity
    alert_at: float
    """The value at which this reading alerts: the threshold, or the critical value when
    that is higher."""


@dataclass(frozen=True)
class FeatureDrift:
    """One evaluation of a feature.  A metric whose sample is below ``min_samples`` has no
    reading: too small to judge, it neither opens nor resolves an alert."""

    feature: str
    readings: Mapping[DriftMetric, MetricReading]

    @property
    def breaches(self) -> frozenset[DriftMetric]:
        """The metrics reading at alert level."""
        return frozenset(metric for metric, reading in self.readings.items()
                         if reading.severity is Severity.ALERT)


def evaluate(feature: str, baseline: Baseline, live: WindowStatistics,
             thresholds: DriftThresholds) -> FeatureDrift:
    """``live`` (a window, or a horizon's merged windows) judged against ``baseline``."""
    readings: dict[DriftMetric, MetricReading] = {}
    base = baseline.statistics
    # The two-sided normal quantile at alpha, as the square root of chi-square's with one degree.
    z = math.sqrt(chi_square_quantile(1 - thresholds.alpha, 1))
    if live.rows >= thresholds.min_samples:
        null_noise = math.sqrt(base.null_rate * (1 - base.null_rate)
                               * (1 / live.rows + 1 / base.rows))
        readings[DriftMetric.NULL_RATE_CHANGE] = _reading(
            null_rate_change(baseline, live), thresholds.null_rate_alert, z * null_noise)
    if live.count < thresholds.min_samples:
        return FeatureDrift(feature, readings)
    expected, actual = baseline.fractions(base), baseline.fractions(live)
    critical_psi = psi_critical_value(live.count, base.count, expected.size, thresholds.alpha)
    readings[DriftMetric.PSI] = _reading(psi(expected, actual), thresholds.psi_alert,
                                         critical_psi, warn_at=thresholds.psi_warn)
    readings[DriftMetric.JS_DISTANCE] = _reading(
        js_distance(expected, actual), thresholds.js_alert,
        math.sqrt(critical_psi * _JS_BITS_PER_PSI))
    if isinstance(base.summary, NumericSummary) and base.summary.std:
        # Welch's standard error of the difference of means, in baseline deviations.
        shift_noise = math.sqrt(live.numeric.variance / base.summary.variance / live.count
                                + 1 / base.count)
        readings[DriftMetric.MEAN_SHIFT] = _reading(
            mean_shift(baseline, live), thresholds.mean_shift_alert, z * shift_noise)
    return FeatureDrift(feature, readings)


def _reading(value: float, threshold: float, critical: float,
             warn_at: float | None = None) -> MetricReading:
    alert_at = max(threshold, critical)
    if value >= alert_at:
        severity = Severity.ALERT
    elif warn_at is not None and value >= max(warn_at, critical):
        severity = Severity.WARNING
    else:
        severity = Severity.OK
    return MetricReading(value=value, severity=severity, alert_at=alert_at)


class AlertChange(StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class AlertTransition:
    feature: str
    metric: DriftMetric
    change: AlertChange
    value: float
    """The reading that opened or resolved the alert."""


OPENING_BREACHES: Final = 2
"""An alert opens when this many of the last :data:`RECENT_EVALUATIONS` breach: one noisy
window does not page anyone, a real shift pages at its second window."""
RECENT_EVALUATIONS: Final = 3
RESOLVING_CLEAN: Final = 3
"""An alert resolves after this many consecutive readings below the warning level."""


class AlertTracker:
    """The alert state of every feature and metric, stepped by evaluations; at most one open
    alert per feature and metric."""

    def __init__(self, open_alerts: Iterable[tuple[str, DriftMetric]] = ()) -> None:
        """``open_alerts``: (feature, metric) of the alerts open already, as the registry's
        log has them when a monitor starts; each resolves as any other, after three clean
        readings."""
        self._recent: dict[tuple[str, DriftMetric], deque[Severity]] = {}
        self._open: set[tuple[str, DriftMetric]] = set(open_alerts)

    def step(self, drift: FeatureDrift) -> list[AlertTransition]:
        """Record ``drift``; the alerts it opened or resolved."""
        transitions = []
        for metric, reading in drift.readings.items():
            key = (drift.feature, metric)
            recent = self._recent.setdefault(
                key, deque(maxlen=max(RECENT_EVALUATIONS, RESOLVING_CLEAN)))
            recent.append(reading.severity)
            if key in self._open:
                latest = list(recent)[-RESOLVING_CLEAN:]
                if len(latest) == RESOLVING_CLEAN and all(s is Severity.OK for s in latest):
                    self._open.discard(key)
                    transitions.append(AlertTransition(drift.feature, metric,
                                                       AlertChange.RESOLVED, reading.value))
            elif list(recent)[-RECENT_EVALUATIONS:].count(Severity.ALERT) >= OPENING_BREACHES:
                self._open.add(key)
                transitions.append(AlertTransition(drift.feature, metric, AlertChange.OPENED,
                                                   reading.value))
        return transitions

    def state(self, feature: str, metric: DriftMetric) -> Severity:
        """ALERT while an alert is open, else WARNING when the latest reading reached a
        threshold, else OK (also before any reading)."""
        if (feature, metric) in self._open:
            return Severity.ALERT
        recent = self._recent.get((feature, metric))
        return Severity.WARNING if recent and recent[-1] is not Severity.OK else Severity.OK


def _number_array(values: Iterable[float | None]) -> FloatArray:
    # None becomes NaN, which is counted as a null like None.
    given = values if isinstance(values, np.ndarray) else list(values)
    return np.asarray(given, dtype=np.float64)


def _present(bound: float | None) -> float:
    if bound is None:
        raise AssertionError("a summary holding values has a minimum and a maximum")
    return bound


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _added(first: Mapping[Key, int], second: Mapping[Key, int]) -> dict[Key, int]:
    return {key: first.get(key, 0) + second.get(key, 0) for key in first.keys() | second.keys()}


def _same_shape(first: npt.ArrayLike, second: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    left = np.asarray(first, dtype=np.float64)
    right = np.asarray(second, dtype=np.float64)
    if left.shape != right.shape:
        raise ValueError(f"distributions over {left.shape} and {right.shape} bins")
    return left, right
