"""The backfill and drift panels computed from the registry's events and the drift monitor's
stored windows and readings, without any I/O (:mod:`registry.ui.registry_panels` reads them).

Backfills are the ``backfill:{view}`` stream folded by :mod:`core.domain.backfills`.  Drift is
the ``drift:{view}`` stream folded by :class:`core.domain.drift_log.DriftLog` (baselines, open
alerts), the monitor's latest readings, and its stored windows merged by
:mod:`core.domain.drift` exactly as the monitor merges them: every bucketing, binning and merge
is the domain's, so that a histogram shows what the metrics beside it judged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from core.domain.backfills import (
    Backfill as DomainBackfill,
)
from core.domain.backfills import (
    BackfillState,
    Interval,
    backfill_history,
    coverage_by_version,
    merged,
)
from core.domain.deployments import at_epoch_ms
from core.domain.drift import (
    Baseline,
    CategoricalSummary,
    DriftMetric,
    Severity,
    WindowStatistics,
    statistics_of_parts,
)
from core.domain.drift_log import DriftLog, RegisteredBaseline
from core.domain.events import (
    BackfillRequested,
    DeploymentStarted,
    DriftDetected,
    RecordedEvent,
)
from registry.store.drift import StoredReading, WindowParts
from registry.ui.model import PROVENANCE_SHOWN, ms_text
from registry.ui.panels import (
    Backfill,
    BackfillChunk,
    Coverage,
    DriftAlert,
    DriftReport,
    FeatureDrift,
    HistogramBin,
    MetricReading,
    Range,
    TableCoverage,
    VersionDrift,
)

# --------------------------------------------------------------------------- backfills


def backfill_coverage(events: Sequence[RecordedEvent]) -> Coverage:
    """A ``backfill:{view}`` stream as the panel shows it: each version's table coverage and
    every backfill with its chunks, both newest first."""
    requests = {event.payload.backfill: event.metadata for event in events
                if isinstance(event.payload, BackfillRequested)}
    tables = [TableCoverage(version, coverage.table, _ranges(merged(coverage.intervals)),
                            _ranges(sorted(coverage.failed)))
              for version, coverage in sorted(coverage_by_version(events).items(),
                                              reverse=True)]
    return Coverage(tables, [_backfill(backfill, requests.get(backfill.number, {}))
                             for backfill in backfill_history(events)])


def _backfill(backfill: DomainBackfill, metadata: Mapping[str, Any]) -> Backfill:
    completed = {(chunk.start_ms, chunk.end_ms): chunk for chunk in backfill.completed}
    failed = set(backfill.failed_chunks)
    chunks = []
    for interval in backfill.chunks:
        start, end = at_epoch_ms(interval[0]), at_epoch_ms(interval[1])
        done = completed.get(interval)
        if done is not None:
            chunks.append(BackfillChunk(start, end, "completed", done.rows, done.events_read))
        elif interval in failed:
            chunks.append(BackfillChunk(start, end, "failed"))
        else:
            chunks.append(BackfillChunk(start, end, "pending" if backfill.state
                                        is BackfillState.RUNNING else "not run"))
    return Backfill(
        number=backfill.number, version=backfill.version, table=backfill.table,
        start=at_epoch_ms(backfill.start_ms), end=at_epoch_ms(backfill.end_ms),
        state=backfill.state.value, reprocess=backfill.reprocess,
        requested_by=backfill.requested_by, requested_at=backfill.requested_at,
        provenance={key: str(metadata[key]) for key in ("message", *PROVENANCE_SHOWN)
                    if metadata.get(key)},
        chunks=chunks, rows=sum(chunk.rows for chunk in backfill.completed),
        events_read=sum(chunk.events_read for chunk in backfill.completed),
        finished_at=backfill.finished_at, error=backfill.error)


def _ranges(intervals: Iterable[Interval]) -> list[Range]:
    return [(at_epoch_ms(start), at_epoch_ms(end)) for start, end in intervals]


# --------------------------------------------------------------------------- drift

HISTOGRAM_BINS = 12
"""Bins a histogram shows at most.  A numeric baseline has at most twelve bins already (its
deciles and the two beyond the training range); a string feature's categories beyond eleven
are shown as one bin."""
OTHER_CATEGORIES = "all others"


@dataclass(frozen=True)
class LiveWindows:
    """The stored monitoring windows of a version's namespace over one horizon."""

    after_ms: int
    """Windows ending after this…"""
    until_ms: int
    """…and at most at this."""
    windows: Sequence[WindowParts]


def namespaces_by_version(events: Iterable[RecordedEvent]) -> dict[int, str]:
    """Each version's namespace, whose job's statistics the monitor judges: its newest
    ``DeploymentStarted``'s, as the monitor takes it (``monitor.evaluation.MonitoredViews``)."""
    return {event.payload.version: event.payload.namespace for event in events
            if isinstance(event.payload, DeploymentStarted)}


def drift_versions(log: DriftLog, active: int | None) -> list[int]:
    """The versions the panel shows, newest first: each with a baseline, and the active one
    (whose missing baseline is worth saying)."""
    return sorted({*log.baselines, *([] if active is None else [active])}, reverse=True)


def live_horizon(readings: Sequence[StoredReading], newest_window_end_ms: int | None,
                 horizon_ms: int) -> tuple[int, int] | None:
    """(after, until) of the windows a version's live values are merged from: the horizon
    of the newest evaluation when the monitor judged any (so that the bars show what the
    readings judged), else the monitor's horizon ending at the newest stored window; None
    without windows."""
    if readings:
        newest = max(readings, key=lambda reading: reading.window_end_ms)
        return newest.horizon_start_ms, newest.window_end_ms
    if newest_window_end_ms is None:
        return None
    return newest_window_end_ms - horizon_ms, newest_window_end_ms


def drift_report(log: DriftLog, *, versions: Sequence[int], active: int | None,
                 monitored: Mapping[int, Sequence[str]], namespaces: Mapping[int, str],
                 readings: Sequence[StoredReading], live: Mapping[int, LiveWindows],
                 ) -> DriftReport:
    """The panel of ``versions``: ``monitored`` names each one's monitored features,
    ``live`` holds the windows of each one that has any."""
    alerted = {(version, feature) for version, feature, _ in log.open_alerts}
    shown = []
    for version in versions:
        registered = log.baselines.get(version)
        baselines = registered.baseline.features if registered else {}
        features = [*monitored.get(version, ()),
                    *sorted(set(baselines) - set(monitored.get(version, ())))]
        namespace = namespaces.get(version)
        shown.append(VersionDrift(
            version, version == active, baseline_text(registered) if registered else None,
            namespace, [feature_drift(
                feature, baselines.get(feature), namespace, live.get(version),
                [r for r in readings if (r.version, r.feature) == (version, feature)],
                drifting=(version, feature) in alerted) for feature in features]))
    return DriftReport(shown, open_alerts(log))


def feature_drift(feature: str, baseline_json: Mapping[str, Any] | None,
                  namespace: str | None, live: LiveWindows | None,
                  readings: Sequence[StoredReading], *, drifting: bool) -> FeatureDrift:
    """One feature of a version: its state, the latest reading of each metric, and its
    baseline and live histograms."""
    if baseline_json is None:
        return FeatureDrift(feature, "no baseline", [], "", [], "", "")
    baseline = Baseline(WindowStatistics.from_json(baseline_json))
    statistics = live_statistics(feature, baseline, live.windows) if live else None
    severities = {reading.severity for reading in readings}
    if drifting or Severity.ALERT.value in severities:
        state = "drifting"
    elif Severity.WARNING.value in severities:
        state = "warning"
    else:
        state = "ok" if readings else "not judged"
    order = [metric.value for metric in DriftMetric]
    shown = sorted(readings, key=lambda r: order.index(r.metric) if r.metric in order
                   else len(order))
    return FeatureDrift(
        feature, state,
        [MetricReading(r.metric, r.value, r.alert_at, r.severity, at_epoch_ms(r.window_end_ms))
         for r in shown], str(baseline_json["kind"]),
        histogram_bins(baseline, statistics), values_text(baseline.statistics),
        _live_text(feature, namespace, live, statistics))


def live_statistics(feature: str, baseline: Baseline, windows: Sequence[WindowParts]
                    ) -> WindowStatistics | None:
    """The feature's windows merged, read as the baseline's kind (as the monitor reads them);
    None when no window holds the feature."""
    categorical = isinstance(baseline.statistics.summary, CategoricalSummary)
    seen = [statistics_of_parts(window.parts, categorical=categorical)
            for window in windows if window.feature == feature]
    return WindowStatistics.merge_all(seen) if seen else None


def histogram_bins(baseline: Baseline, live: WindowStatistics | None) -> list[HistogramBin]:
    """The baseline's own bins (those its PSI and JS distance are computed over), each with
    the baseline's and the live values' shares; a string feature's least frequent categories
    beyond :data:`HISTOGRAM_BINS` - 1 are shown as one bin."""
    expected = baseline.fractions(baseline.statistics)
    actual = baseline.fractions(live) if live is not None and live.count else None
    summary = baseline.statistics.summary
    if not isinstance(summary, CategoricalSummary):
        labels = edge_labels(baseline.edges)
        return [HistogramBin(label, float(expected[i]),
                             None if actual is None else float(actual[i]))
                for i, label in enumerate(labels)]
    # The last bin is everything the baseline did not keep by name.
    categories = list(summary.counts)
    weight = expected if actual is None else np.maximum(expected, actual)
    ranked = sorted(range(len(categories)), key=lambda i: (-weight[i], categories[i]))
    kept = ranked[:HISTOGRAM_BINS - 1]
    folded = sorted(set(range(len(expected))) - set(kept))
    bins = [HistogramBin(categories[i], float(expected[i]),
                         None if actual is None else float(actual[i])) for i in kept]
    bins.append(HistogramBin(OTHER_CATEGORIES, float(expected[folded].sum()),
                             None if actual is None else float(actual[folded].sum())))
    return bins


def edge_labels(edges: Sequence[float]) -> list[str]:
    """The numeric bins ending at ``edges`` (:attr:`Baseline.edges`) for people: ``< a``,
    ``a to b``, …, ``≥ z``."""
    texts = [number_text(edge) for edge in edges]
    return [f"< {texts[0]}", *(f"{low} to {high}" for low, high in itertools.pairwise(texts)),
            f"≥ {texts[-1]}"]


def number_text(value: float) -> str:
    """Three significant digits, without an exponent from 0.001 to a million:
    ``1,260``, ``0.0126``, ``1e+07``."""
    return f"{float(f'{value:.3g}'):,g}"


def values_text(statistics: WindowStatistics) -> str:
    return f"{statistics.count:,} values, {statistics.null_rate:.1%} null"


def _live_text(feature: str, namespace: str | None, live: LiveWindows | None,
               statistics: WindowStatistics | None) -> str:
    if namespace is None:
        return "never deployed: no job emits this version's statistics"
    if live is None:
        return f"no monitoring windows of namespace {namespace} stored yet"
    span = f"windows ending after {ms_text(live.after_ms)} until {ms_text(live.until_ms)}"
    if statistics is None:
        return f"no values of {feature} in the {span}"
    return f"{values_text(statistics)}, {span}"


def baseline_text(registered: RegisteredBaseline) -> str:
    """Which baseline, for people: when, the event, and where its values came from."""
    origin = registered.baseline.origin
    kind = origin.get("kind")
    if kind == "dataset":
        source = f"training set {origin.get('file')} ({int(origin.get('rows', 0)):,} rows)"
    elif kind == "archive":
        source = f"the archive from {ms_text(origin.get('from_ms'))} to " \
                 f"{ms_text(origin.get('to_ms'))}"
    elif kind == "windows":
        source = f"monitoring windows of namespace {origin.get('namespace')} from " \
                 f"{ms_text(origin.get('from_ms'))}"
    else:
        source = str(kind or "an unnamed origin")
    return f"registered {registered.registered_at.strftime('%Y-%m-%d %H:%M:%S UTC')} " \
           f"(event {registered.position}) from {source}"


def open_alerts(log: DriftLog) -> list[DriftAlert]:
    """The alerts open now, newest first, each with when its ``DriftDetected`` was
    recorded."""
    opened: dict[tuple[int, str, str], datetime] = {}
    for event, payload in log.history:
        if isinstance(payload, DriftDetected):
            opened[(payload.version, payload.feature, payload.metric)] = event.recorded_at
    alerts = [DriftAlert(alert.version, alert.feature, alert.metric, opened[key], alert.value,
                         alert.alert_at, at_epoch_ms(alert.window_end_ms))
              for key, alert in log.open_alerts.items()]
    return sorted(alerts, key=lambda a: (a.opened_at, a.version, a.feature, a.metric),
                  reverse=True)
