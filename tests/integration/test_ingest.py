"""The ingest API as it runs: `fp ingest serve` processes over a real `fp registry serve`
(PostgreSQL), the Tansu broker and Redis, every answer checked against what the broker's
topics then hold, read straight from the broker.  Events refused with their reasons and dead
letters, partial and atomic requests, retries under one Idempotency-Key from two processes,
tokens, `fp ingest push` — and the broker failing under the API: cut off mid-request by a
proxy, and killed and started again empty.  tests/services_on_fakes/test_ingest_api.py runs
the same API on its in-memory twins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis

from fp.local.base import answers_ok, free_port, wait_until
from ingest.app import REPLAYED_HEADER
from ingest.event_log import TOPIC_PARTITIONS
from ingest.idempotency import record_key
from tests.kafka_faults import Tansu, TcpProxy, read_topic, topic_partitions
from tests.payments import INVALID_EVENTS, SCHEMA
from tests.services import PlatformProcess

TOKEN, IDENTITY, SECRET = "ci:s3cret", "ci", "s3cret"
AUTH = {"Authorization": f"Bearer {SECRET}"}
DELIVERY_TIMEOUT_S = 3
MARGIN_S = 7.0
"""What an answer may take beyond the delivery timeout on a loaded 2-core machine (3 s was
exceeded in a CI run under a load average above 10).  Without the bounds tested here an
answer would wait for the admin client's 15 s, or librdkafka's default of 300 s."""
TS = 1_790_000_000_000
ISO_RULES: list[dict[str, Any]] = [*SCHEMA[:4], {"name": "ts", "type": "string", "required": True},
                                   {"name": "score", "type": "long", "max": 9}]
"""A contract with an upper bound and an ISO 8601 event time (timestamp_format iso8601)."""
PURPOSES = ("violations", "rules", "modes", "retry", "tokens", "push", "cut", "kill",
            "kill_new")


def payment(**fields: Any) -> dict[str, Any]:
    return {"account_id": "a1", "region": "eu", "amount": 12.5, "kind": "a", "ts": TS, **fields}


def batch(*events: bytes | dict[str, Any] | list[Any]) -> bytes:
    """A JSON batch whose events are exactly these bytes (dicts and lists dumped)."""
    return b'{"events": [' + b", ".join(
        e if isinstance(e, bytes) else json.dumps(e).encode() for e in events) + b"]}"


@dataclass(frozen=True)
class Source:
    name: str
    topic: str

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def path(self) -> str:
        return f"/v1/ingest/{self.name}"


@dataclass
class Platform:
    kafka: str
    """The session's broker, which the ingest processes `main` and `other` write to."""
    redis_url: str
    main: httpx.Client
    other: httpx.Client
    """A second `fp ingest serve`, as a second replica behind a load balancer."""
    sources: dict[str, Source]
    proxied: ProxiedIngest


@dataclass
class ProxiedIngest:
    """`fp ingest serve` on a broker of its own, which it reaches through a TCP proxy."""

    client: httpx.Client
    process: PlatformProcess
    broker: Tansu
    proxy: TcpProxy


def ingest_process(port: int, registry: str, kafka: str, redis_url: str,
                   log: Path) -> PlatformProcess:
    process = PlatformProcess(["ingest", "serve", "--port", str(port)], {
        "FP_REGISTRY_URL": registry, "FP_KAFKA_BOOTSTRAP": kafka, "FP_REDIS_URL": redis_url,
        "FP_API_TOKENS": TOKEN, "FP_INGEST_DELIVERY_TIMEOUT": f"{DELIVERY_TIMEOUT_S}s",
        "NO_COLOR": "1"}, log)
    process.start()
    return process


def knows(url: str, source: Source) -> bool:
    """Whether the ingest API at ``url`` has read ``source`` from the registry: a body it
    cannot read is then refused as such (415), not for its source (404, or 503 before the
    registry was read) — and nothing is written."""
    try:
        return httpx.post(f"{url}{source.path}", content=b"{}", timeout=2,
                          headers={**AUTH, "Content-Type": "text/plain"}).status_code == 415
    except httpx.HTTPError:
        return False


def knows_all(url: str, sources: list[Source]) -> bool:
    return all(knows(url, source) for source in sources)


@pytest.fixture(scope="module")
def platform(database_url: str, kafka_bootstrap: str, stream_redis_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    logs = tmp_path_factory.mktemp("ingest")
    # A broker of the outage tests' own, behind a proxy it advertises.
    broker_port = free_port()
    proxy = TcpProxy(broker_port)
    proxy.start()
    broker = Tansu(logs / "tansu.log", broker_port, advertised_port=proxy.port)
    broker.start()

    registry_port = free_port()
    registry_url = f"http://127.0.0.1:{registry_port}"
    registry = PlatformProcess(["registry", "serve", "--port", str(registry_port)], {
        "FP_DATABASE_URL": database_url, "FP_REGISTRY_URL": registry_url,
        "FP_API_TOKENS": TOKEN, "NO_COLOR": "1"}, logs / "registry.log")
    registry.start()
    processes = {"registry": registry}
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in ("main", "other", "proxied")}
    clients = {name: httpx.Client(base_url=url, headers=AUTH, timeout=30)
               for name, url in urls.items()}
    try:
        # The ingest processes start with the registry, and read it once it answers.
        for name, kafka in (("main", kafka_bootstrap), ("other", kafka_bootstrap),
                            ("proxied", broker.url)):
            processes[name] = ingest_process(int(urls[name].rpartition(":")[2]), registry_url,
                                             kafka, stream_redis_url,
                                             logs / f"ingest-{name}.log")
        wait_until(lambda: answers_ok(f"{registry_url}/healthz"), 60, "the registry",
                   logs / "registry.log")
        run = uuid.uuid4().hex[:8]
        sources = {purpose: Source(f"payments_{purpose}_{run}", f"ingest-{purpose}-{run}")
                   for purpose in PURPOSES}
        definitions = [{"kind": "source", "name": s.name, "topic": s.topic,
                        "timestamp_field": "ts", "schema": SCHEMA}
                       for purpose, s in sources.items() if purpose != "rules"]
        definitions.append({"kind": "source", "name": sources["rules"].name,
                            "topic": sources["rules"].topic, "timestamp_field": "ts",
                            "timestamp_format": "iso8601", "schema": ISO_RULES})
        applied = httpx.post(f"{registry_url}/v1/apply", headers=AUTH, timeout=30,
                             json={"definitions": definitions, "message": "ingest tests"})
        assert applied.status_code == 200, applied.text
        for name, url in urls.items():
            wait_until(partial(knows_all, url, list(sources.values())), 90,
                       f"the {name} ingest API to read the sources", logs / f"ingest-{name}.log")
        yield Platform(kafka_bootstrap, stream_redis_url, clients["main"], clients["other"],
                       sources, ProxiedIngest(clients["proxied"], processes["proxied"], broker,
                                              proxy))
    finally:
        for client in clients.values():
            client.close()
        for process in processes.values():
            process.stop()
        proxy.stop()
        broker.kill()


def post(client: httpx.Client, source: Source, body: bytes, *, key: str | None = None,
         mode: str = "partial") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(source.path, content=body, params={"mode": mode}, headers=headers)


def letters(kafka: str, source: Source, expected: int) -> list[dict[str, Any]]:
    """The source's dead letters, by the index of their event."""
    return sorted((json.loads(value) for value in read_topic(kafka, source.dlq, expected)),
                  key=lambda letter: (letter["request_id"], letter["index"]))


def accounts(values: list[bytes]) -> Counter[str]:
    return Counter(json.loads(value)["account_id"] for value in values)


# --------------------------------------------------------------------------- judging

VALID = b'{"account_id": "a1", "region": "eu", "amount": 1.5e1, "ts": 1790000000000}'
"""Numbers as the producer spelled them: written as sent, byte for byte."""
VALID_TOO = b'{"region":"us","account_id":"b|2","kind":"c","ts":1790000000001,"x":{"y":[1]}}'


def test_each_violation_is_refused_with_its_reason_and_dead_lettered(
        platform: Platform) -> None:
    source, rules = platform.sources["violations"], platform.sources["rules"]
    assert source.topic not in topic_partitions(platform.kafka)
    events: list[bytes] = [
        VALID, json.dumps(payment(account_id=None)).encode(),
        json.dumps(payment(amount="12")).encode(), json.dumps(payment(amount=-5)).encode(),
        json.dumps(payment(kind="z")).encode(), b"[1, 2]", VALID_TOO]
    response = post(platform.main, source, batch(*events))
    assert response.status_code == 207, response.text
    answer = response.json()
    assert answer["accepted"] == 2
    expected = [
        (1, "account_id", "missing_required", "account_id: required field is missing"),
        (2, "amount", "wrong_type", "amount: not a valid double"),
        (3, "amount", "below_min", "amount: -5 is below the minimum 0"),
        (4, "kind", "not_allowed", "kind: z is not an allowed value"),
        (5, None, "not_an_object", "payload is not a JSON object")]
    assert answer["rejected"] == [{"index": i, "field": f, "reason": r, "message": m}
                                  for i, f, r, m in expected]

    # The first ingest created the topic and its dead-letter topic.
    topics = topic_partitions(platform.kafka)
    assert topics[source.topic] == topics[source.dlq] == TOPIC_PARTITIONS
    assert sorted(read_topic(platform.kafka, source.topic, 2)) == sorted([VALID, VALID_TOO])
    assert letters(platform.kafka, source, 5) == [
        {"reason": m, "reason_code": r, "field": f, "origin": "ingest", "source": source.name,
         "contract_version": 1, "topic": source.topic, "request_id": answer["request_id"],
         "index": i, "payload": events[i].decode()} for i, f, r, m in expected]

    iso_events = [payment(ts="2026-09-21T12:00:00Z", score=10), payment(ts="not a time"),
                  payment(ts="2026-09-21T12:00:00Z", score=9)]
    response = post(platform.main, rules, batch(*iso_events))
    assert response.status_code == 207, response.text
    assert [(r["index"], r["field"], r["reason"], r["message"])
            for r in response.json()["rejected"]] == [
        (0, "score", "above_max", "score: 10 is above the maximum 9"),
        (1, None, "unreadable_event_time", "event time is missing or unreadable")]
    assert [(letter["index"], letter["reason_code"], letter["origin"])
            for letter in letters(platform.kafka, rules, 2)] == [
        (0, "above_max", "ingest"), (1, "unreadable_event_time", "ingest")]
    assert read_topic(platform.kafka, rules.topic, 1) == [json.dumps(iso_events[2]).encode()]


def test_partial_requests_write_the_valid_events_and_atomic_ones_all_or_none(
        platform: Platform) -> None:
    source = platform.sources["modes"]
    partial = post(platform.main, source, batch(
        payment(account_id="m1"), payment(account_id="m2", amount=-1),
        payment(account_id="m3")))
    assert partial.status_code == 207
    assert partial.json()["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in partial.json()["rejected"]] == [(1, "below_min")]

    refused = post(platform.main, source, batch(
        payment(account_id="m4"), payment(account_id="m5", kind="z")), mode="atomic")
    assert refused.status_code == 422
    assert refused.json()["accepted"] == 0
    assert [(r["index"], r["reason"]) for r in refused.json()["rejected"]] == [
        (1, "not_allowed")]
    whole = post(platform.main, source, batch(
        payment(account_id="m6"), payment(account_id="m7")), mode="atomic")
    assert whole.status_code == 200 and whole.json() == {
        "accepted": 2, "rejected": [], "request_id": whole.json()["request_id"]}

    assert accounts(read_topic(platform.kafka, source.topic, 4)) == Counter(
        ["m1", "m3", "m6", "m7"])
    assert accounts([letter["payload"].encode()
                     for letter in letters(platform.kafka, source, 2)]) == Counter(["m2", "m5"])


# --------------------------------------------------------------------------- retries, tokens

def test_a_retry_under_the_same_key_is_answered_again_by_any_process(
        platform: Platform) -> None:
    source = platform.sources["retry"]
    body = batch(payment(account_id="r1"), payment(account_id="r2", amount=-2))
    key = f"retry-{uuid.uuid4().hex}"
    first = post(platform.main, source, body, key=key)
    assert first.status_code == 207 and REPLAYED_HEADER not in first.headers
    for client in (platform.main, platform.other):  # the key is in Redis, shared
        again = post(client, source, body, key=key)
        assert (again.status_code, again.json()) == (207, first.json())
        assert again.headers[REPLAYED_HEADER] == "true"

    other_key = f"retry-{uuid.uuid4().hex}"
    second = post(platform.other, source, batch(payment(account_id="r3")), key=other_key)
    assert second.status_code == 200 and REPLAYED_HEADER not in second.headers
    replayed = post(platform.main, source, batch(payment(account_id="r3")), key=other_key)
    assert replayed.json() == second.json() and replayed.headers[REPLAYED_HEADER] == "true"

    conflict = post(platform.other, source, batch(payment(account_id="r4")), key=key)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_conflict"

    assert accounts(read_topic(platform.kafka, source.topic, 2)) == Counter(["r1", "r3"])
    assert [letter["index"] for letter in letters(platform.kafka, source, 1)] == [1]


def test_writes_need_a_token(platform: Platform) -> None:
    source = platform.sources["tokens"]
    body = json.dumps(payment()).encode()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": SECRET}):
        response = httpx.post(f"{platform.main.base_url}{source.path}", content=body,
                              headers={"Content-Type": "application/json", **headers})
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
    assert source.topic not in topic_partitions(platform.kafka), "nothing was written"
    assert post(platform.main, source, body).status_code == 200


# --------------------------------------------------------------------------- fp ingest push

def test_push_sends_a_file_and_reports_the_rejected_lines(platform: Platform,
                                                          tmp_path: Path) -> None:
    source = platform.sources["push"]
    lines: list[bytes] = []
    bad: dict[int, bytes] = {}
    for number in range(1, 2001):
        if number % 20 == 0:  # 5 %: every kind of invalid event in turn
            bad[number] = INVALID_EVENTS[len(bad) % len(INVALID_EVENTS)](TS + number)
            lines.append(bad[number])
        else:
            lines.append(json.dumps(payment(account_id=f"p{number}", ts=TS + number)).encode())
    path = tmp_path / "payments.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    pushed = subprocess.run(
        [sys.executable, "-m", "fp.cli", "ingest", "push", source.name, str(path),
         "--batch-size", "300"],
        env={**os.environ, "FP_INGEST_URL": str(platform.main.base_url).rstrip("/"),
             "FP_API_TOKEN": TOKEN, "NO_COLOR": "1"},
        capture_output=True, text=True, timeout=120, check=False)
    assert pushed.returncode == 2, pushed.stdout + pushed.stderr
    output = pushed.stdout
    assert "2,000 events sent, 1,900 accepted, 100 rejected" in output
    reasons = Counter({"missing_required": 13, "below_min": 13, "not_allowed": 13,
                       "wrong_type": 13 + 12 + 12, "not_an_object": 12 + 12})
    for reason, count in reasons.items():
        assert f"{count:>8,}  {reason}" in output, output
    assert "line 20: account_id: required field is missing" in output
    assert "line 40: amount: not a valid double" in output
    assert "line 140: payload is not a JSON object" in output

    good = [line for number, line in enumerate(lines, 1) if number not in bad]
    written = read_topic(platform.kafka, source.topic, len(good))
    assert sorted(written) == sorted(good), "every good line once, as it was in the file"
    assert len(read_topic(platform.kafka, source.dlq, len(bad))) == len(bad)


# --------------------------------------------------------------------------- the broker failing

@dataclass
class Sent:
    """One batch a client sent, and how it was answered."""

    key: str
    body: bytes
    accounts: list[str]
    """The account of each event; those at INVALID are invalid."""
    sent_at: float
    answered_at: float = 0.0
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)


BATCH_EVENTS = 2000
"""Enough for the producer to write a batch in several requests to the broker."""
INVALID = frozenset(range(7, BATCH_EVENTS, 50))
"""The invalid events of each batch, whose dead letters are written with the valid ones."""
VALID_EVENTS = BATCH_EVENTS - len(INVALID)


def send_batches(client: httpx.Client, source: Source, name: str, stop: threading.Event,
                 sent: list[Sent]) -> None:
    """Batches one after the other, each under its own key, until ``stop``."""
    number = 0
    while not stop.is_set():
        ids = [f"{name}-{number}-{i}" for i in range(BATCH_EVENTS)]
        body = batch(*(payment(account_id=account, amount=-1 if i in INVALID else 1)
                       for i, account in enumerate(ids)))
        record = Sent(uuid.uuid4().hex, body, ids, time.monotonic())
        sent.append(record)
        try:
            response = post(client, source, body, key=record.key)
            record.status, record.answer = response.status_code, response.json()
        except httpx.HTTPError as error:  # recorded: the assertions say it must not happen
            record.answer = {"error": str(error)}
        record.answered_at = time.monotonic()
        number += 1


def test_a_broker_cut_off_mid_request_acknowledges_only_what_it_has(
        platform: Platform) -> None:
    proxied, source = platform.proxied, platform.sources["cut"]
    assert post(proxied.client, source, batch(payment(account_id="first"))).status_code == 200
    batches, cut_at, restored_at = send_through_a_cut(proxied, source)

    assert {s.status for s in batches} <= {207, 503}, Counter(s.status for s in batches)
    during = [s for s in batches if s.sent_at > cut_at and s.answered_at < restored_at]
    assert during and all(s.status == 503 and s.answer["code"] == "not_acknowledged"
                          for s in during), "never a 2xx for events the broker lacks"
    assert all(s.answered_at - s.sent_at < DELIVERY_TIMEOUT_S + MARGIN_S for s in during)
    answered = [s for s in batches if s.status == 207]
    failed = [s for s in batches if s.status == 503]
    assert answered and failed
    assert all(s.answer["accepted"] == VALID_EVENTS for s in answered)

    # What the broker acknowledged of each failed batch, as its key remembers it.
    store = redis.Redis.from_url(platform.redis_url, decode_responses=True)
    acknowledged: dict[str, set[int]] = {}
    for s in failed:
        held = cast(dict[str, str], store.hgetall(record_key(IDENTITY, source.name, s.key)))
        assert held["state"] == "interrupted"
        acknowledged[s.key] = set(json.loads(held["acknowledged"]))
    store.close()

    # Before any retry: every event of every 2xx answer is in the topic, once.
    topic = accounts(read_topic(proxied.broker.url, source.topic, VALID_EVENTS * len(answered)))
    for s in answered:
        assert all(topic[a] == 1 for i, a in enumerate(s.accounts) if i not in INVALID), s.key

    attempts = [retry_until_answered(proxied.client, source, s) for s in failed]

    everything = 1 + VALID_EVENTS * len(batches)
    topic = accounts(read_topic(proxied.broker.url, source.topic, everything))
    dead = accounts([json.loads(value)["payload"].encode() for value in read_topic(
        proxied.broker.url, source.dlq, len(INVALID) * len(batches))])
    assert topic.keys() == {"first"} | {a for s in batches for i, a in enumerate(s.accounts)
                                        if i not in INVALID}
    assert dead.keys() == {a for s in batches for i, a in enumerate(s.accounts) if i in INVALID}
    for s in answered:
        assert all((dead if i in INVALID else topic)[a] == 1 for i, a in enumerate(s.accounts))
    twice = 0
    for s in failed:
        for i, account in enumerate(s.accounts):
            written = (dead if i in INVALID else topic)[account]
            if i in acknowledged[s.key]:
                assert written == 1, f"{account} was acknowledged, and written again"
            twice += written - 1
    print(f"\ncut: {len(answered)} batches answered 207, {len(failed)} 503; of these the "
          f"broker had acknowledged {sorted(len(a) for a in acknowledged.values())} records; "
          f"attempts to retry each: {Counter(attempts)}; {twice} records written twice "
          "(written, their acknowledgement lost in the cut)")
    assert any(acknowledged.values()), "the cut found no batch partly acknowledged"
    assert proxied.process.process is not None and proxied.process.process.poll() is None


def send_through_a_cut(proxied: ProxiedIngest, source: Source,
                       clients: int = 4) -> tuple[list[Sent], float, float]:
    """Clients sending batches while the proxy to the broker first withholds the broker's
    answers for the dead-letter topic, then is cut, then restored: every batch sent, when the
    cut began and when it ended."""
    stop = threading.Event()
    sent: dict[str, list[Sent]] = {f"c{n}": [] for n in range(clients)}
    https = [httpx.Client(base_url=proxied.client.base_url, headers=AUTH, timeout=60)
             for _ in sent]
    threads = [threading.Thread(target=send_batches, args=(http, source, name, stop, batches))
               for http, (name, batches) in zip(https, sent.items(), strict=True)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(sum(bool(s.status) for s in batches) >= 2
                               for batches in sent.values()), 30, "answers to every client")
        # The batches in flight now: their events acknowledged, their dead letters written
        # but not acknowledged — until the cut fails them.
        proxied.proxy.hold = source.dlq.encode()
        wait_until(lambda: proxied.proxy.withheld > 0, 10, "a withheld acknowledgement")
        time.sleep(0.2)
        cut_at = time.monotonic()
        proxied.proxy.cut()
        # Until every client was answered for a batch it sent after the cut.
        wait_until(lambda: all(any(s.sent_at > cut_at and s.status for s in batches)
                               for batches in sent.values()), 30, "answers during the cut")
        restored_at = time.monotonic()
    finally:
        proxied.proxy.hold = None
        proxied.proxy.restore()
        stop.set()
        for thread in threads:
            thread.join(60)
        for http in https:
            http.close()
    return [s for batches in sent.values() for s in batches], cut_at, restored_at


def retry_until_answered(client: httpx.Client, source: Source, failed: Sent) -> int:
    """A failed batch sent again under its key, as `fp ingest push` would (on 503, after a
    pause): how many attempts it took."""
    attempts = 1
    while (retried := post(client, source, failed.body, key=failed.key)).status_code == 503 \
            and attempts < 5:
        attempts += 1
        time.sleep(0.5)
    assert retried.status_code == 207, retried.text
    assert retried.json()["accepted"] == VALID_EVENTS
    assert REPLAYED_HEADER not in retried.headers
    assert post(client, source, failed.body, key=failed.key).headers[REPLAYED_HEADER] == "true"
    return attempts


def test_a_broker_killed_answers_503_in_time_and_a_new_one_is_written_to(
        platform: Platform) -> None:
    proxied = platform.proxied
    source, fresh = platform.sources["kill"], platform.sources["kill_new"]
    assert post(proxied.client, source, batch(payment(account_id="k0"))).status_code == 200
    proxied.broker.kill()

    def timed(target: Source, account: str) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        with httpx.Client(base_url=proxied.client.base_url, headers=AUTH, timeout=60) as http:
            response = post(http, target, batch(payment(account_id=account)))
        return response, time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        down = list(pool.map(timed, [source, source, source, fresh],
                             ["k1", "k2", "k3", "n1"]))
    for response, took in down:
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "not_acknowledged"
        assert took < DELIVERY_TIMEOUT_S + MARGIN_S, f"answered after {took:.1f} s"
    response, took = timed(source, "k4")  # once more, the producer already failing
    assert response.status_code == 503 and took < DELIVERY_TIMEOUT_S + MARGIN_S
    assert proxied.process.process is not None and proxied.process.process.poll() is None
    assert proxied.client.get("/healthz").status_code == 200

    # The same port, and nothing of what the old one held (a topic creation the ingest process
    # asked for during the outage may still reach it: with the partitions it states).
    proxied.broker.start()
    after = post(proxied.client, source, batch(payment(account_id="k5"),
                                               payment(account_id="k6", kind="z")))
    assert after.status_code == 207, after.text
    created = post(proxied.client, fresh, batch(payment(account_id="n2")))
    assert created.status_code == 200, created.text
    # Created again as the first ingest creates them: a topic whose append failed is
    # looked up again at the next request.
    topics = topic_partitions(proxied.broker.url)
    assert [topics[t] for t in (source.topic, source.dlq, fresh.topic, fresh.dlq)] == [
        TOPIC_PARTITIONS] * 4
    assert accounts(read_topic(proxied.broker.url, source.topic, 1)) == Counter(["k5"])
    assert [json.loads(letter)["index"] for letter in
            read_topic(proxied.broker.url, source.dlq, 1)] == [1]
    assert accounts(read_topic(proxied.broker.url, fresh.topic, 1)) == Counter(["n2"])
