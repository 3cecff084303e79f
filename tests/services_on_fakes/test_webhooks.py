"""Git push webhooks over the in-memory registry store and inbox: receiver, worker and
processor as in production, a real local repository reached by file:// URL and the real
sandboxed loader; no database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from registry.api.app import create_registry_app
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from registry.webhooks import SandboxLimits, WebhookConfig, Webhooks
from registry.webhooks.memory_inbox import MemoryDeliveryInbox
from tests.webhooks.support import (
    NULL_SHA,
    GitRemote,
    examples_file,
    finished,
    github_push,
    github_request,
    poll,
    with_description,
)

LIMITS = SandboxLimits(wall_seconds=10, cpu_seconds=3, memory_bytes=512 << 20)


@pytest.fixture
def inbox() -> MemoryDeliveryInbox:
    return MemoryDeliveryInbox()


@pytest.fixture
def client(inbox: MemoryDeliveryInbox, tmp_path: Path,
           remote: GitRemote) -> Iterator[TestClient[Any]]:
    service = RegistryService(MemoryRegistryStore())
    webhooks = Webhooks(service, inbox, WebhookConfig(
        secret="It's a Secret to Everybody", repositories=(remote.url,),
        cache_dir=tmp_path / "git-cache", limits=LIMITS, poll_seconds=0.2))
    app = create_registry_app(service, extra_handlers=webhooks.route_handlers,
                              lifespan=[webhooks.lifespan])
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path / "remote")


def push(client: TestClient[Any], payload: Any, delivery: str) -> dict[str, Any]:
    body, headers = github_request(payload, delivery=delivery)
    response = client.post("/v1/webhooks/github", content=body, headers=headers)
    assert response.status_code == 202, response.text
    answered: dict[str, Any] = response.json()
    return answered


def outcome(client: TestClient[Any], delivery: str) -> dict[str, Any]:
    return poll(lambda: client.get(f"/v1/webhooks/deliveries/{delivery}").json(), finished)


def test_pushes_are_applied_in_order_with_their_provenance(client: TestClient[Any],
                                                           remote: GitRemote) -> None:
    views = examples_file("views.yaml")
    first = remote.commit_examples()
    second = remote.commit({"features/views.yaml": with_description(views, "Version 2.")})
    assert push(client, github_push(remote.url, first), "p-1")["status"] == "queued"
    push(client, github_push(remote.url, second, before=first), "p-2")

    assert [outcome(client, d)["status"] for d in ("p-1", "p-2")] == ["applied", "applied"]
    view = client.get("/v1/feature-views/user_transactions").json()
    assert (view["latest_version"], view["spec"]["description"]) == (2, "Version 2.")
    versions = client.get("/v1/feature-views/user_transactions/versions").json()["versions"]
    assert [v["provenance"]["commit"] for v in versions] == [first, second]
    assert versions[0]["provenance"]["delivery_id"] == "p-1"


def test_a_redelivery_is_answered_with_the_recorded_outcome(client: TestClient[Any],
                                                            inbox: MemoryDeliveryInbox,
                                                            remote: GitRemote) -> None:
    payload = github_push(remote.url, remote.commit_examples())
    push(client, payload, "twice")
    applied = outcome(client, "twice")
    assert push(client, payload, "twice") == applied
    assert sum(inbox.counts_by_status().values()) == 1


def test_other_branches_are_skipped_and_failures_recorded(client: TestClient[Any],
                                                          remote: GitRemote) -> None:
    commit = remote.commit_examples()
    skipped = push(client, github_push(remote.url, commit, ref="refs/heads/dev"), "dev")
    assert (skipped["status"], skipped["finished_at"] is not None) == ("skipped", True)
    push(client, github_push(remote.url, "f" * 40, before=NULL_SHA), "missing-commit")
    failed = outcome(client, "missing-commit")
    assert failed["status"] == "failed" and failed["error"]
    assert client.get("/v1/events").json()["events"] == []
    metrics = client.get("/metrics").text
    for status, count in (("skipped", 1), ("failed", 1), ("applied", 0), ("queued", 0)):
        assert f'fp_registry_webhook_deliveries{{status="{status}"}} {count}.0' in metrics


def test_an_old_push_sent_again_is_skipped_and_registers_nothing(client: TestClient[Any],
                                                                 remote: GitRemote) -> None:
    views = examples_file("views.yaml")
    first = remote.commit_examples()
    second = remote.commit({"features/views.yaml": with_description(views, "Version 2.")})
    push(client, github_push(remote.url, first), "first")
    push(client, github_push(remote.url, second, before=first), "second")
    assert [outcome(client, d)["status"] for d in ("first", "second")] == ["applied"] * 2

    push(client, github_push(remote.url, first), "replayed")
    replayed = outcome(client, "replayed")
    assert (replayed["status"], replayed["reason"].split(":")[0]) == (
        "skipped", f"commit {first} is an ancestor of applied {second}")
    versions = client.get("/v1/feature-views/user_transactions/versions").json()["versions"]
    assert [v["provenance"]["commit"] for v in versions] == [first, second]
