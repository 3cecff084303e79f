"""The UI's pages on the registry's in-memory store: what they show, what they escape, who may
act, and how the panels other capabilities fill are plugged in.  The browser tests
(tests/ui/) run the same pages on the real platform."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from litestar.testing import TestClient

from core.domain.drift import Baseline, bucket_index, part_key
from core.domain.events import (
    BackfillChunkCompleted,
    BackfillFailed,
    BackfillRequested,
    DeploymentKind,
    DeploymentReady,
    DeploymentStarted,
    DriftDetected,
    NewEvent,
    Provenance,
    StreamAppend,
    VersionActivated,
    backfill_stream,
    deployment_stream,
    drift_stream,
)
from core.errors import NotFoundError
from core.settings import RateLimit
from registry.api.app import Access, create_registry_app
from registry.drift import DriftRegistry
from registry.service import RegistryService
from registry.store.drift import PostgresDriftStore, StoredReading, WindowParts
from registry.store.memory import MemoryRegistryStore
from registry.store.postgres import PostgresRegistryStore
from registry.ui.pages import RegistryUI
from registry.ui.panels import (
    Backfill,
    BackfillChunk,
    Coverage,
    DriftReport,
    FeatureDrift,
    HistogramBin,
    MetricReading,
    NotAvailable,
    TableCoverage,
    VersionDrift,
)
from registry.ui.registry_panels import MonitoredDrift
from sinks.online_memory import InMemoryOnlineStore
from sinks.online_store import FeatureRow
from tests.reference_definitions import reference_definitions

HOSTILE = "<script>alert('x')</script>"
WRITE, READ = "w1", "r1"
HTMX_SHA256 = "e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447"


def registered(service: RegistryService) -> dict[str, Any]:
    """The reference definitions twice: v2 of the view adds a feature and a hostile
    description.  Returns the view."""
    batch = reference_definitions()
    service.apply(batch, Provenance("alice", message="first"))
    changed = copy.deepcopy(batch)
    view = next(d for d in changed if d["kind"] == "feature_view")
    view["features"].append({"name": "clicks_max_1h", "aggregation": "max",
                             "column": "amount", "window": "1h"})
    view["description"] = HOSTILE
    service.apply(changed, Provenance("ci", commit="6113728f", delivery_id="d-9"))
    return view


class Serving:
    """The serving API's answers, as a stand-in typed by the UI's LiveReader."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int | None]] = []

    def features(self, view: str, entity_key: str, version: int | None) -> Mapping[str, Any]:
        self.asked.append((view, entity_key, version))
        if entity_key == "gone":
            raise NotFoundError("version 9 of the view is not serveable")
        return {"view": view, "version": version or 2, "entity_key": entity_key,
                "found": True, "features": {"clicks_1h": 3, "note": HOSTILE},
                "statuses": {"clicks_1h": "PRESENT", "note": "PRESENT"}, "event_time": 1_000}


class Letters:
    """A dead-letter topic's tail, as a stand-in typed by the UI's TopicTail."""

    def tail(self, topic: str, limit: int) -> list[tuple[int, bytes]]:
        assert topic.endswith(".dlq")
        return [(60_000, b'{"reason": "x: missing", "reason_code": "missing_required", '
                         b'"origin": "stream", "view": "v", "namespace": "v1", "topic": "t", '
                         b'"partition": 0, "offset": 3, "payload": "<img src=x onerror=1>"}')]


class Drift:
    def drift(self, view: str) -> DriftReport | NotAvailable:
        day = datetime(2026, 1, 1, tzinfo=UTC)
        return DriftReport([VersionDrift(2, True, "of 2026-01-01", "v2", [FeatureDrift(
            "clicks_1h", "drifting", [MetricReading("psi", 0.31, 0.12, "alert", day)],
            "numeric", [HistogramBin("0 to 10", 0.7, 0.2), HistogramBin("≥ 10", 0.3, 0.8)],
            "1,000 values", HOSTILE)])], [])


@pytest.fixture
def service() -> RegistryService:
    return RegistryService(MemoryRegistryStore())


@pytest.fixture
def online() -> InMemoryOnlineStore:
    return InMemoryOnlineStore()


TOKENS = Access(api_tokens=[f"ops:{WRITE}"], read_tokens=[f"peek:{READ}"])


def client(service: RegistryService, ui: RegistryUI, access: Access = TOKENS,
           ) -> Iterator[TestClient[Any]]:
    with TestClient(create_registry_app(service, access, pages=ui),
                    base_url="http://registry.test") as test_client:
        yield test_client


@pytest.fixture
def ui(service: RegistryService, online: InMemoryOnlineStore) -> RegistryUI:
    return RegistryUI(service, progress=online, live=Serving(), dead_letters=Letters(),
                      drift=Drift())


@pytest.fixture
def http(service: RegistryService, ui: RegistryUI) -> Iterator[TestClient[Any]]:
    yield from client(service, ui)


def sign_in(http: TestClient[Any], token: str) -> None:
    answer = http.post("/ui/sign-in", data={"token": token, "next": "/ui"},
                       follow_redirects=False)
    assert answer.status_code == 303, answer.text


def test_every_page_reads_without_a_token_escapes_input_and_runs_no_inline_code(
        service: RegistryService, http: TestClient[Any]) -> None:
    view = registered(service)
    name = view["name"]
    pages = ["/ui", f"/ui/feature-views/{name}", f"/ui/feature-views/{name}/diff?from=1&to=2",
             f"/ui/feature-views/{name}/live?user_id=u1", f"/ui/sources/{view['source']}",
             f"/ui/entities/{view['entities'][0]}", f"/ui/feature-views/{name}/timeline",
             "/ui/sign-in"]
    for path in pages:
        answer = http.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert "default-src 'none'; script-src 'self'" in answer.headers["content-security-policy"]
        assert "<script>" not in answer.text and "<img" not in answer.text, path
        assert " style=" not in answer.text and " on" + "click=" not in answer.text, path
        assert all(src == "/ui/static/htmx.min.js"
                   for src in re.findall(r'<script src="([^"]+)"', answer.text)), path
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in http.get(
        f"/ui/feature-views/{name}").text


def test_the_overview_answers_htmx_with_its_results_alone(
        service: RegistryService, http: TestClient[Any]) -> None:
    registered(service)
    whole = http.get("/ui?q=clicks")
    part = http.get("/ui?q=clicks", headers={"HX-Request": "true", "HX-Target": "results"})
    assert whole.text.startswith("<!doctype html>")
    assert part.text.startswith('<section id="results">')
    assert "user_clicks" in part.text and "<header" not in part.text


def test_a_view_page_shows_versions_provenance_the_timeline_and_progress(
        service: RegistryService, http: TestClient[Any], online: InMemoryOnlineStore) -> None:
    view = registered(service)
    name = view["name"]
    stream = deployment_stream(name)
    started = DeploymentStarted(view=name, deployment=1, version=1, namespace="v1",
                                kind=DeploymentKind.BLUE_GREEN, job_id="j1", blue_version=None,
                                blue_namespace=None, blue_job_id=None)
    steps = [started, DeploymentReady(view=name, deployment=1, version=1, namespace="v1",
                                      source_offsets={"0": 5}, green_watermark=1_000,
                                      blue_watermark=None),
             VersionActivated(view=name, deployment=1, version=1, namespace="v1")]
    service.store.append([StreamAppend(stream, 0, tuple(NewEvent(s, {"actor": "deployer"})
                                                        for s in steps))])
    online.apply({(name, "v1"): [FeatureRow("u1", 60_000, {"clicks_1h": 1}, False, False,
                                            True)]})
    page = http.get(f"/ui/feature-views/{name}").text
    assert "6113728f" in page and "d-9" in page and "first" in page
    assert "Deployment 1: v1" in page and "completed" in page and "job j1" in page
    assert '<strong id="active-version">v1</strong>' in page
    assert re.search(r"<td>v1 <span class=\"state completed\">active</span></td><td>v1 </td>"
                     r"<td>1970-01-01 00:01:00 UTC</td>", page)
    assert "No backfills yet" in page
    assert page.count('<rect class="baseline"') == 2 and page.count('<rect class="live"') == 2


def test_the_diff_compiles_both_versions_and_marks_what_changed(
        service: RegistryService, http: TestClient[Any]) -> None:
    name = registered(service)["name"]
    page = http.get(f"/ui/feature-views/{name}/diff?from=1&to=2").text
    assert '<span class="change additive">additive</span>' in page
    assert re.search(r'<tr class="added"><td>clicks_max_1h</td>', page)
    assert page.count("INSERT INTO") >= 2 and re.search('<tr class="(insert|replace)">', page)
    assert "${FP_KAFKA_BOOTSTRAP}" in page


def test_live_values_ask_the_serving_api_and_show_its_errors(
        service: RegistryService, http: TestClient[Any], ui: RegistryUI) -> None:
    name = registered(service)["name"]
    page = http.get(f"/ui/feature-views/{name}/live?user_id=a|b&version=1").text
    assert isinstance(ui.live, Serving) and ui.live.asked == [(name, "a\\|b", 1)]
    assert '<strong id="served-version">v1</strong>' in page and "&lt;script&gt;" in page
    assert 'hx-trigger="every 2s"' in page
    gone = http.get(f"/ui/feature-views/{name}/live?user_id=gone").text
    assert "version 9 of the view is not serveable" in gone


def test_a_source_page_shows_rejections_and_payloads_only_to_readers(
        service: RegistryService, http: TestClient[Any]) -> None:
    source = registered(service)["source"]
    page = http.get(f"/ui/sources/{source}").text
    assert "missing_required" in page and "<rect" in page
    assert "onerror" not in page and "Payloads are shown to readers" in page
    assert "the ingest API at http://" not in page and "not configured: set FP_INGEST_URL" in page
    sign_in(http, READ)
    assert "&lt;img src=x onerror=1&gt;" in http.get(f"/ui/sources/{source}").text


def test_the_event_log_needs_a_read_token_when_the_registry_has_read_tokens(
        service: RegistryService, http: TestClient[Any]) -> None:
    registered(service)
    refused = http.get("/ui/events")
    assert refused.status_code == 401 and "Sign in" in refused.text
    sign_in(http, READ)
    page = http.get("/ui/events?type=DefinitionRegistered&actor=ci")
    assert page.status_code == 200 and page.text.count("<tr><td>") == 1
    assert "v2 registered (additive)" in page.text


def rollback_form(http: TestClient[Any], name: str, to: int = 1) -> dict[str, str]:
    page = http.get(f"/ui/feature-views/{name}/rollback?to={to}").text
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, page
    return {"to_version": str(to), "csrf": match.group(1), "confirm": name}


def rollbacks(service: RegistryService) -> list[Any]:
    return [e for e in service.store.read_events() if e.type == "RollbackRequested"]


def test_a_rollback_needs_a_write_token_a_confirmation_and_the_form_of_this_sign_in(
        service: RegistryService, http: TestClient[Any]) -> None:
    name = registered(service)["name"]
    path = f"/ui/feature-views/{name}/rollback"
    assert "sign in" in http.get(f"{path}?to=1").text
    assert http.post(path, data={"to_version": "1", "confirm": name}).status_code == 403
    sign_in(http, READ)
    assert http.post(path, data={"to_version": "1", "confirm": name}).status_code == 403
    sign_in(http, WRITE)
    form = rollback_form(http, name)
    assert http.post(path, data={**form, "csrf": "0" * 64}).status_code == 403
    unconfirmed = http.post(path, data={**form, "confirm": "yes"})
    assert unconfirmed.status_code == 200 and "to confirm" in unconfirmed.text
    for header in ({"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"},
                   {"Origin": "http://evil.test"}):
        assert http.post(path, data=form, headers=header).status_code == 403, header
    assert rollbacks(service) == []
    done = http.post(path, data=form, headers={"Sec-Fetch-Site": "same-origin",
                                               "Origin": "http://registry.test"},
                     follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].endswith("#timeline")
    [event] = rollbacks(service)
    assert event.metadata["actor"] == "ops" and event.data["to_version"] == 1


def test_the_sign_in_cookie_is_http_only_same_site_strict_and_scoped_to_the_ui(
        service: RegistryService, http: TestClient[Any]) -> None:
    answer = http.post("/ui/sign-in", data={"token": WRITE, "next": "https://evil.test/"},
                       follow_redirects=False)
    assert answer.headers["location"] == "/ui"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "not one of this registry" in http.post("/ui/sign-in", data={"token": "nope"}).text


def test_a_registry_without_write_tokens_takes_no_action_from_the_ui(
        service: RegistryService, ui: RegistryUI) -> None:
    name = registered(service)["name"]
    for http in client(service, ui, Access()):
        assert "the UI takes no actions" in http.get(
            f"/ui/feature-views/{name}/rollback?to=1").text
        assert http.post(f"/ui/feature-views/{name}/rollback",
                         data={"to_version": "1", "confirm": name}).status_code == 403


def test_rollbacks_from_the_ui_and_the_api_share_the_write_rate_limit(
        service: RegistryService, ui: RegistryUI) -> None:
    name = registered(service)["name"]
    access = Access(api_tokens=[f"ops:{WRITE}"], apply_rate_limit=RateLimit(1, 60_000))
    for http in client(service, ui, access):
        sign_in(http, WRITE)
        assert http.post(f"/ui/feature-views/{name}/rollback", data=rollback_form(http, name),
                         follow_redirects=False).status_code == 303
        api = http.post(f"/v1/feature-views/{name}/rollback", json={"to_version": 1},
                        headers={"Authorization": f"Bearer {WRITE}"})
        assert api.status_code == 429


def test_unknown_definitions_and_versions_are_html_pages(
        service: RegistryService, http: TestClient[Any]) -> None:
    name = registered(service)["name"]
    missing = http.get("/ui/feature-views/nope")
    assert missing.status_code == 404 and "feature view &#39;nope&#39; is not registered" in \
        missing.text
    assert http.get(f"/ui/feature-views/{name}/diff?from=1&to=7").status_code == 404


def test_panels_without_their_service_name_the_setting_they_need(
        service: RegistryService) -> None:
    name = registered(service)["name"]
    for http in client(service, RegistryUI(service)):
        page = http.get(f"/ui/feature-views/{name}").text
        assert "set FP_REDIS_URL" in page and "built without the drift monitor&#39;s store" in page
        assert "set FP_SERVING_URL" in http.get(f"/ui/feature-views/{name}/live").text


def test_the_vendored_htmx_is_the_documented_file() -> None:
    static = Path(__file__).resolve().parents[2] / "registry" / "ui" / "static"
    assert hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest() == HTMX_SHA256
    assert HTMX_SHA256 in (static / "HTMX-LICENSE").read_text()


def test_drift_and_backfill_panels_take_any_implementation(service: RegistryService) -> None:
    """Another implementation of the panels' interfaces (docs/ui.md) is laid out alike."""
    class Backfills:
        def coverage(self, view: str) -> Coverage | NotAvailable:
            day = datetime(2026, 1, 1, tzinfo=UTC)
            return Coverage([TableCoverage(2, "features.t__v2", [(day, day)], [])], [Backfill(
                7, 2, "features.t__v2", day, day, "failed", "missing", "ops", day, {},
                [BackfillChunk(day, day, "failed")], 0, 0, error=HOSTILE)])

    name = registered(service)["name"]
    for http in client(service, RegistryUI(service, backfills=Backfills(), drift=Drift())):
        page = http.get(f"/ui/feature-views/{name}").text
        assert "features.t__v2" in page and "&lt;script&gt;" in page and "<script>" not in page
        assert re.search(r"<td>psi</td><td>0.31</td><td class=\"sub\">alerts at 0.12</td>", page)
        assert "≥ 10: live 80.0%" in page


def test_the_backfill_panel_reads_the_views_backfill_stream(
        service: RegistryService, http: TestClient[Any]) -> None:
    name = registered(service)["name"]
    day, start = 86_400_000, 20_454 * 86_400_000  # 2026-01-01
    chunks = [(start, start + day), (start + day, start + 2 * day)]
    steps = [BackfillRequested(view=name, version=2, backfill=1, start_ms=start,
                               end_ms=start + 2 * day, chunk_ms=day, reprocess="missing",
                               chunks=chunks, table=f"features.{name}__v2"),
             BackfillChunkCompleted(view=name, version=2, backfill=1, start_ms=start,
                                    end_ms=start + day, snapshot_id=5, rows=1_200,
                                    events_read=4_800),
             BackfillFailed(view=name, version=2, backfill=1, reason="the archive is gone",
                            failed_chunks=[chunks[1]])]
    metadata = Provenance("ops", message="for the Q1 model").to_metadata()
    service.store.append([StreamAppend(backfill_stream(name), 0, tuple(
        NewEvent(step, metadata) for step in steps))])
    page = http.get(f"/ui/feature-views/{name}").text
    assert re.search(rf"<td>v2</td><td><code>features.{name}__v2</code></td>"
                     r"<td>2026-01-01 00:00:00 UTC to 2026-01-02 00:00:00 UTC</td>"
                     r"<td>2026-01-02 00:00:00 UTC to 2026-01-03 00:00:00 UTC</td>", page)
    assert '<span class="state failed">failed</span>' in page and "the archive is gone" in page
    assert "by ops" in page and "message for the Q1 model" in page
    assert "1 of 2 completed, 1,200 rows, 4,800 events read" in page
    assert 'title="2026-01-01 00:00:00 UTC to 2026-01-02 00:00:00 UTC: completed, 1,200 ' \
           'rows, 4,800 events read"' in page


def test_the_drift_panel_reads_baselines_the_monitors_windows_readings_and_alerts(
        store: PostgresRegistryStore) -> None:
    """The registry's own drift panel on PostgreSQL (the drift store has no in-memory
    adapter): a baseline of v1, the monitor's windows and readings, an open alert."""
    service = RegistryService(store)
    name = registered(service)["name"]
    drift = DriftRegistry(service, PostgresDriftStore(store.engine))
    amounts = Baseline.of_numbers(range(1, 1001))
    drift.register_baseline(name, 1, {
        "amount_1h": amounts.statistics.to_json(),
        "last_page": Baseline.of_strings(["home"] * 70 + ["cart"] * 30).statistics.to_json()},
        {"kind": "dataset", "file": "train.parquet", "rows": 1000}, Provenance("alice"))
    started = DeploymentStarted(view=name, deployment=1, version=1, namespace="v1",
                                kind=DeploymentKind.BLUE_GREEN, job_id="j1", blue_version=None,
                                blue_namespace=None, blue_job_id=None)
    store.append([StreamAppend(deployment_stream(name), 0, tuple(
        NewEvent(step, {"actor": "deployer"}) for step in (started, VersionActivated(
            view=name, deployment=1, version=1, namespace="v1"))))])
    drift.store.add_windows([
        WindowParts(name, "v1", "amount_1h", 0, 300_000, {
            part_key(bucket_index(5000.0), None): {"r": 80, "sum": 400_000.0, "sq": 2e9,
                                                    "lo": 5000.0, "hi": 5000.0},
            "null": {"r": 20}}),
        WindowParts(name, "v1", "last_page", 0, 300_000, {"c:cart": {"r": 90},
                                                          "c:home": {"r": 10}})])
    drift.store.save_readings([StoredReading(name, 1, "amount_1h", "psi", 4.1, "alert", 0.25,
                                             "v1", 300_000, 0, datetime.now(UTC))])
    store.append([StreamAppend(drift_stream(name), 1, (NewEvent(DriftDetected(
        view=name, version=1, namespace="v1", feature="amount_1h", metric="psi", value=4.1,
        alert_at=0.25, window_end_ms=300_000, horizon_start_ms=0, baseline_position=1),
        {"actor": "monitor"}),))])

    for http in client(service, RegistryUI(service, drift=MonitoredDrift(drift, 3_600_000))):
        page = http.get(f"/ui/feature-views/{name}").text
    assert "v1 amount_1h: psi 4.1 (alerts at 0.25)" in page
    assert "from training set train.parquet (1,000 rows)" in page
    assert re.search(r"<strong>amount_1h</strong> <span class=\"state drifting\">", page)
    assert re.search(r"<strong>clicks_1h</strong> <span class=\"state no-baseline\">", page)
    assert re.search(r"<strong>last_page</strong> <span class=\"state not-judged\">", page)
    assert "live: 80 values, 20.0% null, windows ending after 1970-01-01 00:00:00 UTC" in page

    charts = {svg.get("aria-label", "").split(":")[0]: svg for svg in (
        ElementTree.fromstring(text) for text in re.findall(
            r'<svg class="histogram".*?</svg>', page, re.DOTALL))}
    assert set(charts) == {"v1 amount_1h", "v1 last_page"}
    chart = charts["v1 amount_1h"]
    assert chart.get("role") == "img"
    bins = len(amounts.bin_cuts) + 1
    baseline = [r for r in chart.iter("rect") if r.get("class") == "baseline"]
    live = [r for r in chart.iter("rect") if r.get("class") == "live"]
    assert len(baseline) == len(live) == bins
    assert all(r.find("title") is not None for r in [*baseline, *live])
    # Heights are proportional to the shares: every live value (5,000) lies in the last bin,
    # beyond the training range, which is the scale's top (100 %).
    shares = amounts.fractions(amounts.statistics)
    full = float(live[-1].get("height", 0))
    assert [float(r.get("height", 0)) for r in live] == [0.0] * (bins - 1) + [full]
    assert [float(r.get("height", 0)) for r in baseline] == pytest.approx(
        [full * share for share in shares], abs=1e-3)
    assert live[-1].findtext("title") == "≥ 1,260: live 100.0%"
    assert [t.text for t in charts["v1 last_page"].iter("text")][:3] == ["0%", "45%", "90%"]
