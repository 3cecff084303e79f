"""The serving API end to end: a real registry over Postgres, real Redis, HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from core.domain.layout import namespace_of
from fp.local.base import free_port
from serving.app import create_serving_app
from serving.requests import MAX_BODY_BYTES
from tests.serving.conftest import FAST_REFRESH, OnlineStore, ThreadedServer, apply, wait_for
from tests.serving.definitions import ENTITY, SOURCE, feature_view, now_millis, on_demand_view

V1_VALUES = {"clicks_1h": "4", "amount_1h": "10.0", "quantity_1h": "7",
             "amount_avg_1d": "2.5", "last_page": '"cart"', "premium": "true"}


@dataclass
class Deployed:
    view: str
    ratios: str

    def ref(self, feature: str, version: int | None = None) -> str:
        return f"{self.view}{'' if version is None else f'@{version}'}:{feature}"


def served(serving: httpx.Client, view: str) -> Callable[[], bool]:
    return lambda: serving.get(f"/v1/features/{view}/anyone").status_code == 200


@pytest.fixture
def deployed(registry: httpx.Client, serving: httpx.Client, online_store: OnlineStore,
             unique: Callable[[str], str]) -> Deployed:
    """Version 1 of a view with two users materialised, active; an on-demand view over it."""
    view, ratios = unique("user_clicks"), unique("user_ratios")
    apply(registry, [ENTITY, SOURCE, feature_view(view), on_demand_view(ratios, view)])
    now = now_millis()
    online_store.write(view, namespace_of(1), "u1", V1_VALUES, now - 1000)
    online_store.write(view, namespace_of(1), "u2", {"clicks_1h": "0", "amount_1h": "0.0"},
                       now - 1000)
    online_store.switch(view, 1, {1: namespace_of(1)})
    wait_for(served(serving, view), f"{view} to be served")
    return Deployed(view, ratios)


def batch(serving: httpx.Client, body: dict[str, Any], status: int = 200) -> Any:
    response = serving.post("/v1/features/batch", json=body)
    assert response.status_code == status, response.text
    return response.json()


def problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.text


# --------------------------------------------------------------------------- single entity

def test_single_entity_is_served_typed_from_the_active_version(serving: httpx.Client,
                                                               deployed: Deployed) -> None:
    body = serving.get(f"/v1/features/{deployed.view}/u1").json()
    assert body["view"] == deployed.view and body["version"] == 1
    assert body["entity_key"] == "u1" and body["found"] is True
    assert body["features"] == {"clicks_1h": 4, "amount_1h": 10.0, "quantity_1h": 7,
                                "amount_avg_1d": 2.5, "last_page": "cart", "premium": True}
    assert set(body["statuses"].values()) == {"PRESENT"}
    assert isinstance(body["event_time"], int) and body["event_time"] > now_millis() - 60_000
    # JSON keeps the declared types apart: a long is not a double, a double is not a long.
    assert isinstance(body["features"]["clicks_1h"], int)
    assert isinstance(body["features"]["amount_1h"], float)


def test_an_entity_without_values_is_not_found(serving: httpx.Client,
                                               deployed: Deployed) -> None:
    body = serving.get(f"/v1/features/{deployed.view}/nobody").json()
    assert body["found"] is False and body["event_time"] is None
    assert set(body["features"].values()) == {None}
    assert set(body["statuses"].values()) == {"NOT_FOUND"}


def test_features_missing_from_a_found_entity_are_not_found(serving: httpx.Client,
                                                            deployed: Deployed) -> None:
    body = serving.get(f"/v1/features/{deployed.view}/u2").json()
    assert body["found"] is True
    assert body["features"]["clicks_1h"] == 0 and body["statuses"]["clicks_1h"] == "PRESENT"
    assert body["features"]["last_page"] is None
    assert body["statuses"]["last_page"] == "NOT_FOUND"


def test_stored_values_are_decoded_to_their_declared_types(
        serving: httpx.Client, deployed: Deployed, online_store: OnlineStore) -> None:
    # A double stored as 3 widens; a long stored as 7.0 is of the wrong kind (core.values),
    # like a string: an ERROR.
    online_store.write(deployed.view, namespace_of(1), "typed",
                       {"clicks_1h": "12", "amount_1h": "3", "quantity_1h": "7.0",
                        "amount_avg_1d": "1e2", "last_page": '"caf\\u00e9"',
                        "premium": "false"}, now_millis())
    body = serving.get(f"/v1/features/{deployed.view}/typed").json()
    features, statuses = body["features"], body["statuses"]
    assert features == {"clicks_1h": 12, "amount_1h": 3.0, "quantity_1h": None,
                        "amount_avg_1d": 100.0, "last_page": "café", "premium": False}
    assert isinstance(features["clicks_1h"], int) and isinstance(features["amount_1h"], float)
    assert statuses["quantity_1h"] == "ERROR"
    assert {s for name, s in statuses.items() if name != "quantity_1h"} == {"PRESENT"}


def test_values_older_than_the_ttl_are_expired(serving: httpx.Client, deployed: Deployed,
                                               online_store: OnlineStore) -> None:
    now = now_millis()
    three_hours = 3 * 3600 * 1000
    online_store.write(deployed.view, namespace_of(1), "old", V1_VALUES, now - three_hours)
    # The per-feature event time wins over __ts: only clicks_1h is older than the ttl here.
    online_store.write(deployed.view, namespace_of(1), "mixed", V1_VALUES, now,
                       feature_times={"clicks_1h": now - three_hours, "amount_1h": now})
    online_store.write(deployed.view, namespace_of(1), "legacy", V1_VALUES, now,
                       feature_times={"clicks_1h": now - three_hours, "amount_1h": now},
                       oldest_time=False)
    online_store.write(deployed.view, namespace_of(1), "fresh", V1_VALUES, now,
                       feature_times={"clicks_1h": now - 1000, "amount_1h": now})
    old = serving.get(f"/v1/features/{deployed.view}/old").json()
    assert old["found"] is True
    assert set(old["statuses"].values()) == {"EXPIRED"}
    assert set(old["features"].values()) == {None}
    for entity in ("mixed", "legacy"):
        mixed = serving.get(f"/v1/features/{deployed.view}/{entity}").json()
        assert mixed["statuses"]["clicks_1h"] == "EXPIRED"
        assert mixed["features"]["clicks_1h"] is None
        assert mixed["statuses"]["amount_1h"] == "PRESENT"
        assert mixed["features"]["amount_1h"] == 10.0
    # In one batch, rows judged from __ts_min and rows that need each feature's time.
    batch = serving.post("/v1/features/batch", json={
        "features": [f"{deployed.view}:clicks_1h", f"{deployed.view}:amount_1h"],
        "entities": [{"user_id": u} for u in ("fresh", "mixed", "old", "legacy", "fresh")]})
    assert batch.json()["statuses"] == [["PRESENT", "PRESENT"], ["EXPIRED", "PRESENT"],
                                        ["EXPIRED", "EXPIRED"], ["EXPIRED", "PRESENT"],
                                        ["PRESENT", "PRESENT"]]


def test_single_entity_of_an_on_demand_view_takes_request_fields_as_query(
        serving: httpx.Client, deployed: Deployed) -> None:
    body = serving.get(f"/v1/features/{deployed.ratios}/u1", params={"cart_value": "5"}).json()
    assert body["version"] == 1 and body["found"] is True
    assert body["features"]["amount_per_click"] == 2.5
    assert body["features"]["cart_vs_avg"] == 2.0
    missing = serving.get(f"/v1/features/{deployed.ratios}/u1")
    assert "cart_value" in problem(missing, 422)


# --------------------------------------------------------------------------- batch

def test_a_batch_of_1000_entities_comes_back_in_request_order(
        serving: httpx.Client, deployed: Deployed, online_store: OnlineStore) -> None:
    now = now_millis()
    with online_store.client.pipeline(transaction=False) as pipeline:
        for index in range(1000):
            pipeline.hset(f"fp:{deployed.view}:v1:user{index}",
                          mapping={"clicks_1h": index, "amount_1h": f"{index}.5", "__ts": now})
        pipeline.execute()
    online_store.views.add(deployed.view)
    entities = [{"user_id": f"user{index}"} for index in reversed(range(1000))]
    entities.append({"user_id": "stranger"})
    features = [deployed.ref("clicks_1h"), deployed.ref("amount_1h"), deployed.ref("last_page"),
                f"{deployed.ratios}:amount_per_click"]
    body = batch(serving, {"entities": entities, "features": features,
                           "request_context": {"cart_value": [1.0] * len(entities)}})
    assert body["versions"] == {deployed.view: 1, deployed.ratios: 1}
    assert len(body["results"]) == len(body["statuses"]) == 1001
    first, stranger = body["results"][0], body["results"][-1]
    assert first == {"user_id": "user999", deployed.ref("clicks_1h"): 999,
                     deployed.ref("amount_1h"): 999.5, deployed.ref("last_page"): None,
                     f"{deployed.ratios}:amount_per_click": 999.5 / 999}
    assert body["statuses"][0] == ["PRESENT", "PRESENT", "NOT_FOUND", "PRESENT"]
    assert [r["user_id"] for r in body["results"][:-1]] == [e["user_id"] for e in entities[:-1]]
    assert stranger[deployed.ref("clicks_1h")] is None
    # An on-demand value over missing inputs: the expression decides the value (its else
    # branch gives 0.0), the status says that its inputs were missing.
    assert stranger[f"{deployed.ratios}:amount_per_click"] == 0.0
    assert body["statuses"][-1] == ["NOT_FOUND"] * 4


def test_a_key_redis_refuses_to_read_is_503_and_the_next_reads_are_right(
        registry: httpx.Client, serving: httpx.Client, deployed: Deployed,
        online_store: OnlineStore, unique: Callable[[str], str]) -> None:
    """A WRONGTYPE reply in the first of two views' pipelined reads: the request fails whole,
    and the second view's replies, unread on that connection, never reach a later request."""
    other = unique("other_clicks")
    apply(registry, [feature_view(other)])
    for user, clicks in (("u1", "40"), ("u2", "20")):
        online_store.write(other, namespace_of(1), user, {"clicks_1h": clicks}, now_millis())
    online_store.switch(other, 1, {1: namespace_of(1)})
    wait_for(served(serving, other), f"{other} to be served")
    online_store.client.set(f"fp:{deployed.view}:v1:not-a-hash", "x")
    features = [deployed.ref("clicks_1h"), f"{other}:clicks_1h"]
    refused = serving.post("/v1/features/batch", json={
        "entities": [{"user_id": "u1"}, {"user_id": "not-a-hash"}] * 50, "features": features})
    assert "WRONGTYPE" in problem(refused, 503)
    for _ in range(3):
        body = batch(serving, {"entities": [{"user_id": "u2"}, {"user_id": "u1"}] * 50,
                               "features": features})
        assert [list(row.values())[1:] for row in body["results"]] == [[0, 20], [4, 40]] * 50


def test_on_demand_values_use_request_context_and_fail_per_value(
        serving: httpx.Client, deployed: Deployed) -> None:
    features = [f"{deployed.ratios}:{name}" for name in
                ("amount_per_click", "cart_vs_avg", "log_amount")]
    body = batch(serving, {"entities": [{"user_id": "u1"}, {"user_id": "u2"}],
                           "features": features,
                           "request_context": {"cart_value": [5.0, 7.0]}})
    u1, u2 = body["results"]
    assert (u1[features[0]], u1[features[1]]) == (2.5, 2.0)
    assert u1[features[2]] == pytest.approx(2.302585, rel=1e-5)
    assert body["statuses"][0] == ["PRESENT"] * 3
    # u2: amount 0 → log(0) fails for that value only; amount_avg_1d was never written.
    assert u2[features[0]] == 0.0 and u2[features[2]] is None
    assert body["statuses"][1] == ["PRESENT", "NOT_FOUND", "ERROR"]


def test_request_context_is_checked_against_the_request_schema(
        serving: httpx.Client, deployed: Deployed) -> None:
    base = {"entities": [{"user_id": "u1"}], "features": [f"{deployed.ratios}:cart_vs_avg"]}
    missing = serving.post("/v1/features/batch", json=base)
    assert "request_context.cart_value" in problem(missing, 422)
    mistyped = serving.post("/v1/features/batch",
                            json={**base, "request_context": {"cart_value": ["lots"]}})
    assert "request_context.cart_value[0]" in problem(mistyped, 422)
    short = serving.post("/v1/features/batch",
                         json={**base, "request_context": {"cart_value": [1.0, 2.0]}})
    assert "2 values for 1 entities" in problem(short, 422)
    unknown = serving.post("/v1/features/batch",
                           json={**base, "request_context": {"cart_value": 1, "coupon": 2}})
    assert "request_context.coupon" in problem(unknown, 422)


# --------------------------------------------------------------------------- versions

def test_pinned_versions_are_served_beside_the_active_one(
        registry: httpx.Client, serving: httpx.Client, deployed: Deployed,
        online_store: OnlineStore) -> None:
    extra = [{"name": "amount_max_1h", "aggregation": "max", "column": "amount",
              "window": "1h"}]
    apply(registry, [feature_view(deployed.view, extra=extra)])
    online_store.write(deployed.view, namespace_of(2), "u1",
                       {**V1_VALUES, "clicks_1h": "40", "amount_max_1h": "9.5"}, now_millis())
    online_store.switch(deployed.view, 2, {1: namespace_of(1), 2: namespace_of(2)})
    wait_for(lambda: serving.get(f"/v1/features/{deployed.view}/u1").json()["version"] == 2,
             "version 2 to become active")

    body = batch(serving, {"entities": [{"user_id": "u1"}],
                           "features": [deployed.ref("clicks_1h"), deployed.ref("clicks_1h", 1),
                                        deployed.ref("amount_max_1h")]})
    assert body["versions"] == {deployed.view: 2, f"{deployed.view}@1": 1}
    assert list(body["results"][0].values())[1:] == [40, 4, 9.5]

    pinned = serving.get(f"/v1/features/{deployed.view}/u1", params={"version": 1}).json()
    assert pinned["version"] == 1 and pinned["features"]["clicks_1h"] == 4
    assert "amount_max_1h" not in pinned["features"]
    # Version 1 has no amount_max_1h: asking for it pinned is a 422 naming it.
    unknown = serving.post("/v1/features/batch", json={
        "entities": [{"user_id": "u1"}], "features": [deployed.ref("amount_max_1h", 1)]})
    assert "amount_max_1h" in problem(unknown, 422)


def test_unknown_views_and_versions_are_404(registry: httpx.Client, serving: httpx.Client,
                                            deployed: Deployed,
                                            unique: Callable[[str], str]) -> None:
    problem(serving.get("/v1/features/no_such_view/u1"), 404)
    problem(serving.get(f"/v1/features/{deployed.view}/u1", params={"version": 7}), 404)
    for feature in ("no_such_view:x", deployed.ref("clicks_1h", 7)):
        problem(serving.post("/v1/features/batch",
                             json={"entities": [{"user_id": "u1"}], "features": [feature]}), 404)
    # Registered but never deployed: no version map, nothing serveable yet.
    undeployed = unique("undeployed")
    apply(registry, [feature_view(undeployed)])
    wait_for(lambda: "not been deployed" in serving.get(f"/v1/features/{undeployed}/u1").text,
             "the registry change to be seen")
    problem(serving.get(f"/v1/features/{undeployed}/u1"), 404)


@pytest.mark.parametrize(("body", "named"), [
    ({"features": ["{view}:no_such_feature"]}, "no_such_feature"),
    ({"features": ["{view}-clicks_1h"]}, "features[0]"),
    ({"features": ["{view}:clicks_1h", "{view}:clicks_1h"]}, "requested twice"),
    ({"features": []}, "at least one feature"),
    ({"entities": [{"userid": "u1"}]}, "missing key columns user_id"),
    ({"entities": [{"user_id": "u1", "page": "x"}]}, "unknown columns page"),
    ({"entities": [{"user_id": 1.5}]}, "key column user_id must be a string or an integer"),
    ({"entities": [{"user_id": True}]}, "entities[0]"),
    ({"entities": "u1"}, "entities"),
    ({"colour": "blue"}, "colour"),
    ({"entities": [{"user_id": "u"}] * 10_001}, "at most 10000"),
])
def test_malformed_batches_are_422_naming_the_problem(serving: httpx.Client,
                                                      deployed: Deployed,
                                                      body: dict[str, Any], named: str) -> None:
    request: dict[str, Any] = {"entities": [{"user_id": "u1"}],
                               "features": ["{view}:clicks_1h"], **body}
    request["features"] = [f.format(view=deployed.view) for f in request["features"]]
    assert named in problem(serving.post("/v1/features/batch", json=request), 422)


def test_integer_entity_keys_are_keyed_by_their_text(
        serving: httpx.Client, deployed: Deployed, online_store: OnlineStore) -> None:
    online_store.write(deployed.view, namespace_of(1), "42", V1_VALUES, now_millis())
    body = batch(serving, {"entities": [{"user_id": 42}],
                           "features": [deployed.ref("clicks_1h")]})
    assert body["results"] == [{"user_id": 42, deployed.ref("clicks_1h"): 4}]


def test_bad_single_entity_requests_are_422(serving: httpx.Client, deployed: Deployed) -> None:
    assert "version" in problem(
        serving.get(f"/v1/features/{deployed.view}/u1", params={"version": "latest"}), 422)
    assert "holds 2 key values" in problem(
        serving.get(f"/v1/features/{deployed.view}/a%7Cb"), 422)
    assert "request_context.colour" in problem(
        serving.get(f"/v1/features/{deployed.view}/u1", params={"colour": "red"}), 422)


def test_the_registry_refuses_a_malicious_on_demand_expression(
        registry: httpx.Client, deployed: Deployed, unique: Callable[[str], str]) -> None:
    for expression in ("__import__('os').system('touch /tmp/pwned')",
                       "amount_1h.__class__.__mro__", "[x for x in ().__class__.__bases__]",
                       "eval('1')", "open('/etc/passwd')", "'x' * 1000000000",
                       "-" * 100 + "amount_1h"):
        evil = on_demand_view(unique("evil"), deployed.view)
        evil["features"] = [{"name": "boom", "type": "double", "expression": expression}]
        response = registry.post("/v1/apply", json={"definitions": [evil]})
        assert response.status_code == 422, (expression, response.text)
        assert "expression" in response.text


# --------------------------------------------------------------------------- operations

def test_health_and_metrics(serving: httpx.Client, deployed: Deployed) -> None:
    health = serving.get("/healthz").json()
    assert health["status"] == "ok" and health["catalog_loaded"] is True
    serving.get(f"/v1/features/{deployed.view}/u1")
    serving.get("/v1/features/no_such_view/u1")
    text = serving.get("/metrics").text
    single = 'fp_serving_requests_total{method="GET",' \
             'path="/v1/features/{view}/{entity_key}",status_code="%d"}'
    assert single % 200 in text and single % 404 in text
    # The batch endpoint: a success and an error, both answered on its short path.
    batched = 'fp_serving_requests_total{method="POST",path="/v1/features/batch",' \
              'status_code="%d"} '
    counted = {status: _counter(text, batched % status) for status in (200, 422)}
    batch(serving, {"entities": [{"user_id": "u1"}], "features": [deployed.ref("clicks_1h")]})
    batch(serving, {"entities": [{"user_id": "u1"}], "features": ["nope"]}, status=422)
    text = serving.get("/metrics").text
    assert {status: _counter(text, batched % status) for status in (200, 422)} == {
        status: count + 1 for status, count in counted.items()}
    assert "fp_serving_request_duration_seconds_bucket" in text
    assert 'fp_serving_feature_values_total{status="PRESENT"}' in text


def _counter(metrics: str, series: str) -> float:
    line = next((line for line in metrics.splitlines() if line.startswith(series)), None)
    return 0.0 if line is None else float(line[len(series):])


def test_a_batch_body_over_the_limit_is_413(serving: httpx.Client, deployed: Deployed) -> None:
    padding = "x" * MAX_BODY_BYTES
    response = serving.post("/v1/features/batch", content=f'{{"features":[],"p":"{padding}"}}',
                            headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text[:200]
    assert batch(serving, {"entities": [{"user_id": "u1"}],
                           "features": [deployed.ref("clicks_1h")]})["results"][0][
        deployed.ref("clicks_1h")] == 4


def test_an_unreachable_online_store_is_503_not_404(registry_url: str,
                                                    deployed: Deployed) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with ThreadedServer(create_serving_app(registry_url, nowhere, intervals=FAST_REFRESH)) \
            as server, httpx.Client(base_url=server.url, timeout=30) as client:
        wait_for(lambda: client.get("/healthz").json()["catalog_loaded"], "the registry read")
        assert "Redis" in problem(client.get(f"/v1/features/{deployed.view}/u1"), 503)
        batched = client.post("/v1/features/batch", json={
            "entities": [{"user_id": "u1"}], "features": [deployed.ref("clicks_1h")]})
        assert "Redis" in problem(batched, 503)  # answered on the short path
        assert batched.json()["code"] == "dependency_unavailable"
        assert client.get("/healthz").json()["version_maps_loaded"] is False
