"""The ingest API on its in-memory twins (event log, idempotency keys) and a real registry
app: every violation refused with its reason, both modes, every status, dead letters,
tokens, idempotent retries and a broker outage.  tests/integration/test_ingest.py runs the
same API on the real broker, Redis and registry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from core.domain.events import Provenance
from ingest.app import REPLAYED_HEADER, create_ingest_app
from ingest.batches import MAX_EVENT_BYTES, MAX_EVENTS, NDJSON
from ingest.contracts import SourceContracts
from ingest.event_log import MemoryEventLog
from ingest.idempotency import MemoryIdempotencyStore
from ingest.service import IngestService
from registry.api.app import Access, create_registry_app
from registry.feed import RegistryEvents
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from tests.payments import SCHEMA

TOPIC, DLQ = "payments", "payments.dlq"
PATH = "/v1/ingest/payments"
TS = 1_790_000_000_000
SOURCE = {"kind": "source", "name": "payments", "topic": TOPIC, "timestamp_field": "ts",
          "schema": SCHEMA}
WRITER = "ci:s3cret"


def payment(**fields: Any) -> dict[str, Any]:
    return {"account_id": "a1", "region": "eu", "amount": 12.5, "kind": "a", "ts": TS, **fields}


@dataclass
class Door:
    client: TestClient[Any]
    log: MemoryEventLog
    keys: MemoryIdempotencyStore
    registry: RegistryService

    def post(self, body: Any, *, headers: dict[str, str] | None = None,
             **params: str) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(PATH, content=content, params=params,
                                headers={"Content-Type": "application/json",
                                         "Authorization": "Bearer s3cret", **(headers or {})})

    def written(self, topic: str = TOPIC) -> list[dict[str, Any]]:
        return [json.loads(value) for value in self.log.topics.get(topic, [])]


def door_with(api_tokens: tuple[str, ...] = (WRITER,)) -> Iterator[Door]:
    registry = RegistryService(MemoryRegistryStore())
    registry.apply([SOURCE], Provenance(actor="test"))
    registry_app = create_registry_app(registry)
    contracts = SourceContracts()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=registry_app),  # type: ignore[arg-type]
                             base_url="http://registry")
    log, keys = MemoryEventLog(), MemoryIdempotencyStore()
    service = IngestService(RegistryEvents("http://registry", contracts, http=http), contracts,
                            log, keys, delivery_timeout_ms=1000,
                            idempotency_window_ms=86_400_000)
    with TestClient(create_ingest_app(service, Access(api_tokens=api_tokens))) as client:
        yield Door(client, log, keys, registry)


@pytest.fixture
def door() -> Iterator[Door]:
    yield from door_with()


# --------------------------------------------------------------------------- judging

VIOLATIONS = [
    (payment(account_id=None), "account_id", "missing_required",
     "account_id: required field is missing"),
    (payment(amount="12"), "amount", "wrong_type", "amount: not a valid double"),
    (payment(amount=-5), "amount", "below_min", "amount: -5 is below the minimum 0"),
    (payment(kind="z"), "kind", "not_allowed", "kind: z is not an allowed value"),
    (payment(ts="yesterday"), "ts", "wrong_type", "ts: not a valid long"),
    ([1, 2], None, "not_an_object", "payload is not a JSON object"),
]


@pytest.mark.parametrize(("event", "field", "reason", "message"), VIOLATIONS)
def test_each_violation_is_refused_with_its_field_reason_and_message(
        door: Door, event: Any, field: str | None, reason: str, message: str) -> None:
    response = door.post(event)
    assert response.status_code == 422
    answer = response.json()
    assert answer["accepted"] == 0
    assert answer["rejected"] == [{"index": 0, "field": field, "reason": reason,
                                   "message": message}]
    assert door.written() == []
    [letter] = door.written(DLQ)
    assert letter == {"reason": message, "reason_code": reason, "field": field,
                      "origin": "ingest", "source": "payments", "contract_version": 1,
                      "topic": TOPIC, "request_id": answer["request_id"], "index": 0,
                      "payload": json.dumps(event)}


def test_above_max_and_an_unreadable_event_time_are_refused(door: Door) -> None:
    door.registry.apply([{**SOURCE, "timestamp_format": "iso8601", "schema": [
        *SCHEMA[:4], {"name": "ts", "type": "string", "required": True},
        {"name": "score", "type": "long", "max": 9}]}], Provenance(actor="test"))
    events = [payment(ts="2026-09-21T12:00:00Z", score=10), payment(ts="not a time")]
    answer = _eventually_judged_by_version_2(door, events)
    assert [(r["reason"], r["field"], r["message"]) for r in answer["rejected"]] == [
        ("above_max", "score", "score: 10 is above the maximum 9"),
        ("unreadable_event_time", None, "event time is missing or unreadable")]


def _eventually_judged_by_version_2(door: Door, events: list[Any]) -> dict[str, Any]:
    """The door follows the registry once a second: a new contract applies within that."""
    deadline = time.monotonic() + 10
    while True:
        response = door.post({"events": events})
        letters = door.written(DLQ)
        if letters and letters[-1]["contract_version"] == 2:
            answer: dict[str, Any] = response.json()
            return answer
        assert time.monotonic() < deadline, "the new contract was not read"
        time.sleep(0.3)


def test_a_valid_event_is_written_as_sent_byte_for_byte(door: Door) -> None:
    # Numbers as the producer spelled them: the stream judges 1.5e1 by its spelling too.
    body = b'{"account_id": "a1", "region": "eu", "amount": 1.5e1, "ts": 1790000000000}'
    response = door.post(body)
    assert response.status_code == 200
    assert response.json()["accepted"] == 1 and response.json()["rejected"] == []
    assert door.log.topics[TOPIC] == [body]
    assert door.written(DLQ) == []


# --------------------------------------------------------------------------- modes and bodies

def test_partial_mode_writes_the_valid_events_and_answers_207(door: Door) -> None:
    events = [payment(), payment(amount=-1), payment(account_id="a2"), "text"]
    response = door.post({"events": events})
    assert response.status_code == 207
    answer = response.json()
    assert answer["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in answer["rejected"]] == [
        (1, "below_min"), (3, "not_an_object")]
    assert [e["account_id"] for e in door.written()] == ["a1", "a2"]
    assert [letter["index"] for letter in door.written(DLQ)] == [1, 3]


def test_atomic_mode_writes_no_event_when_one_is_invalid(door: Door) -> None:
    response = door.post({"events": [payment(), payment(amount=-1)]}, mode="atomic")
    assert response.status_code == 422
    assert response.json()["accepted"] == 0
    assert door.written() == []
    assert [letter["index"] for letter in door.written(DLQ)] == [1]
    assert door.post({"events": [payment(), payment()]}, mode="atomic").status_code == 200
    assert len(door.written()) == 2


def test_ndjson_bodies_hold_one_event_a_line(door: Door) -> None:
    lines = [json.dumps(payment()), "", json.dumps(payment(kind="q")), "{not json"]
    response = door.post("\r\n".join(lines).encode(), headers={"Content-Type": NDJSON})
    assert response.status_code == 207
    assert [(r["index"], r["reason"]) for r in response.json()["rejected"]] == [
        (1, "not_allowed"), (2, "not_an_object")]


def test_an_object_with_a_field_named_events_is_one_event(door: Door) -> None:
    response = door.post({"events": 3})
    assert response.status_code == 422
    assert response.json()["rejected"][0]["reason"] == "missing_required"


@pytest.mark.parametrize(("body", "content_type", "status", "code", "detail"), [
    (b"{not json", "application/json", 400, "malformed_body", "the body is not JSON"),
    (b'{"events": []}', "application/json", 400, "malformed_body", "holds no event"),
    (b"", NDJSON, 400, "malformed_body", "holds no event"),
    (b"{}", "text/plain", 415, "unsupported_media_type", "application/x-ndjson"),
    (json.dumps({"events": [{}] * (MAX_EVENTS + 1)}).encode(), "application/json", 413,
     "limit_exceeded", "at most 10,000 a request"),
    (json.dumps({"events": [{}, {"a": "x" * MAX_EVENT_BYTES}]}).encode(), "application/json",
     413, "limit_exceeded", "event 1 is"),
])
def test_a_body_the_door_cannot_read_is_refused_whole(
        door: Door, body: bytes, content_type: str, status: int, code: str,
        detail: str) -> None:
    response = door.post(body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and detail in response.json()["detail"]
    assert door.log.topics.get(TOPIC, []) == [] and door.log.topics.get(DLQ, []) == []


def test_an_unknown_source_is_404(door: Door) -> None:
    response = door.client.post("/v1/ingest/nope", content=b"{}",
                                headers={"Authorization": "Bearer s3cret",
                                         "Content-Type": "application/json"})
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_a_bad_mode_is_400(door: Door) -> None:
    assert door.post(payment(), mode="some").status_code == 400


# --------------------------------------------------------------------------- tokens

def test_writes_need_a_token_when_tokens_are_set(door: Door) -> None:
    for authorization in (None, "Bearer wrong"):
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        response = door.client.post(PATH, content=json.dumps(payment()).encode(),
                                    headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert door.written() == []


def test_without_tokens_anyone_may_write() -> None:
    for door in door_with(api_tokens=()):
        response = door.client.post(PATH, content=json.dumps(payment()).encode(),
                                    headers={"Content-Type": "application/json"})
        assert response.status_code == 200


# --------------------------------------------------------------------------- retries

def test_a_retry_with_the_same_key_writes_nothing_again(door: Door) -> None:
    body = {"events": [payment(), payment(amount=-2)]}
    first = door.post(body, headers={"Idempotency-Key": "k-1"})
    again = door.post(body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 207
    assert again.json() == first.json()
    assert again.headers[REPLAYED_HEADER] == "true" and REPLAYED_HEADER not in first.headers
    assert len(door.written()) == 1 and len(door.written(DLQ)) == 1


def test_the_same_key_with_another_body_is_a_conflict(door: Door) -> None:
    assert door.post(payment(), headers={"Idempotency-Key": "k-2"}).status_code == 200
    response = door.post(payment(amount=3), headers={"Idempotency-Key": "k-2"})
    assert response.status_code == 409 and response.json()["code"] == "idempotency_conflict"
    assert len(door.written()) == 1


def test_a_key_is_the_callers_own() -> None:
    for door in door_with(api_tokens=("alice:a", "bob:b")):
        for secret in ("a", "b"):
            response = door.client.post(PATH, content=json.dumps(payment()).encode(),
                                        headers={"Authorization": f"Bearer {secret}",
                                                 "Content-Type": "application/json",
                                                 "Idempotency-Key": "shared"})
            assert response.status_code == 200 and REPLAYED_HEADER not in response.headers
        assert len(door.written()) == 2


def test_a_key_is_forgotten_after_the_window(door: Door) -> None:
    door.post(payment(), headers={"Idempotency-Key": "k-3"})
    door.keys.now_ms += 86_400_000
    again = door.post(payment(), headers={"Idempotency-Key": "k-3"})
    assert again.status_code == 200 and REPLAYED_HEADER not in again.headers
    assert len(door.written()) == 2


def test_an_unprintable_key_is_400(door: Door) -> None:
    response = door.post(payment(), headers={"Idempotency-Key": "a b"})
    assert response.status_code == 400
    assert "Idempotency-Key must be 1 to 255 visible ASCII" in response.json()["detail"]


def test_a_broker_outage_acknowledges_nothing_and_a_retry_writes_the_rest(door: Door) -> None:
    body = {"events": [payment(), payment(amount=-1)]}
    assert door.post(payment()).status_code == 200  # the topics exist
    door.log.fail_with = "broker down"
    failed = door.post(body, headers={"Idempotency-Key": "k-4"})
    assert failed.status_code == 503
    assert failed.json()["code"] == "not_acknowledged"
    assert "nothing of it is acknowledged" in failed.json()["detail"]
    door.log.fail_with = None
    retried = door.post(body, headers={"Idempotency-Key": "k-4"})
    assert retried.status_code == 207 and retried.json()["accepted"] == 1
    assert len(door.written()) == 2 and len(door.written(DLQ)) == 1


# --------------------------------------------------------------------------- operations

def test_metrics_count_events_by_source_outcome_and_reason(door: Door) -> None:
    door.post({"events": [payment(), payment(kind="q")]})
    text = door.client.get("/metrics").text
    assert 'fp_ingest_events_total{outcome="accepted",source="payments"}' in text
    assert 'fp_ingest_rejected_events_total{reason="not_allowed",source="payments"}' in text
    assert "fp_ingest_request_seconds_bucket" in text
    assert "fp_ingest_producer_queue_messages" in text


def test_health_says_whether_the_registry_was_read(door: Door) -> None:
    assert door.client.get("/healthz").json()["registry_loaded"] is True
