"""The UI in a real browser against the real platform (registry, deployer, Flink, Tansu, the
writer, Redis, the serving API): a person opens the overview, searches, opens a view, diffs
two versions, watches a rollout finish on the timeline, reads live values, and rolls back with
a token — and a page of another site cannot roll back in their name.

``UI_SCREENSHOTS=docs/ui`` writes each page's screenshot there (the README shows them)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from core.domain.events import Provenance
from fp.local.base import free_port
from tests.conftest import RunningRegistry
from tests.platform import Platform, definitions
from tests.services import produce

pytestmark = pytest.mark.flink

TOKEN = "s3cret"
ROLLOUT_TIMEOUT_MS = 300_000
"""A first rollout takes 15-50 s on a quiet machine; a loaded, shared one took over 120 s."""


@pytest.fixture
def deployer_env() -> dict[str, str]:
    return {"FP_DEPLOYER_START": "earliest", "FP_READY_TIMEOUT": "290s"}


@pytest.fixture
def registry_env(serving_port: int, stream_redis_url: str, kafka_bootstrap: str
                 ) -> dict[str, str]:
    return {"FP_API_TOKENS": f"ops:{TOKEN}", "FP_REDIS_URL": stream_redis_url,
            "FP_SERVING_URL": f"http://127.0.0.1:{serving_port}",
            "FP_KAFKA_BOOTSTRAP": kafka_bootstrap}


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()


def screenshot(page: Page, name: str, full_page: bool = True) -> None:
    folder = os.environ.get("UI_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=full_page)


def waiting_view(suffix: str, revision: str) -> list[dict[str, Any]]:
    """A second view on a source topic that does not exist: its deployments wait (no Flink
    job), while its versions diff like any view's."""
    batch = definitions(suffix, revision)
    view = {**batch[3], "name": f"waiting_{suffix}", "source": "orders_missing",
            "owner": "team-growth", "tags": {"tier": "2"}}
    return [*batch[:3], view]


def flipped(suffix: str) -> list[dict[str, Any]]:
    """v1's features with a new description: a metadata version, rolled out by a flip."""
    batch = definitions(suffix, "v1")
    batch[3] = {**batch[3], "description": "Orders per customer, <b>reworded</b>"}
    return batch


class _CrossSiteForm(BaseHTTPRequestHandler):
    """Another site's page: a form that posts a rollback to the registry."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<form method="post" action="{self.target}">'
                '<input name="to_version" value="1"><input name="confirm" value="x">'
                '<button>win a prize</button></form>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_person_watches_a_rollout_reads_values_and_rolls_back(
        platform: Platform, registry_server: RunningRegistry, page: Page,
        kafka_bootstrap: str) -> None:
    """One rollout on Flink serves every step: each step is a function below."""
    ui = f"{registry_server.url}/ui"
    watch_a_rollout_finish(page, platform, ui)
    search_the_overview(page, platform, ui)
    diff_two_versions(page, platform)
    read_live_values(page, platform, ui)
    see_rejected_events(page, platform, ui, kafka_bootstrap)
    roll_back_with_a_token(page, platform, ui)
    filter_the_event_log(page, platform, ui)


def watch_a_rollout_finish(page: Page, p: Platform, ui: str) -> None:
    assert p.apply("v1") == 1
    page.goto(f"{ui}/feature-views/{p.view}")
    page.evaluate("window.notReloaded = true")
    newest = page.locator("#timeline article").first
    expect(newest).to_contain_text("completed", timeout=ROLLOUT_TIMEOUT_MS)
    expect(page.locator("#active-version")).to_have_text("v1")
    assert page.evaluate("window.notReloaded"), "the timeline refreshed by itself"
    assert newest.locator("ol.steps .label").all_inner_texts() == ["started", "ready",
                                                                   "activated"]
    expect(page.locator("#timeline table.grid")).to_contain_text("v1")  # its namespace
    page.reload()  # the panels below the timeline are read with the page
    expect(page.locator("#drift")).to_contain_text("No baseline registered for v1")
    expect(page.locator("#backfills")).to_contain_text("No backfills yet")
    screenshot(page, "feature-view")


def search_the_overview(page: Page, p: Platform, ui: str) -> None:
    p.service.apply(waiting_view(p.suffix, "v1"), Provenance("alice", message="first cut"))
    p.service.apply(waiting_view(p.suffix, "breaking"),
                    Provenance("ci", commit="6113728f0c1d", delivery_id="d-42"))
    page.goto(ui)
    page.get_by_label("Search names and descriptions").press_sequentially(p.suffix, delay=40)
    expect(page.locator("#results tbody tr")).to_have_count(2)
    page.get_by_label("Owner").select_option("team-growth")
    expect(page.locator("#results tbody tr")).to_have_count(1)
    assert "owner=team-growth" in page.url
    screenshot(page, "overview")


def diff_two_versions(page: Page, p: Platform) -> None:
    page.get_by_role("link", name=f"waiting_{p.suffix}").click()
    expect(page.locator("#versions")).to_contain_text("6113728f0c1d")
    page.get_by_label("diff from v1").check()
    page.get_by_label("diff to v2").check()
    page.get_by_role("button", name="Diff the two versions checked").click()
    expect(page.locator("#change-class")).to_contain_text("breaking")
    changes = page.locator("#feature-changes tbody")
    expect(changes.locator("tr.added")).to_contain_text(["amount_max_5s", "orders_10s"])
    expect(changes.locator("tr.removed")).to_contain_text(["orders_5s"])
    expect(page.locator("table.sql tr.insert, table.sql tr.replace").first).to_be_visible()
    expect(page.locator("table.sql")).to_contain_text("INSERT INTO")
    screenshot(page, "diff", full_page=False)  # the SQL goes on for pages


def read_live_values(page: Page, p: Platform, ui: str) -> None:
    page.goto(f"{ui}/feature-views/{p.view}/live")
    page.get_by_label("customer_id").fill("c1")
    page.get_by_role("button", name="Read").click()
    expect(page.locator("#served-version")).to_have_text("v1")
    expect(page.locator("#live .status.PRESENT").first).to_be_visible(timeout=60_000)
    shown = page.locator("#live p").first.inner_text()
    expect(page.locator("#live p").first).not_to_have_text(shown, timeout=10_000)
    page.get_by_label("version").select_option("1")
    page.get_by_role("button", name="Read").click()
    expect(page.locator("#served-version")).to_have_text("v1")
    assert "version=1" in page.url
    screenshot(page, "live-values")


def see_rejected_events(page: Page, p: Platform, ui: str, kafka_bootstrap: str) -> None:
    """What the source's job sent to the dead-letter topic, payloads escaped."""
    now = int(time.time() * 1000)
    produce(kafka_bootstrap, f"orders_{p.suffix}", [
        (0, json.dumps({"ts": now, "amount": 5}).encode()),
        (0, b"<script>alert('dlq')</script>"),
        (1, json.dumps({"customer_id": "c2", "ts": now, "amount": "lots"}).encode())])
    page.goto(f"{ui}/sources/orders")
    deadline = time.monotonic() + 60
    while "missing_required" not in page.locator("#quality").inner_text():
        assert time.monotonic() < deadline, page.locator("#quality").inner_text()
        time.sleep(1)
        page.reload()
    expect(page.locator("#quality")).to_contain_text("not_an_object")
    expect(page.locator("#quality svg.chart rect").first).to_be_attached()
    screenshot(page, "source-quality")


def roll_back_with_a_token(page: Page, p: Platform, ui: str) -> None:
    """A metadata version flips in; a rollback needs a sign-in, a confirmation and a form of
    the registry's own: another site's form is refused."""
    p.service.apply(flipped(p.suffix), Provenance("alice"))
    page.goto(f"{ui}/feature-views/{p.view}")
    expect(page.locator("#active-version")).to_have_text("v2", timeout=60_000)
    expect(page.get_by_role("link", name="Roll back to v1")).to_have_count(0)  # no token yet
    page.get_by_role("link", name="Sign in with a token").click()
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("header .who")).to_contain_text("signed in as ops")

    _CrossSiteForm.target = f"{ui}/feature-views/{p.view}/rollback"
    attacker = HTTPServer(("127.0.0.1", free_port()), _CrossSiteForm)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://localhost:{attacker.server_port}/")
        page.get_by_role("button", name="win a prize").click()
        expect(page.locator("h1")).to_contain_text("403")
    finally:
        attacker.shutdown()
    assert not [e for e in p.store.read_events() if e.type == "RollbackRequested"]

    page.goto(f"{ui}/feature-views/{p.view}")
    page.get_by_role("link", name="Roll back to v1").click()
    page.get_by_label("Type").fill("yes")  # not the view's name: not confirmed
    page.get_by_role("button", name="Roll back to v1").click()
    expect(page.locator("p.error")).to_contain_text("to confirm")
    page.get_by_label("Type").fill(p.view)
    screenshot(page, "rollback")
    page.get_by_role("button", name="Roll back to v1").click()
    expect(page.locator("#timeline")).to_contain_text("Rollback to v1 requested")
    expect(page.locator("#active-version")).to_have_text("v1", timeout=ROLLOUT_TIMEOUT_MS)
    assert p.active_in_registry() == 1
    rollback = next(e for e in p.store.read_events() if e.type == "RollbackRequested")
    assert rollback.metadata["actor"] == "ops"


def filter_the_event_log(page: Page, p: Platform, ui: str) -> None:
    page.goto(f"{ui}/events")
    page.get_by_label("Definition or view").fill(p.view)
    page.get_by_label("Event type").select_option("RollbackRequested")
    expect(page.locator("#events tbody tr")).to_have_count(1)
    expect(page.locator("#events")).to_contain_text("ops")
    page.get_by_label("Event type").select_option("")
    expect(page.locator("#events tbody tr").first).to_contain_text("VersionActivated")
    screenshot(page, "event-log")
