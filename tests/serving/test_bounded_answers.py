"""An answer is bounded by its request: a request-context string, the cells of a batch, each
string an on-demand expression yields and all of them in one answer have caps, and a request
over one is answered 413 naming it — by the batch endpoint's short path, once, without
reading the online store again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from core.errors import LimitExceededError
from registry.feed import RegistryEvents
from serving.app import BATCH_PATH, with_fast_batch_path
from serving.catalog import DefinitionHistory
from serving.requests import (
    MAX_FEATURES_PER_REQUEST,
    MAX_ON_DEMAND_CHARS_PER_RESPONSE,
    MAX_ON_DEMAND_STRING_CHARS,
    MAX_REQUEST_STRING_CHARS,
    MAX_RESPONSE_CELLS,
    decode_batch_request,
)
from serving.service import FeatureService
from sinks.online_memory import InMemoryOnlineStore
from sinks.online_store import HashRead, RawRow, T, VersionMap
from tests.serving.definitions import ENTITY, SOURCE, feature_view

UNSET_PAGE = 'coalesce(last_page, "")'
"""The empty string: no user has a page in these tests."""
NOTES: dict[str, Any] = {
    "kind": "on_demand_feature_view", "name": "notes", "inputs": ["clicks"],
    "request_schema": [{"name": "note", "type": "string"}],
    "features": [  # each reads an input feature, so that the view's rows are keyed by user
        {"name": "echo", "type": "string", "expression": f"{UNSET_PAGE} + upper(note)"},
        {"name": "twice", "type": "string", "expression": f"{UNSET_PAGE} + note + note"},
        {"name": "eleven_times", "type": "string",
         "expression": " + ".join([UNSET_PAGE, *["note"] * 11])},
    ],
}


class CountingStore(InMemoryOnlineStore):
    """Counts the round trips a request makes to the online store."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read_hashes(self, reads: Sequence[HashRead],
                          each: Callable[[int, list[RawRow]], T]) -> list[T]:
        self.reads += 1
        return await super().read_hashes(reads, each)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def service(store: CountingStore) -> Iterator[FeatureService]:
    """Serving over the in-memory store, its definitions and version maps loaded (nothing is
    read from a registry)."""
    history = DefinitionHistory()
    for definition in (ENTITY, SOURCE, feature_view("clicks"), NOTES):
        history.record(definition["kind"], definition["name"], 1, definition)
    history.mark_loaded()
    registry = RegistryEvents("http://127.0.0.1:1", history)
    served = FeatureService(registry, store, history)
    served.versions.apply({"clicks": VersionMap(1, {1: "v1"})})
    served.versions.loaded = True
    yield served
    asyncio.run(registry.close())


class CountingAnswers:
    """The serving app's ``answer_batch``, counting its runs."""

    def __init__(self, service: FeatureService) -> None:
        self.service = service
        self.runs = 0

    async def __call__(self, body: bytes) -> bytes:
        self.runs += 1
        return msgspec.json.encode(await self.service.batch(decode_batch_request(body)))


def batch_body(entities: int, features: list[str], note: object) -> dict[str, Any]:
    return {"entities": [{"user_id": f"u{n}"} for n in range(entities)], "features": features,
            "request_context": {"note": note}}


def answer(service: FeatureService, body: dict[str, Any]) -> tuple[int, Any, int, int]:
    """(status, body, runs of the batch handler, bytes of the answer) through the short path."""
    answers = CountingAnswers(service)
    with TestClient(with_fast_batch_path(Litestar(route_handlers=[]), answers)) as client:
        response = client.post(BATCH_PATH, json=body)
    return response.status_code, response.json(), answers.runs, len(response.content)


def test_a_long_scalar_over_10000_rows_is_refused_not_multiplied(
        service: FeatureService, store: CountingStore) -> None:
    # The request: 0.21 MB asking for 10,000 copies of a 10,000-character string.
    body = batch_body(10_000, ["notes:echo"], "x" * 10_000)
    status, problem, runs, size = answer(service, body)
    assert (status, problem["code"], runs, store.reads) == (413, "limit_exceeded", 1, 0)
    assert f"the limit is {MAX_REQUEST_STRING_CHARS} characters per request-context string" \
        in problem["detail"]
    assert "request_context.note" in problem["detail"] and size < 1_000


def test_request_context_strings_up_to_the_cap_are_served(service: FeatureService) -> None:
    status, answered, _, _ = answer(service, batch_body(2, ["notes:echo"],
                                                        ["a" * MAX_REQUEST_STRING_CHARS, "b"]))
    assert status == 200
    assert [row["notes:echo"] for row in answered["results"]] == \
        ["A" * MAX_REQUEST_STRING_CHARS, "B"]


def test_a_single_entity_read_checks_its_query_strings_too(service: FeatureService) -> None:
    with pytest.raises(LimitExceededError, match=r"request_context\.note"):
        asyncio.run(service.single("notes", "u1", None,
                                   {"note": "x" * (MAX_REQUEST_STRING_CHARS + 1)}))


def test_a_batch_over_the_response_cells_is_refused_before_anything_is_read() -> None:
    entities = MAX_RESPONSE_CELLS // MAX_FEATURES_PER_REQUEST + 1
    body = batch_body(entities, [f"v{n}:f" for n in range(MAX_FEATURES_PER_REQUEST)], None)
    with pytest.raises(LimitExceededError, match=f"the limit is {MAX_RESPONSE_CELLS} cells"):
        decode_batch_request(msgspec.json.encode(body))
    within = batch_body(entities - 1, [f"v{n}:f" for n in range(MAX_FEATURES_PER_REQUEST)], None)
    assert len(decode_batch_request(msgspec.json.encode(within)).entities) == entities - 1


def test_an_on_demand_string_over_its_cap_is_refused(
        service: FeatureService, store: CountingStore) -> None:
    note = "n" * (MAX_ON_DEMAND_STRING_CHARS // 10)  # eleven of them are over the cap
    status, problem, runs, _ = answer(service, batch_body(3, ["notes:eleven_times"], note))
    assert (status, problem["code"], runs, store.reads) == (413, "limit_exceeded", 1, 1)
    assert f"notes:eleven_times yielded a string of {11 * len(note)} characters for entity 0" \
        in problem["detail"]
    assert f"the limit is {MAX_ON_DEMAND_STRING_CHARS} characters per on-demand string" \
        in problem["detail"]


def test_on_demand_strings_over_the_answers_total_are_refused(
        service: FeatureService, store: CountingStore) -> None:
    # Every value within its own cap, 2,000 characters at each of 10,000 rows: 20 M in all.
    status, problem, runs, size = answer(
        service, batch_body(10_000, ["notes:twice"], "t" * MAX_REQUEST_STRING_CHARS))
    assert (status, problem["code"], runs, store.reads) == (413, "limit_exceeded", 1, 1)
    assert f"the limit is {MAX_ON_DEMAND_CHARS_PER_RESPONSE} characters of on-demand " \
        "strings per response" in problem["detail"]
    assert "entity 5000 " in problem["detail"] and size < 1_000
