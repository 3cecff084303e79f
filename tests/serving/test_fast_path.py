"""The batch endpoint's short path answers every batch read itself, errors included, exactly
as the Litestar app would, and runs each request once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, Request, Response, post
from litestar.testing import TestClient

from core.errors import InfrastructureError, NotFoundError
from core.problems import EXCEPTION_HANDLERS
from serving.app import BATCH_PATH, with_fast_batch_path
from serving.metrics import REQUESTS, request_metrics
from serving.requests import MAX_BODY_BYTES, decode_batch_request

FAILURES: dict[str, Exception] = {
    "missing:x": NotFoundError("feature view 'missing' is not registered"),
    "down:x": InfrastructureError("Redis at redis://127.0.0.1:1/0 is unreachable"),
    "bug:x": RuntimeError("a defect"),
}


class CountingBatch:
    """Stands in for the batch handler's ``answer_batch``: decodes the body as it does, then
    reads the online store, which fails as the first feature says; counts every run and
    every store read."""

    def __init__(self) -> None:
        self.runs = 0
        self.store_reads = 0

    async def __call__(self, body: bytes) -> bytes:
        self.runs += 1
        request = decode_batch_request(body)
        self.store_reads += 1
        failure = FAILURES.get(request.features[0]) if request.features else None
        if failure is not None:
            raise failure
        return b'{"results": []}'


@pytest.fixture
def answer() -> CountingBatch:
    return CountingBatch()


def litestar_app(answer_batch: CountingBatch) -> Litestar:
    """The serving app's composition for its batch endpoint: the same handler body,
    middleware, exception handlers and body limit."""

    @post(BATCH_PATH, status_code=200)
    async def batch(request: Request[Any, Any, Any]) -> Response[bytes]:
        return Response(await answer_batch(await request.body()), media_type="application/json")

    return Litestar(route_handlers=[batch], middleware=[request_metrics],
                    exception_handlers=EXCEPTION_HANDLERS, request_max_body_size=MAX_BODY_BYTES)


@pytest.fixture
def clients(answer: CountingBatch) -> Iterator[tuple[TestClient[Any], TestClient[Any]]]:
    """(the short path in front of the app, the app alone)"""
    app = litestar_app(answer)
    with TestClient(with_fast_batch_path(app, answer)) as fast, TestClient(app) as slow:
        yield fast, slow


def _body(features: list[str]) -> dict[str, Any]:
    return {"entities": [{"user_id": "u1"}], "features": features}


CASES = [
    pytest.param({"json": _body(["missing:x"])}, 404, "not_found", id="not-found"),
    pytest.param({"json": {"entities": "u1", "features": []}}, 422, "invalid_feature_request",
                 id="invalid"),
    pytest.param({"content": b"{not json"}, 400, "malformed_body", id="bad-json"),
    pytest.param({"json": _body(["down:x"])}, 503, "dependency_unavailable", id="redis-down"),
    pytest.param({"content": b" " * (MAX_BODY_BYTES + 1)}, 413, "request_entity_too_large",
                 id="too-large"),
    pytest.param({"json": _body(["bug:x"])}, 500, "internal_server_error", id="defect"),
]


@pytest.mark.parametrize(("request_", "status", "code"), CASES)
def test_errors_are_answered_once_with_the_apps_problem(
        clients: tuple[TestClient[Any], TestClient[Any]], answer: CountingBatch,
        request_: dict[str, Any], status: int, code: str) -> None:
    fast, slow = clients
    fast_response = fast.post(BATCH_PATH, **request_)
    runs, store_reads = answer.runs, answer.store_reads
    assert runs <= 1 and store_reads <= 1  # never replayed: one store timeout, not two
    if status != 413:
        assert runs == 1
    slow_response = slow.post(BATCH_PATH, **request_)
    assert fast_response.status_code == slow_response.status_code == status
    assert fast_response.headers["content-type"] == slow_response.headers["content-type"] \
        == "application/problem+json"
    assert fast_response.json() == slow_response.json()
    assert fast_response.json()["code"] == code
    assert answer.runs - runs == runs  # the app ran it exactly as often as the short path


def test_a_success_is_answered_on_the_short_path(
        clients: tuple[TestClient[Any], TestClient[Any]], answer: CountingBatch) -> None:
    fast, _ = clients
    response = fast.post(BATCH_PATH, json=_body(["fine:x"]))
    assert (response.status_code, response.json(), answer.runs) == (200, {"results": []}, 1)
    assert response.headers["content-type"] == "application/json"


def test_both_paths_are_counted_in_the_metrics(
        clients: tuple[TestClient[Any], TestClient[Any]]) -> None:
    fast, slow = clients

    def count(status: int) -> float:
        value: float = REQUESTS.labels("POST", BATCH_PATH, str(status))._value.get()
        return value

    before = {status: count(status) for status in (200, 404)}
    fast.post(BATCH_PATH, json=_body(["fine:x"]))
    fast.post(BATCH_PATH, json=_body(["missing:x"]))
    slow.post(BATCH_PATH, json=_body(["missing:x"]))
    assert {status: count(status) - before[status] for status in (200, 404)} == {200: 1, 404: 2}
