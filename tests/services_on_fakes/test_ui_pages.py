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

import pytest
from litestar.testing import TestClient

from core.domain.events import (
    DeploymentKind,
    DeploymentReady,
    DeploymentStarted,
    NewEvent,
    Provenance,
    StreamAppend,
    VersionActivated,
    deployment_stream,
)
from core.errors import NotFoundError
from core.settings import RateLimit
from registry.api.app import Access, create_registry_app
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from registry.ui.pages import RegistryUI
from registry.ui.panels import DriftReport, FeatureDrift, HistogramBin, NotAvailable
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
        return DriftReport("baseline of 2026-01-01", [FeatureDrift(
            "clicks_1h", "drifting", {"psi": "0.31 (critical 0.12)"},
            [HistogramBin("[0, 10)", 0.7, 0.2), HistogramBin("[10, 100)", 0.3, 0.8)])], [])


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
    assert "not available yet: backfills" in page
    assert page.count('class="baseline"') == 2 and page.count('class="live"') == 2


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
        assert "set FP_REDIS_URL" in page and "not available yet: drift detection" in page
        assert "set FP_SERVING_URL" in http.get(f"/ui/feature-views/{name}/live").text


def test_the_vendored_htmx_is_the_documented_file() -> None:
    static = Path(__file__).resolve().parents[2] / "registry" / "ui" / "static"
    assert hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest() == HTMX_SHA256
    assert HTMX_SHA256 in (static / "HTMX-LICENSE").read_text()


def test_drift_and_backfill_panels_take_any_implementation(service: RegistryService) -> None:
    """What the lead plugs in when merging issues 16 and 17 (docs/ui.md)."""
    from registry.ui.panels import Backfill, BackfillChunk, Coverage

    class Backfills:
        def coverage(self, view: str) -> Coverage | NotAvailable:
            day = datetime(2026, 1, 1, tzinfo=UTC)
            return Coverage([Backfill("b-1", 2, day, day, "failed", "ops", day,
                                      [BackfillChunk(day, day, "failed", HOSTILE)], "boom")],
                            [(day, day)])

    name = registered(service)["name"]
    for http in client(service, RegistryUI(service, backfills=Backfills(), drift=Drift())):
        page = http.get(f"/ui/feature-views/{name}").text
        assert "b-1" in page and "boom" in page and "<script>" not in page
        assert "psi 0.31 (critical 0.12)" in page and "[10, 100): live 80.0%" in page
