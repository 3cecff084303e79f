"""The UI's view models: what each page shows, computed without services."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from core.domain.changes import DiffEntry
from core.domain.deployments import Deployment, DeploymentState
from core.domain.events import DeploymentKind, RecordedEvent, RollbackRequested
from registry.ui import model

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


def test_histograms_pair_baseline_and_live_bars_scaled_to_the_tallest() -> None:
    bars = model.histogram_bars([("[0, 10)", 0.5, 0.25), ("[10, 100)", 0.5, 0.75)])
    assert [(b.series, b.x, b.height) for b in bars] == [
        ("baseline", 2.5, 26.667), ("live", 25.0, 13.333),
        ("baseline", 52.5, 26.667), ("live", 75.0, 40.0)]
    assert bars[3].title == "[10, 100): live 75.0%"
    assert model.histogram_bars([]) == []


def test_event_rows_summarise_each_event_and_filter() -> None:
    event = RecordedEvent(7, "deployment:clicks", 1, RollbackRequested(view="clicks", to_version=2),
                          {"actor": "ops", "message": "bad deploy", "commit": "abc"}, T0)
    found = model.event_row(event)
    assert (found.subject, found.summary, found.actor) == ("clicks", "rollback to v2 requested",
                                                           "ops")
    assert found.provenance == {"message": "bad deploy", "commit": "abc"}
    assert model.EventSearch(type="RollbackRequested", subject="CLICK").matches(found)
    assert not model.EventSearch(actor="alice").matches(found)
