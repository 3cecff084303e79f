"""The UI's view models: what each page shows, computed without services."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.domain.changes import DiffEntry
from core.domain.deployments import Deployment, DeploymentState
from core.domain.drift import Baseline, WindowStatistics, bucket_index, part_key
from core.domain.drift_log import DriftLog
from core.domain.events import (
    BackfillChunkCompleted,
    BackfillFailed,
    BackfillRequested,
    BaselineRegistered,
    DeploymentKind,
    DeploymentStarted,
    DriftDetected,
    DriftResolved,
    EventPayload,
    RecordedEvent,
    RollbackRequested,
    backfill_stream,
    drift_stream,
)
from registry.store.drift import StoredReading, WindowParts
from registry.ui import model, panel_model
from registry.ui.panels import Coverage, HistogramBin

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row(name: str, kind: str = "feature_view", owner: str = "", tags: dict[str, str] | None = None,
        description: str = "") -> model.DefinitionRow:
    return model.definition_row(kind, name, {"owner": owner, "tags": tags or {},
                                             "description": description},
                                latest=2, active=1, deployment=None)


def test_durations_read_as_people_say_them() -> None:
    assert [model.duration_text(ms) for ms in (None, 850, 12_400, 185_000, 7_800_000,
                                                 273_600_000, -2_000)] == [
        "—", "850 ms", "12.4 s", "3 min 5 s", "2 h 10 min", "3 d 4 h", "-2.0 s"]


def test_the_overview_filters_by_text_owner_tag_and_kind() -> None:
    rows = [row("user_clicks", owner="growth", tags={"tier": "1"}, description="Clicks per user"),
            row("merchant_sales", owner="risk", tags={"tier": "2", "pii": "no"}),
            row("user", kind="entity"),
            row("clicks", kind="source", owner="growth")]
    names = lambda search: [r.name for r in model.overview(rows, search).rows]  # noqa: E731
    assert names(model.Search()) == ["user", "clicks", "merchant_sales", "user_clicks"]
    assert names(model.Search(text="CLICKS")) == ["clicks", "user_clicks"]
    assert names(model.Search(text="per user")) == ["user_clicks"]
    assert names(model.Search(owner="growth", kind="feature_view")) == ["user_clicks"]
    assert names(model.Search(tag="tier")) == ["merchant_sales", "user_clicks"]
    assert names(model.Search(tag="tier=2")) == ["merchant_sales"]
    found = model.overview(rows, model.Search())
    assert found.owners == ["growth", "risk"]
    assert found.tags == ["pii=no", "tier=1", "tier=2"]
    assert found.counts == {"feature_view": 2, "entity": 1, "source": 1}


def test_the_overview_lists_a_bounded_number_of_rows_and_says_how_many_match() -> None:
    rows = [row(f"view_{n:04d}") for n in range(model.OVERVIEW_ROWS + 50)]
    found = model.overview(rows, model.Search(text="view_"))
    assert len(found.rows) == model.OVERVIEW_ROWS
    assert (found.matching, found.total) == (model.OVERVIEW_ROWS + 50, model.OVERVIEW_ROWS + 50)


def test_a_diff_groups_changes_by_feature_and_aligns_the_sql() -> None:
    entries = [DiffEntry("description", "changed", "a", "b"),
               DiffEntry("features.clicks_1h", "removed", {"name": "clicks_1h"}, None),
               DiffEntry("features.clicks_1d", "added", None, {"name": "clicks_1d"}),
               DiffEntry("features.amount.window", "changed", "5m", "10m"),
               DiffEntry("features.amount.description", "added", None, "spend")]
    diff = model.diff_view(1, 3, "breaking", entries,
                           old_sql=["SELECT a,\n  b\nFROM t"], new_sql=["SELECT a,\n  c\nFROM t"])
    assert [(f.feature, f.op, f.details) for f in diff.features] == [
        ("clicks_1h", "removed", []), ("clicks_1d", "added", []),
        ("amount", "changed", ['window: "5m" → "10m"', 'description: added "spend"'])]
    assert diff.other == ['description: "a" → "b"']
    assert diff.sql == [model.SqlLine(1, "SELECT a,", 1, "SELECT a,", "equal"),
                        model.SqlLine(2, "  b", 2, "  c", "replace"),
                        model.SqlLine(3, "FROM t", 3, "FROM t", "equal")]


def test_side_by_side_leaves_a_gap_where_one_version_has_no_line() -> None:
    lines = model.side_by_side(["a", "b"], ["a", "x", "y", "b"])
    assert [(line.old, line.new, line.tag) for line in lines] == [
        ("a", "a", "equal"), (None, "x", "insert"), (None, "y", "insert"), ("b", "b", "equal")]


def deployment(**changes: object) -> Deployment:
    base = Deployment(number=2, version=3, kind=DeploymentKind.BLUE_GREEN, namespace="v3",
                      job_id="green", blue_version=2, blue_namespace="v2", blue_job_id="blue",
                      started_at=T0, requested_by="alice")
    return Deployment(**{**vars(base), **changes})


def test_the_timeline_shows_each_step_with_its_time_since_the_start() -> None:
    done = deployment(state=DeploymentState.COMPLETED, ready_at=at(12), activated_at=at(12.5),
                      retired_at=at(14), savepoint="file:///sp", readiness={
                          "green_watermark": 1_767_605_400_000})
    failed = deployment(number=3, version=4, state=DeploymentState.FAILED, started_at=at(60),
                        failed_at=at(90), error="green's job failed: boom")
    rollback = RecordedEvent(9, "deployment:v", 5, RollbackRequested(view="v", to_version=2),
                             {"actor": "ops"}, at(100))
    entries = model.timeline([failed, done], [rollback])
    assert [e.title for e in entries] == ["Rollback to v2 requested", "Deployment 3: v2 → v4",
                                          "Deployment 2: v2 → v3"]
    assert entries[0].actor == "ops" and entries[0].state == "requested"
    assert [(s.label, s.after_ms) for s in entries[2].steps] == [
        ("started", 0), ("ready", 12_000), ("activated", 12_500), ("retired", 14_000)]
    assert entries[2].took_ms == 14_000 and entries[2].job_id == "green"
    assert "green watermark 2026-01-05 09:30:00 UTC" in entries[2].steps[1].detail
    assert entries[1].error == "green's job failed: boom" and entries[1].took_ms == 30_000


def test_a_deployment_in_flight_has_no_duration_yet() -> None:
    entry = model.timeline([deployment(ready_at=at(3), state=DeploymentState.READY)], [])[0]
    assert entry.in_flight and entry.took_ms is None


def test_namespaces_show_lag_and_leave_out_purged_and_failed_ones() -> None:
    deployments = [deployment(number=3, version=4, namespace="v4", state=DeploymentState.FAILED),
                   deployment(state=DeploymentState.COMPLETED),
                   deployment(number=1, version=2, namespace="v2", state=DeploymentState.COMPLETED,
                              kind=DeploymentKind.BLUE_GREEN),
                   deployment(number=0, version=1, namespace="v1")]
    assert model.live_namespaces(deployments, {"v1"}) == ["v2", "v3"]
    rows = model.namespace_rows(deployments, {"v1"}, 3,
                                {"v3": (9_000, 120, 9_500), "v2": (None, 0, None)}, now_ms=10_000)
    assert [(r.namespace, r.versions, r.active, r.lag_ms) for r in rows] == [
        ("v3", [3], True, 1_000), ("v2", [2], False, None)]


def test_live_values_give_an_age_to_present_values_only() -> None:
    answer = {"view": "v", "version": 2, "entity_key": "u1", "found": True,
              "features": {"clicks": 3, "last_page": None},
              "statuses": {"clicks": "PRESENT", "last_page": "NOT_FOUND"},
              "event_time": 9_000}
    live = model.live_values(answer, now_ms=10_000)
    assert live.version == 2
    assert [(r.feature, r.value, r.status, r.age_ms) for r in live.rows] == [
        ("clicks", "3", "PRESENT", 1_000), ("last_page", "—", "NOT_FOUND", None)]


def letter(origin: str, offset: int, code: str, at_ms: int) -> model.DeadLetter:
    body: dict[str, object] = {"reason": f"{code}!", "reason_code": code, "field": "amount",
                               "origin": origin, "topic": "payments", "payload": "<b>x</b>"}
    body |= ({"view": "spend", "namespace": "v1", "partition": 0, "offset": offset}
             if origin == "stream" else {"request_id": "r1", "index": offset,
                                         "contract_version": 3, "source": "payments"})
    return model.dead_letter(json.dumps(body).encode(), at_ms)


def test_dead_letters_of_both_origins_and_unreadable_ones_are_read() -> None:
    stream, ingest = letter("stream", 17, "below_min", 1), letter("ingest", 4, "wrong_type", 2)
    assert stream.where == "spend v1, partition 0 offset 17"
    assert ingest.where == "request r1 #4, contract v3"
    broken = model.dead_letter(b"\xff not json", 3)
    assert (broken.reason_code, broken.origin) == ("unreadable_letter", "unknown")


def test_rejections_count_each_event_once_whichever_jobs_wrote_letters() -> None:
    minute = 60_000
    letters = [letter("stream", 1, "below_min", 0), letter("stream", 1, "below_min", 10),
               letter("stream", 2, "missing_required", minute * 3 + 5),
               letter("ingest", 0, "below_min", minute * 3 + 9)]
    found = model.rejections(letters)
    assert (found.letters, found.duplicates) == (3, 1)
    assert found.by_reason == [("below_min", 2), ("missing_required", 1)]
    assert found.by_origin == {"stream": 2, "ingest": 1}
    assert found.bucket_ms == minute and found.reasons == ["below_min", "missing_required"]
    assert [(bar.x, bar.series) for bar in found.bars] == [(0.0, 0), (75.0, 0), (75.0, 1)]
    tallest = [bar for bar in found.bars if bar.x == 75.0]
    assert sum(bar.height for bar in tallest) == model.CHART_HEIGHT
    assert [item.at_ms for item in found.recent] == [minute * 3 + 9, minute * 3 + 5, 0]


def test_rejections_of_a_long_span_use_wider_bars() -> None:
    day = 86_400_000
    found = model.rejections([letter("stream", n, "late", n * day // 10) for n in range(30)])
    assert found.bucket_ms == 21_600_000


def test_histograms_pair_baseline_and_live_bars_on_a_scale_rounded_up_to_5_percent() -> None:
    chart = model.histogram_chart("clicks", [HistogramBin("a", 0.5, 0.25),
                                             HistogramBin("b", 0.5, 0.75)], "value")
    plot = chart.bottom - chart.top
    assert [(b.series, b.x, b.height) for b in chart.bars] == [
        ("baseline", 59.4, 84.0), ("live", 121.0, 42.0),
        ("baseline", 213.4, 84.0), ("live", 275.0, 126.0)]
    assert all(round(b.y + b.height, 3) == chart.bottom for b in chart.bars)
    assert chart.bars[3].height == plot and chart.bars[3].title == "b: live 75.0%"
    assert [t.text for t in chart.share_ticks] == ["0%", "37.5%", "75%"]
    assert [(label.x, label.text) for label in chart.bin_labels] == [(121.0, "a"), (275.0, "b")]


def test_a_bin_without_live_values_has_its_baseline_bar_alone() -> None:
    chart = model.histogram_chart("c", [HistogramBin("a very long category name", 0.02, None)],
                                  "category")
    assert [(b.series, b.height) for b in chart.bars] == [("baseline", 50.4)]  # 2 % of 5 %
    assert chart.bin_labels[0].text == "a very long c…"
    assert model.histogram_chart("none", [], "value").bars == []


def test_event_rows_summarise_each_event_and_filter() -> None:
    event = RecordedEvent(7, "deployment:clicks", 1, RollbackRequested(view="clicks", to_version=2),
                          {"actor": "ops", "message": "bad deploy", "commit": "abc"}, T0)
    found = model.event_row(event)
    assert (found.subject, found.summary, found.actor) == ("clicks", "rollback to v2 requested",
                                                           "ops")
    assert found.provenance == {"message": "bad deploy", "commit": "abc"}
    assert model.EventSearch(type="RollbackRequested", subject="CLICK").matches(found)
    assert not model.EventSearch(actor="alice").matches(found)


# --------------------------------------------------------------------------- backfill panel

DAY = 86_400_000
JAN_1 = datetime(2026, 1, 1, tzinfo=UTC)


def log_of(stream: str, *payloads: EventPayload, metadata: dict[str, str] | None = None
           ) -> list[RecordedEvent]:
    return [RecordedEvent(n, stream, n, payload, metadata or {"actor": "monitor"},
                          T0 + timedelta(minutes=n)) for n, payload in enumerate(payloads, 1)]


def test_the_backfill_panel_shows_each_tables_coverage_and_each_backfills_chunks() -> None:
    start = 20_454 * DAY  # 2026-01-01
    days = [(start + n * DAY, start + (n + 1) * DAY) for n in range(3)]
    first = BackfillRequested(view="clicks", version=1, backfill=1, start_ms=days[0][0],
                              end_ms=days[2][1], chunk_ms=DAY, reprocess="missing",
                              chunks=days, table="features.clicks__v1")
    second = BackfillRequested(view="clicks", version=2, backfill=2, start_ms=days[0][0],
                               end_ms=days[1][1], chunk_ms=DAY, reprocess="all",
                               chunks=days[:2], table="features.clicks__v2")

    def done(version: int, number: int, chunk: tuple[int, int], rows: int
             ) -> BackfillChunkCompleted:
        return BackfillChunkCompleted(view="clicks", version=version, backfill=number,
                                      start_ms=chunk[0], end_ms=chunk[1], snapshot_id=rows,
                                      rows=rows, events_read=rows * 3)

    events = log_of(backfill_stream("clicks"), first, done(1, 1, days[0], 10),
                    BackfillFailed(view="clicks", version=1, backfill=1, reason="OOM",
                                   failed_chunks=[days[1]]),
                    second, done(2, 2, days[1], 7),
                    metadata={"actor": "ops", "message": "for the Q1 model", "commit": "abc"})
    coverage = panel_model.backfill_coverage(events)

    assert [(t.version, t.table, t.covered, t.failed) for t in coverage.tables] == [
        (2, "features.clicks__v2", [(JAN_1 + timedelta(days=1), JAN_1 + timedelta(days=2))],
         []),
        (1, "features.clicks__v1", [(JAN_1, JAN_1 + timedelta(days=1))],
         [(JAN_1 + timedelta(days=1), JAN_1 + timedelta(days=2))])]
    running, failed = coverage.backfills
    assert (running.number, running.version, running.state, running.reprocess) == (
        2, 2, "running", "all")
    assert [(c.state, c.rows, c.events_read) for c in running.chunks] == [
        ("pending", None, None), ("completed", 7, 21)]
    assert (failed.state, failed.error, failed.rows, failed.events_read) == (
        "failed", "OOM", 10, 30)
    assert [c.state for c in failed.chunks] == ["completed", "failed", "not run"]
    assert (failed.start, failed.end) == (JAN_1, JAN_1 + timedelta(days=3))
    assert (failed.requested_by, failed.requested_at, failed.finished_at) == (
        "ops", T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))
    assert failed.provenance == {"message": "for the Q1 model", "commit": "abc"}
    assert panel_model.backfill_coverage([]) == Coverage([], [])


# --------------------------------------------------------------------------- drift panel

def parts_of(values: list[float | None]) -> dict[str, dict[str, float]]:
    """A window's rows as the streaming job emits them (sums per fixed bucket, nulls)."""
    parts: dict[str, dict[str, float]] = {}
    for value in values:
        if value is None:
            parts.setdefault("null", {"r": 0})["r"] += 1
            continue
        part = parts.setdefault(part_key(bucket_index(value), None),
                                {"r": 0, "sum": 0.0, "sq": 0.0, "lo": value, "hi": value})
        part["r"] += 1
        part["sum"] += value
        part["sq"] += value * value
        part["lo"], part["hi"] = min(part["lo"], value), max(part["hi"], value)
    return parts


def category_parts(counts: dict[str, int]) -> dict[str, dict[str, float]]:
    return {part_key(None, category): {"r": count} for category, count in counts.items()}


def alert(kind: type[DriftDetected | DriftResolved], feature: str, metric: str,
          value: float) -> DriftDetected | DriftResolved:
    return kind(view="clicks", version=1, namespace="v1", feature=feature, metric=metric,
                value=value, alert_at=0.25, window_end_ms=600_000, horizon_start_ms=0,
                baseline_position=1)


def reading(feature: str, metric: str, value: float, severity: str, end_ms: int = 600_000,
            start_ms: int = 0) -> StoredReading:
    return StoredReading("clicks", 1, feature, metric, value, severity, 0.25, "v1", end_ms,
                         start_ms, T0)


AMOUNTS = Baseline.of_numbers(range(1, 1001))
CHANNELS = Baseline.of_strings(["web"] * 60 + ["app"] * 40)


def test_the_drift_panel_compares_baseline_and_live_histograms_and_lists_open_alerts() -> None:
    baseline = BaselineRegistered(view="clicks", version=1, features={
        "amount": AMOUNTS.statistics.to_json(), "channel": CHANNELS.statistics.to_json()},
        origin={"kind": "dataset", "file": "train.parquet", "rows": 1000})
    log = DriftLog.of(log_of(drift_stream("clicks"), baseline,
                             alert(DriftDetected, "amount", "psi", 4.1),
                             alert(DriftDetected, "amount", "mean_shift", 9.0),
                             alert(DriftResolved, "amount", "mean_shift", 0.1)))
    windows = [WindowParts("clicks", "v1", "amount", 0, 300_000, parts_of([5000.0] * 100)),
               WindowParts("clicks", "v1", "amount", 300_000, 600_000,
                           parts_of([5000.0] * 50 + [None] * 50)),
               WindowParts("clicks", "v1", "channel", 300_000, 600_000,
                           category_parts({"web": 30, "app": 70}))]
    readings = [reading("amount", "mean_shift", 16.0, "ok"), reading("amount", "psi", 4.1,
                                                                     "alert"),
                reading("channel", "psi", 0.2, "warning")]
    report = panel_model.drift_report(
        log, versions=[2, 1], active=2,
        monitored={2: ["amount", "channel"], 1: ["amount", "channel", "count"]},
        namespaces={1: "v1", 2: "v2"}, readings=readings,
        live={1: panel_model.LiveWindows(0, 600_000, windows)})

    current, judged = report.versions
    assert (current.version, current.active, current.baseline, current.namespace) == (
        2, True, None, "v2")
    assert [(f.feature, f.state, f.bins) for f in current.features] == [
        ("amount", "no baseline", []), ("channel", "no baseline", [])]
    assert judged.baseline == "registered 2026-01-05 09:31:00 UTC (event 1) from training " \
                              "set train.parquet (1,000 rows)"
    amount, channel, count = judged.features
    assert (amount.state, channel.state, count.state) == ("drifting", "warning", "no baseline")
    assert [(r.metric, r.value, r.severity) for r in amount.readings] == [
        ("psi", 4.1, "alert"), ("mean_shift", 16.0, "ok")]
    # The baseline's own bins: its deciles plus one on either side of the training range,
    # each share as Baseline.fractions has it; every live value lies beyond the range.
    assert len(amount.bins) == len(AMOUNTS.bin_cuts) + 1 <= panel_model.HISTOGRAM_BINS
    assert [b.baseline for b in amount.bins] == AMOUNTS.fractions(AMOUNTS.statistics).tolist()
    assert [b.live for b in amount.bins] == [0.0] * (len(amount.bins) - 1) + [1.0]
    assert (amount.bins[0].label, amount.bins[1].label, amount.bins[-1].label) == (
        "< 1", "1 to 126", "≥ 1,260")  # bins end with whole log buckets: [1000, 1259)
    assert amount.baseline == "1,000 values, 0.0% null"
    assert amount.live == "150 values, 25.0% null, windows ending after 1970-01-01 00:00:00 " \
                          "UTC until 1970-01-01 00:10:00 UTC"
    assert [(b.label, b.baseline, b.live) for b in channel.bins] == [
        ("app", 0.4, 0.7), ("web", 0.6, 0.3), ("all others", 0.0, 0.0)]
    [open_alert] = report.open_alerts
    assert (open_alert.feature, open_alert.metric, open_alert.value, open_alert.opened_at) == (
        "amount", "psi", 4.1, T0 + timedelta(minutes=2))


def test_a_feature_without_windows_or_readings_says_so() -> None:
    baseline = AMOUNTS.statistics.to_json()
    never = panel_model.feature_drift("amount", baseline, None, None, [], drifting=False)
    assert (never.state, never.live) == (
        "not judged", "never deployed: no job emits this version's statistics")
    assert all(b.live is None for b in never.bins) and len(never.bins) > 1
    waiting = panel_model.feature_drift("amount", baseline, "v3", None, [], drifting=False)
    assert waiting.live == "no monitoring windows of namespace v3 stored yet"
    others = panel_model.LiveWindows(0, 300_000, [WindowParts("clicks", "v3", "count", 0,
                                                              300_000, parts_of([1.0]))])
    elsewhere = panel_model.feature_drift("amount", baseline, "v3", others,
                                          [reading("amount", "psi", 0.01, "ok")],
                                          drifting=False)
    assert elsewhere.state == "ok" and elsewhere.live.startswith("no values of amount in the")


def test_a_string_features_rare_categories_fold_into_one_bin() -> None:
    values = [f"c{n:02}" for n in range(15) for _ in range(15 - n)]
    baseline = Baseline.of_strings(values)
    live = WindowStatistics.of_strings(["c14"] * 50 + ["c00"] * 50)
    bins = panel_model.histogram_bins(baseline, live)
    assert len(bins) == panel_model.HISTOGRAM_BINS
    # c14, the rarest in training, half of the live values: kept by name.
    assert [b.label for b in bins[:3]] == ["c00", "c14", "c01"]
    assert bins[1].live == 0.5 and bins[-1].label == "all others"
    assert sum(b.baseline for b in bins) == pytest.approx(1.0)
    # c10 to c13 (5 to 2 values each) fold; no category was cut from the baseline's row.
    assert bins[-1].baseline == pytest.approx((5 + 4 + 3 + 2) / len(values))


def test_the_live_horizon_is_the_newest_readings_else_the_monitors_up_to_the_newest_window(
        ) -> None:
    judged = [reading("a", "psi", 0.1, "ok", 600_000, 0),
              reading("b", "psi", 0.1, "ok", 900_000, 300_000)]
    assert panel_model.live_horizon(judged, 1_200_000, 3_600_000) == (300_000, 900_000)
    assert panel_model.live_horizon([], 4_000_000, 3_600_000) == (400_000, 4_000_000)
    assert panel_model.live_horizon([], None, 3_600_000) is None


def test_the_panel_shows_versions_with_a_baseline_and_the_active_one_and_their_namespaces(
        ) -> None:
    log = DriftLog.of(log_of(drift_stream("clicks"), BaselineRegistered(
        view="clicks", version=1, features={}, origin={})))
    assert panel_model.drift_versions(log, 3) == [3, 1]
    assert panel_model.drift_versions(DriftLog(), None) == []
    started = [DeploymentStarted(view="clicks", deployment=n, version=version,
                                 namespace=namespace, kind=DeploymentKind.BLUE_GREEN,
                                 job_id=None, blue_version=None, blue_namespace=None,
                                 blue_job_id=None)
               for n, (version, namespace) in enumerate([(1, "v1"), (2, "v2"), (1, "v3")], 1)]
    assert panel_model.namespaces_by_version(log_of("deployment:clicks", *started)) == {
        1: "v3", 2: "v2"}
