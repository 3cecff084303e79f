"""The registry REST API over real PostgreSQL (docs/reference.md, "Registry API")."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from core.errors import AuthenticationError, error_class
from fp.cli import main
from fp.local.base import answers_ok, free_port, wait_until
from registry.api.app import MAX_VERSION, Access, create_registry_app
from registry.client import RegistryClient
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore
from tests.reference_definitions import reference_definitions

Definitions = list[dict[str, Any]]


@pytest.fixture
def definitions() -> Definitions:
    return reference_definitions()


@pytest.fixture
def client(store: PostgresRegistryStore) -> Iterator[TestClient[Any]]:
    with TestClient(create_registry_app(RegistryService(store))) as test_client:
        yield test_client


def apply(client: TestClient[Any], definitions: Definitions, **extra: Any) -> Any:
    response = client.post("/v1/apply", json={"definitions": definitions, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def view_change(body: Any) -> dict[str, Any]:
    return next(c for c in body["changes"] if c["name"] == "user_clicks")


def test_first_apply_creates_version_one_of_each(client: TestClient[Any],
                                                 definitions: Definitions) -> None:
    body = apply(client, definitions)
    assert [(c["action"], c["to_version"]) for c in body["changes"]] == [("create", 1)] * 4
    assert client.get("/v1/feature-views/user_clicks").json()["latest_version"] == 1
    assert client.get("/v1/entities/user").json()["active_version"] == 1


def test_reapplying_identical_definitions_writes_nothing(client: TestClient[Any],
                                                         definitions: Definitions) -> None:
    apply(client, definitions)
    events_before = client.get("/v1/events").json()["events"]
    reformatted = json.loads(json.dumps(list(reversed(definitions)), sort_keys=True))
    body = apply(client, reformatted)
    assert {c["action"] for c in body["changes"]} == {"unchanged"}
    assert client.get("/v1/events").json()["events"] == events_before


def _change_window(d: Definitions) -> None:
    d[2]["features"][0]["window"] = "2h"


def _add_feature(d: Definitions) -> None:
    d[2]["features"].append({"name": "amount_max_1h", "aggregation": "max", "column": "amount",
                             "window": "1h"})


def _change_description(d: Definitions) -> None:
    d[2]["description"] = "Clicks and spend per user"


@pytest.mark.parametrize(("edit", "change_class", "diff"), [
    (_change_window, "breaking",
     [{"path": "features.clicks_1h.window", "op": "changed", "from": "1h", "to": "2h"}]),
    (_add_feature, "additive",
     [{"path": "features.amount_max_1h", "op": "added",
       "to": {"name": "amount_max_1h", "aggregation": "max", "column": "amount",
              "window": "1h"}}]),
    (_change_description, "metadata",
     [{"path": "description", "op": "changed", "from": "Clicks per user",
       "to": "Clicks and spend per user"}]),
])
def test_a_change_registers_version_two_with_its_class_and_diff(
        client: TestClient[Any], definitions: Definitions,
        edit: Callable[[Definitions], None], change_class: str, diff: list[Any]) -> None:
    apply(client, definitions)
    edit(definitions)
    change = view_change(apply(client, definitions))
    assert (change["action"], change["from_version"], change["to_version"]) == ("update", 1, 2)
    assert (change["change_class"], change["diff"]) == (change_class, diff)

    served = client.get("/v1/feature-views/user_clicks/diff", params={"from": 1, "to": 2}).json()
    assert (served["change_class"], served["diff"]) == (change_class, diff)
    versions = client.get("/v1/feature-views/user_clicks/versions").json()["versions"]
    assert [(v["version"], v["change_class"]) for v in versions] == [(1, None), (2, change_class)]
    assert versions[1]["provenance"]["actor"] == "anonymous"
    assert client.get("/v1/feature-views/user_clicks/versions/1").json()["spec"]["features"][0][
        "window"] == "1h"


def test_dry_run_reports_changes_and_writes_nothing(client: TestClient[Any],
                                                    definitions: Definitions) -> None:
    body = apply(client, definitions, dry_run=True)
    assert {c["action"] for c in body["changes"]} == {"create"}
    assert client.get("/v1/events").json()["events"] == []


def test_events_carry_provenance_and_page_by_position(client: TestClient[Any],
                                                      definitions: Definitions) -> None:
    client.post("/v1/apply", json={"definitions": definitions, "message": "first"},
                headers={"X-FP-Actor": "alice"})
    first = client.get("/v1/events", params={"after": 0, "limit": 3}).json()
    rest = client.get("/v1/events", params={"after": first["last_position"]}).json()
    events = first["events"] + rest["events"]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert len(events) == 4
    assert {e["type"] for e in events} == {"DefinitionRegistered"}
    assert all(e["metadata"] == {"actor": "anonymous", "message": "first"} for e in events), \
        "open writes are anonymous: X-FP-Actor is a claim, not an identity"
    assert client.get("/v1/events", params={"after": rest["last_position"]}).json() == {
        "events": [], "last_position": rest["last_position"]}


def _without(key: str) -> Callable[[Definitions], None]:
    return lambda d: d[2].pop(key)


INVALID = {
    "unknown key": (lambda d: d[2].update(colour="red"),
                    "definitions[2].colour", "unknown key"),
    "bad name": (lambda d: d[2].update(name="UserClicks"), "definitions[2].name",
                 "not a valid name"),
    "unknown entity": (lambda d: d[2].update(entities=["merchant"]),
                       "definitions[2].entities[0]", "unknown entity 'merchant'"),
    "unknown source": (lambda d: d[2].update(source="views"), "definitions[2].source",
                       "unknown source 'views'"),
    "missing column": (lambda d: d[2]["features"][1].update(column="price"),
                       "definitions[2].features[1].column", "'price' is not a field"),
    "wrong column type": (lambda d: d[2]["features"][1].update(column="page"),
                          "definitions[2].features[1].column", "needs a numeric column"),
    "bad duration": (lambda d: d[2]["features"][0].update(window="an hour"),
                     "definitions[2].features[0].window", "is not a duration"),
    "slide not dividing": (lambda d: d[2]["features"][2].update(slide="7h"),
                           "definitions[2].features[2].slide", "does not divide"),
    "unknown expression name": (
        lambda d: d[3]["features"][0].update(expression="amount_2h / clicks_1h"),
        "definitions[3].features[0].expression", "amount_2h"),
    "unsafe expression": (
        lambda d: d[3]["features"][0].update(expression="__import__('os').system('id')"),
        "definitions[3].features[0].expression", "not allowed"),
    "missing features": (_without("features"), "definitions[2].features", "is required"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_definitions_are_refused_naming_the_field_and_nothing_is_written(
        client: TestClient[Any], definitions: Definitions, case: str) -> None:
    apply(client, definitions)
    events_before = client.get("/v1/events").json()["events"]
    edit, path, message = INVALID[case]
    broken = copy.deepcopy(definitions)
    broken[0]["description"] = "a valid change that must not be written either"
    edit(broken)
    response = client.post("/v1/apply", json={"definitions": broken})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    assert any(e["path"] == path and message in e["message"] for e in errors), errors
    assert client.get("/v1/events").json()["events"] == events_before


def test_removing_a_column_a_registered_view_uses_is_refused(client: TestClient[Any],
                                                            definitions: Definitions) -> None:
    apply(client, definitions)
    source = copy.deepcopy(definitions[1])
    source["schema"] = [f for f in source["schema"] if f["name"] != "amount"]
    response = client.post("/v1/apply", json={"definitions": [source]})
    assert response.status_code == 422
    assert {e["definition"] for e in response.json()["errors"]} >= {"feature_view:user_clicks"}


@pytest.mark.parametrize(("body", "status", "detail"), [
    (b"{not json", 400, "JSON is malformed"),
    (b"[]", 400, "Expected `object`, got `array`"),
    (b'{"definitions": [], "force": true}', 400, "unknown field `force`"),
    (b'{"definitions": {}}', 400, "definitions: Expected `array`, got `object`"),
    (b'{"definitions": [], "message": 3}', 400, "message: Expected `str | null`, got `int`"),
])
def test_malformed_apply_bodies_get_a_problem(client: TestClient[Any], body: bytes,
                                              status: int, detail: str) -> None:
    response = client.post("/v1/apply", content=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(("body", "detail"), [
    (b'{"to_version": 0}', "to_version: Expected `int` >= 1"),
    (b'{"to_version": 1, "force": true}', "unknown field `force`"),
    (b"{}", "missing required field `to_version`"),
])
def test_malformed_rollback_bodies_get_a_problem(client: TestClient[Any], body: bytes,
                                                 detail: str) -> None:
    response = client.post("/v1/feature-views/user_clicks/rollback", content=body)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


def test_unknown_keys_of_a_definition_are_refused_by_the_domain(
        client: TestClient[Any], definitions: Definitions) -> None:
    definitions[0]["colour"] = "blue"
    response = client.post("/v1/apply", json={"definitions": definitions})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_definition"
    assert any("colour" in e["message"] or "colour" in e["path"]
               for e in response.json()["errors"])


@pytest.mark.parametrize("path", [
    "/v1/feature-views/nope", "/v1/entities/nope", "/v1/sources/nope",
    "/v1/on-demand-feature-views/nope", "/v1/feature-views/user_clicks/versions/9",
])
def test_unknown_names_and_versions_are_404(client: TestClient[Any], definitions: Definitions,
                                            path: str) -> None:
    apply(client, definitions)
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "nope" in response.json()["detail"] or "no version 9" in response.json()["detail"]


def test_writes_need_a_valid_token_when_tokens_are_configured(
        store: PostgresRegistryStore, definitions: Definitions) -> None:
    app = create_registry_app(RegistryService(store), Access(api_tokens=["s3cret", "other"]))
    with TestClient(app) as client:
        body = {"definitions": definitions}
        missing = client.post("/v1/apply", json=body)
        assert missing.status_code == 401
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["code"] == "unauthorized"
        assert error_class(missing.json()["code"]) is AuthenticationError
        wrong = client.post("/v1/apply", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert client.get("/v1/events").json()["events"] == []
        right = client.post("/v1/apply", json=body, headers={"Authorization": "Bearer other"})
        assert right.status_code == 200
        assert client.get("/v1/feature-views").status_code == 200


def test_openapi_health_and_metrics_are_served(client: TestClient[Any]) -> None:
    document = client.get("/schema/openapi.json").json()
    paths = document["paths"]
    assert {"/v1/apply", "/v1/events", "/v1/feature-views/{name}/diff"} <= set(paths)
    schemas = document["components"]["schemas"]
    for path, fields in [("/v1/apply", {"definitions", "dry_run", "message"}),
                         ("/v1/feature-views/{name}/rollback", {"to_version"})]:
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True
        reference = body["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[reference.rsplit("/", 1)[-1]]
        assert set(schema["properties"]) == fields
    assert schemas["ApplyRequest"]["required"] == ["definitions"]
    assert schemas["ApplyRequest"]["properties"]["definitions"]["type"] == "array"
    assert client.get("/healthz").json() == {"status": "ok"}
    client.get("/v1/feature-views")
    assert "fp_registry_requests_total" in client.get("/metrics").text


@pytest.mark.parametrize("path", [
    f"/v1/feature-views/user_clicks/versions/{MAX_VERSION + 1}",
    f"/v1/feature-views/user_clicks/versions/{2**63}",
    f"/v1/entities/user/diff?from={MAX_VERSION + 1}&to=1",
    f"/v1/sources/clicks/diff?from=1&to={MAX_VERSION + 1}",
])
def test_numbers_beyond_postgres_integers_are_a_400_not_a_database_error(
        client: TestClient[Any], definitions: Definitions, path: str) -> None:
    apply(client, definitions)
    response = client.get(path)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    rollback = client.post("/v1/feature-views/user_clicks/rollback",
                           json={"to_version": MAX_VERSION + 1})
    assert rollback.status_code == 400, rollback.text


def test_the_registry_refuses_to_start_off_loopback_without_tokens(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        database_url: str) -> None:
    monkeypatch.setenv("FP_DATABASE_URL", database_url)
    monkeypatch.delenv("FP_API_TOKENS", raising=False)
    monkeypatch.delenv("FP_OPEN_WRITES", raising=False)
    assert main(["registry", "serve", "--host", "0.0.0.0", "--port", str(free_port())]) == 1
    error = capsys.readouterr().err
    assert "refusing to serve the registry on 0.0.0.0" in error
    assert "FP_API_TOKENS" in error and "FP_OPEN_WRITES=true" in error


def test_a_token_named_in_fp_api_tokens_is_the_recorded_actor_end_to_end(
        store: PostgresRegistryStore, database_url: str, definitions: Definitions,
        tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FP_DATABASE_URL": database_url, "FP_API_TOKENS": "ci:s3cret"}
    with (tmp_path / "registry.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "fp.cli", "registry", "serve",
                                   "--port", str(port)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(partial(answers_ok, f"{url}/healthz"), 30, "the registry server")
            # The CLI's FP_API_TOKEN may be the whole entry: the client sends its secret.
            client = RegistryClient(url, token="ci:s3cret")
            client.apply(definitions)
            events = client.get("/v1/events")["events"]
            client.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    assert {e["metadata"]["actor"] for e in events} == {"ci"}
