"""The registry API over the in-memory store: whole flows in milliseconds.

The store is held to the PostgreSQL store's behaviour by tests/contracts, so these flows prove
the service and its HTTP layer; tests/integration/test_registry_api.py runs the same API on
the database.
"""

from __future__ import annotations

from collections.abc import Iterator
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
from registry.api.app import create_registry_app
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from tests.reference_definitions import reference_definitions

TOKEN = "s3cret"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}", "X-FP-Actor": "alice"}
Definitions = list[dict[str, Any]]


@pytest.fixture
def definitions() -> Definitions:
    return reference_definitions()


@pytest.fixture
def store() -> MemoryRegistryStore:
    return MemoryRegistryStore()


@pytest.fixture
def client(store: MemoryRegistryStore) -> Iterator[TestClient[Any]]:
    app = create_registry_app(RegistryService(store), api_tokens=[TOKEN])
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
    assert versions[1]["provenance"] == {"actor": "alice"}
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
    assert (requested.data["to_version"], requested.metadata["actor"]) == (1, "alice")
    assert client.post("/v1/feature-views/user_clicks/rollback", json={"to_version": 9},
                       headers=AUTHORIZED).status_code == 404


def test_events_page_by_position(client: TestClient[Any], definitions: Definitions) -> None:
    apply(client, definitions, message="first")
    first = client.get("/v1/events", params={"after": 0, "limit": 3}).json()
    rest = client.get("/v1/events", params={"after": first["last_position"]}).json()
    events = first["events"] + rest["events"]
    assert [e["position"] for e in events] == [1, 2, 3, 4]
    assert all(e["metadata"] == {"actor": "alice", "message": "first"} for e in events)
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
