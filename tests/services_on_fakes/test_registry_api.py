"""The registry API over the in-memory store: whole flows in milliseconds.

The store is held to the PostgreSQL store's behaviour by tests/contracts, so these flows prove
the service and its HTTP layer; tests/integration/test_registry_api.py runs the same API on
the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from core.domain.events import (
    EventType,
    NewEvent,
    StreamAppend,
    VersionActivated,
    deployment_stream,
)
from core.settings import RateLimit
from registry.api.app import MAX_VERSION, Access, create_registry_app
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from registry.webhooks import WebhookConfig, Webhooks
from registry.webhooks.memory_inbox import MemoryDeliveryInbox
from tests.reference_definitions import reference_definitions

TOKEN = "s3cret"
# The header claims someone else: the token's identity, "ci", is what gets recorded.
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}", "X-FP-Actor": "mallory"}
Definitions = list[dict[str, Any]]


@pytest.fixture
def definitions() -> Definitions:
    return reference_definitions()


@pytest.fixture
def store() -> MemoryRegistryStore:
    return MemoryRegistryStore()


@pytest.fixture
def client(store: MemoryRegistryStore) -> Iterator[TestClient[Any]]:
    app = create_registry_app(RegistryService(store), Access(api_tokens=[f"ci:{TOKEN}"]))
    with TestClient(app) as test_client:
        yield test_client


def apply(client: TestClient[Any], definitions: Definitions, **extra: Any) -> Any:
    response = client.post("/v1/apply", json={"definitions": definitions, **extra},
                           headers=AUTHORIZED)
    assert response.status_code == 200, response.text
    return response.json()


def test_apply_then_read_every_kind(client: TestClient[Any], definitions: Definitions) -> None:
    body = apply(client, definitions, message="first")
    assert [(c["action"], c["to_version"]) for c in body["changes"]] == [("create", 1)] * 4
    assert client.get("/v1/entities/user").json()["active_version"] == 1
    view = client.get("/v1/feature-views/user_clicks").json()
    assert (view["latest_version"], view["active_version"]) == (1, None)
    assert [v["name"] for v in client.get("/v1/sources").json()["items"]] == ["clicks"]
    assert client.get("/v1/feature-views/nope").status_code == 404


def test_a_change_is_versioned_diffed_and_reads_back(client: TestClient[Any],
                                                     definitions: Definitions) -> None:
    apply(client, definitions)
    definitions[2]["features"][0]["window"] = "2h"
    change = next(c for c in apply(client, definitions)["changes"]
                  if c["name"] == "user_clicks")
    assert (change["action"], change["to_version"], change["change_class"]) == (
        "update", 2, "breaking")
    versions = client.get("/v1/feature-views/user_clicks/versions").json()["versions"]
    assert [(v["version"], v["change_class"]) for v in versions] == [(1, None), (2, "breaking")]
    assert versions[1]["provenance"] == {"actor": "ci"}
    old = client.get("/v1/feature-views/user_clicks/versions/1").json()
    assert old["spec"]["features"][0]["window"] == "1h"
    diff = client.get("/v1/feature-views/user_clicks/diff", params={"from": 1, "to": 2}).json()
    assert diff["diff"] == [{"path": "features.clicks_1h.window", "op": "changed",
                             "from": "1h", "to": "2h"}]
    unchanged = apply(client, definitions)
    assert {c["action"] for c in unchanged["changes"]} == {"unchanged"}


def test_invalid_definitions_write_nothing(client: TestClient[Any],
                                           definitions: Definitions) -> None:
    definitions[2]["source"] = "views"
    response = client.post("/v1/apply", json={"definitions": definitions}, headers=AUTHORIZED)
    assert response.status_code == 422
    assert any(e["path"] == "definitions[2].source" for e in response.json()["errors"])
    assert client.get("/v1/events").json()["events"] == []


def test_a_rollback_is_recorded_for_the_deployer(client: TestClient[Any],
                                                 store: MemoryRegistryStore,
                                                 definitions: Definitions) -> None:
    apply(client, definitions)
    definitions[2]["description"] = "edited"
    apply(client, definitions)
    store.append([StreamAppend(deployment_stream("user_clicks"), 0, (NewEvent(
        VersionActivated(view="user_clicks", deployment=1, version=2, namespace="n1")),))])
    assert client.get("/v1/feature-views/user_clicks").json()["active_version"] == 2

    response = client.post("/v1/feature-views/user_clicks/rollback", json={"to_version": 1},
                           headers=AUTHORIZED)
    assert response.status_code == 202, response.text
    assert response.json()["position"] == store.last_position()
    [requested] = [e for e in store.read_stream(deployment_stream("user_clicks"))
                   if e.type == EventType.ROLLBACK_REQUESTED]
    assert (requested.data["to_version"], requested.metadata["actor"]) == (1, "ci")
    assert client.post("/v1/feature-views/user_clicks/rollback", json={"to_version": 9},
                       headers=AUTHORIZED).status_code == 404


def test_events_page_by_position(client: TestClient[Any], definitions: Definitions) -> None:
    apply(client, definitions, message="first")
    first = client.get("/v1/events", params={"after": 0, "limit": 3}).json()
    rest = client.get("/v1/events", params={"after": first["last_position"]}).json()
    events = first["events"] + rest["events"]
    assert [e["position"] for e in events] == [1, 2, 3, 4]
    assert all(e["metadata"] == {"actor": "ci", "message": "first"} for e in events)
    assert client.get("/v1/events", params={"after": 4}).json() == {"events": [],
                                                                    "last_position": 4}
    assert client.get("/v1/events", params={"limit": 0}).status_code == 400


def test_writes_need_a_valid_token(client: TestClient[Any], definitions: Definitions) -> None:
    body = {"definitions": definitions}
    missing = client.post("/v1/apply", json=body)
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, "Bearer")
    wrong = client.post("/v1/apply", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    rollback = client.post("/v1/feature-views/user_clicks/rollback", json={"to_version": 1})
    assert rollback.status_code == 401
    assert client.get("/v1/events").json()["events"] == []
    assert client.get("/v1/feature-views").status_code == 200, "reads need no token"


def _actors(client: TestClient[Any]) -> list[str]:
    return [e["metadata"]["actor"] for e in client.get("/v1/events").json()["events"]]


def test_the_actor_is_the_tokens_identity_never_the_callers_claim(
        store: MemoryRegistryStore, definitions: Definitions) -> None:
    app = create_registry_app(RegistryService(store),
                              Access(api_tokens=["ci:first", "second", "ops:third"]))
    with TestClient(app) as client:
        for secret, name in [("first", "a"), ("second", "b"), ("third", "c")]:
            definitions[0]["description"] = name
            response = client.post("/v1/apply", json={"definitions": definitions[:1]},
                                   headers={"Authorization": f"Bearer {secret}",
                                            "X-FP-Actor": "alice"})
            assert response.status_code == 200, response.text
        assert _actors(client) == ["ci", "token-2", "ops"]
        whole_entry = client.post("/v1/apply", json={"definitions": definitions[:1]},
                                  headers={"Authorization": "Bearer ci:first"})
        assert whole_entry.status_code == 401, "the bearer token is the secret alone"


def test_open_writes_are_anonymous_whatever_the_header_claims(
        store: MemoryRegistryStore, definitions: Definitions) -> None:
    with TestClient(create_registry_app(RegistryService(store))) as client:
        response = client.post("/v1/apply", json={"definitions": definitions},
                               headers={"X-FP-Actor": "ci"})
        assert response.status_code == 200, response.text
        assert set(_actors(client)) == {"anonymous"}


@pytest.fixture
def guarded_reads(store: MemoryRegistryStore, tmp_path: Path) -> Iterator[TestClient[Any]]:
    service = RegistryService(store)
    webhooks = Webhooks(service, MemoryDeliveryInbox(), WebhookConfig(
        secret="hush", cache_dir=tmp_path / "git-cache"))
    app = create_registry_app(service, Access(api_tokens=[f"ci:{TOKEN}"],
                                              read_tokens=["dashboards:peek", "look"]),
                              extra_handlers=webhooks.route_handlers)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("path", ["/v1/events", "/metrics", "/v1/webhooks/deliveries/d-1"])
def test_read_tokens_guard_the_log_the_deliveries_and_the_metrics(
        guarded_reads: TestClient[Any], path: str) -> None:
    refused = guarded_reads.get(path)
    assert (refused.status_code, refused.headers["content-type"]) == (
        401, "application/problem+json")
    wrong = guarded_reads.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    for secret in ("peek", "look", TOKEN):
        answered = guarded_reads.get(path, headers={"Authorization": f"Bearer {secret}"})
        assert answered.status_code in {200, 404}, answered.text  # no delivery d-1: 404
    assert guarded_reads.get("/v1/feature-views").status_code == 200, "definitions stay open"
    assert guarded_reads.get("/healthz").status_code == 200


def test_a_read_token_cannot_write(guarded_reads: TestClient[Any],
                                   definitions: Definitions) -> None:
    response = guarded_reads.post("/v1/apply", json={"definitions": definitions},
                                  headers={"Authorization": "Bearer peek"})
    assert response.status_code == 401


@pytest.mark.parametrize("path", [
    f"/v1/feature-views/user_clicks/versions/{MAX_VERSION + 1}",
    "/v1/feature-views/user_clicks/versions/0",
    f"/v1/entities/user/diff?from=1&to={MAX_VERSION + 1}",
    "/v1/sources/clicks/diff?from=0&to=1",
    "/v1/events?after=-1", "/v1/events?limit=0", "/v1/events?limit=10001",
    "/v1/events?after=9223372036854775808",
    "/v1/feature-views/User%20Clicks", "/v1/entities/a%00b/versions",
])
def test_parameters_out_of_bounds_are_refused_before_the_store(
        client: TestClient[Any], definitions: Definitions, path: str) -> None:
    apply(client, definitions)
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_a_rollback_beyond_any_version_is_refused(client: TestClient[Any]) -> None:
    response = client.post("/v1/feature-views/user_clicks/rollback",
                           json={"to_version": MAX_VERSION + 1}, headers=AUTHORIZED)
    assert response.status_code == 400
    assert "to_version" in response.json()["detail"]


def test_applies_are_rate_limited_per_identity(store: MemoryRegistryStore,
                                               definitions: Definitions) -> None:
    access = Access(api_tokens=["ci:one", "ops:two"], apply_rate_limit=RateLimit(2, 60_000))
    with TestClient(create_registry_app(RegistryService(store), access)) as client:
        def post(secret: str) -> Any:
            return client.post("/v1/apply", json={"definitions": definitions, "dry_run": True},
                               headers={"Authorization": f"Bearer {secret}"})

        assert [post("one").status_code for _ in range(2)] == [200, 200]
        limited = post("one")
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert 1 <= int(limited.headers["retry-after"]) <= 30
        assert limited.json()["code"] == "too_many_requests"
        rollback = client.post("/v1/feature-views/user_clicks/rollback",
                               json={"to_version": 1}, headers={"Authorization": "Bearer one"})
        assert rollback.status_code == 429, "a rollback spends from the same allowance"
        assert post("two").status_code == 200, "another identity has its own allowance"


def test_webhooks_are_rate_limited_per_client(store: MemoryRegistryStore,
                                              tmp_path: Path) -> None:
    service = RegistryService(store)
    webhooks = Webhooks(service, MemoryDeliveryInbox(), WebhookConfig(
        secret="hush", cache_dir=tmp_path / "git-cache"))
    app = create_registry_app(service, Access(webhook_rate_limit=RateLimit(3, 60_000)),
                              extra_handlers=webhooks.route_handlers)
    with TestClient(app) as client:
        statuses = [client.post("/v1/webhooks/github", content=b"{}").status_code
                    for _ in range(4)]
        assert statuses[:3] != [429] * 3 and statuses[3] == 429
        assert client.get("/v1/webhooks/deliveries/d-1").status_code == 404, \
            "reading deliveries is not limited"


def test_the_limit_refills_over_its_period() -> None:
    from registry.api.app import RateLimiter

    now = [0.0]
    limiter = RateLimiter(RateLimit(2, 10_000), clock=lambda: now[0])
    limiter.take("ci")
    limiter.take("ci")
    with pytest.raises(Exception, match="retry in 5 s") as refused:
        limiter.take("ci")
    assert refused.value.headers == {"Retry-After": "5"}  # type: ignore[attr-defined]
    now[0] = 5.0
    limiter.take("ci")
