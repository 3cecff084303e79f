"""The Python contract check and the stream's SQL check, both built from one rule table
(:func:`core.domain.contracts.contract_rules`), judge every event alike: the same verdict,
reason code, field and message — so the stream never dead-letters an event the ingest API
accepted.

Hypothesis draws several hundred events — valid ones, every kind of violation, edge numbers
spelled as JSON spells them, unicode text, nulls, non-objects, broken JSON — and one bounded
Flink job (the compiled job itself, its source bounded) judges them all; its dead letters are
compared with the Python verdicts offset by offset."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.domain.contracts import ContractChecker, Violation
from core.domain.definitions import FeatureView, Source, parse_definitions
from core.domain.events import Provenance
from core.domain.validation import validate_batch
from core.errors import MalformedBodyError
from ingest.contracts import SourceContracts
from ingest.event_log import KafkaEventLog
from ingest.idempotency import MemoryIdempotencyStore
from ingest.service import IngestRequest, IngestService
from registry.api.app import create_registry_app
from registry.feed import RegistryEvents
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from sinks.compiler import JobSpec, KafkaOptions, compile_view
from sinks.flink import FlinkClient
from tests.services import consume_all, create_topics, produce

pytestmark = pytest.mark.flink

EVENTS = 600
ALLOWED_TEXT = ["a", "b", "q'\"\\", "\U0001f600"]
SCHEMA: list[dict[str, Any]] = [
    {"name": "s", "type": "string", "required": True, "allowed": ALLOWED_TEXT},
    {"name": "n", "type": "long", "min": -5, "max": 10**12},
    {"name": "i", "type": "int"},
    {"name": "d", "type": "double", "min": -1.5, "max": 1e300},
    {"name": "b", "type": "boolean", "allowed": [True]},
    {"name": "t", "type": "timestamp"},
    {"name": "at", "type": "string", "required": True},
]
"""Every value type, every rule; the event time ``at`` is text an iso8601 source must read."""

# JSON spellings Python's json.dumps never writes, and the edges of each type.
SPELLED_NUMBERS = ["1e3", "1E3", "-0", "-0.0", "3.0", "1e308", "-1e308", "1e400", "1.5e-7",
                   "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                   "-9223372036854775809", "2147483647", "2147483648", "-2147483649",
                   "1" + "0" * 30, "1" + "0" * 400, "0.1", "-5", "-6", "1000000000000",
                   "1000000000001", "-1.5", "-1.5000001", "1e300", "1.0000001e300"]
DATE_TIMES = ["2026-09-21T12:00:00Z", "2026-09-21 12:00:00.250", "2026-09-21T12:00:00.123Z",
              "2026-09-21", "2026-09-21T12:00", "2026-09-21T12:00:00+02:00", "yesterday",
              "2026-02-30 00:00:00", " 2026-09-21 12:00:00 ", "20260921T120000", ""]
NOT_JSON_OBJECTS = [b"", b"null", b"[]", b'"text"', b"1", b"{", b'{"s": NaN}', b"\xff\xfe",
                    b'{"s": "a",}', b"{}}", b"true"]

# How the stream reads JSON, pinned: it renders a number as Java's BigDecimal (``1E+3``,
# ``1.5e1`` as ``15``, ``-0.0`` as ``0.0``) and reads the first JSON value, ignoring the rest.
PINNED_EVENTS = [
    b'{"s": "a", "at": "2026-09-21", "n": 1.5e1, "i": -4.9083673383399016e+16}',
    b'{"s": "a", "at": "2026-09-21", "n": 1e3}', b'{"s": "a", "at": "2026-09-21", "n": 1.50e1}',
    b'{"s": "a", "at": "2026-09-21", "d": -6.777984012628634e+16}',
    b'{"s": "a", "at": "2026-09-21", "d": 1e400}', b'{"s": "a", "at": "2026-09-21", "n": -0.0}',
    b'{"s": "a", "at": "2026-09-21", "d": -1.50e1}', b'{"s": "a", "at": "2026-09-21", "n": -0}',
    b' \r\n{"s": "a", "at": "2026-09-21"} x', b'{"s": "a", "at": "2026-09-21"}}', b"{}{}",
    b'\x0b{"s": "a", "at": "2026-09-21"}']

json_tokens = st.one_of(
    st.integers().map(str), st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.sampled_from(SPELLED_NUMBERS), st.text().map(json.dumps),
    st.text().map(lambda text: json.dumps(text, ensure_ascii=False)),
    st.sampled_from([*ALLOWED_TEXT, *DATE_TIMES]).map(json.dumps),
    st.sampled_from(["true", "false", "null", "[]", "{}", "[1]", '{"a": 1}']))
"""A JSON value as a message spells it."""

valid_tokens = {
    "s": st.sampled_from(ALLOWED_TEXT).map(json.dumps),
    "n": st.integers(-5, 10**12).map(str), "i": st.integers(-(2**31), 2**31 - 1).map(str),
    "d": st.floats(-1.5, 1e300).map(json.dumps), "b": st.just("true"),
    "t": st.sampled_from(DATE_TIMES).map(json.dumps),
    "at": st.sampled_from(DATE_TIMES).map(json.dumps)}


def _object(members: dict[str, str]) -> bytes:
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in members.items()) + "}").encode()


events = st.one_of(
    st.sampled_from(NOT_JSON_OBJECTS),
    st.dictionaries(st.sampled_from([*valid_tokens, "extra"]), json_tokens).map(_object),
    st.fixed_dictionaries({"s": valid_tokens["s"], "at": valid_tokens["at"]},
                          optional={name: st.one_of(tokens, json_tokens)
                                    for name, tokens in valid_tokens.items()
                                    if name not in ("s", "at")}).map(_object),
    st.fixed_dictionaries({"s": valid_tokens["s"], "at": valid_tokens["at"]},
                          optional={name: tokens for name, tokens in valid_tokens.items()
                                    if name not in ("s", "at")}).map(_object))
"""Broken JSON and non-objects, objects of any members, objects with a valid event time and
key and any other members, and valid objects."""


def drawn_events(count: int) -> list[bytes]:
    """``count`` events drawn by Hypothesis, the same ones every run."""
    drawn: list[bytes] = []

    @settings(max_examples=count, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(events)
    def draw(payload: bytes) -> None:
        drawn.append(payload)

    draw()
    return drawn


def definitions(topic: str) -> list[dict[str, Any]]:
    source = {"kind": "source", "name": "contract_probe", "topic": topic,
              "timestamp_field": "at", "timestamp_format": "iso8601", "watermark_delay": "1s",
              "schema": SCHEMA}
    # Only a last value: no window, so no event is judged late, which Python cannot know.
    view = {"kind": "feature_view", "name": "contract_probe_view", "entities": ["probe"],
            "source": "contract_probe",
            "features": [{"name": "last_n", "aggregation": "last", "column": "n"}]}
    return [{"kind": "entity", "name": "probe", "join_keys": ["s"]}, source, view]


def contracts_source(topic: str) -> Source:
    source = validate_batch({}, parse_definitions(definitions(topic)))["source:contract_probe"]
    assert isinstance(source, Source)
    return source


def bounded(spec: JobSpec, records: int) -> JobSpec:
    """The job reading the first ``records`` records of its one-partition source, so that it
    finishes.  An explicit end offset, since a broker may report the end of a partition
    coarsely (the test broker reports the base offset of its last batch, plus one)."""
    source_ddl, *rest = spec.statements
    assert "'format' = 'raw'" in source_ddl
    source_ddl = source_ddl.replace(
        "'format' = 'raw'", "'scan.bounded.mode' = 'specific-offsets',\n  "
        f"'scan.bounded.specific-offsets' = 'partition:0,offset:{records}',\n  'format' = 'raw'")
    return JobSpec(**{**vars(spec), "statements": (source_ddl, *rest)})


def expected_letter(violation: Violation) -> dict[str, Any]:
    return {"reason_code": violation.reason, "field": violation.field,
            "reason": violation.message}


def test_the_python_and_the_flink_check_judge_every_event_alike(
        kafka_bootstrap: str, flink: FlinkClient) -> None:
    payloads: list[bytes | None] = [*drawn_events(EVENTS), *PINNED_EVENTS, None]
    catalog = validate_batch({}, parse_definitions(definitions(f"probe_{uuid.uuid4().hex[:8]}")))
    source, view = catalog["source:contract_probe"], catalog["feature_view:contract_probe_view"]
    assert isinstance(source, Source) and isinstance(view, FeatureView)
    spec = bounded(compile_view(view, catalog, "v1", 1, kafka=KafkaOptions(kafka_bootstrap)),
                   len(payloads))
    create_topics(kafka_bootstrap, {spec.source_topic: 1, spec.dlq_topic: 1,
                                    spec.result_topic: 1})
    produce(kafka_bootstrap, spec.source_topic,
            [(0, payload) for payload in payloads])  # type: ignore[misc]

    checker = ContractChecker(source)
    verdicts = {offset: checker.check(payload).violation
                for offset, payload in enumerate(payloads)}
    flink.submit(spec)
    status = flink.wait_until_terminal(spec.job_id, timeout=90)
    assert status is not None and status.state == "FINISHED", flink.exceptions(spec.job_id)
    invalid = {offset: v for offset, v in verdicts.items() if v is not None}
    letters = {d["offset"]: d for d in consume_all(kafka_bootstrap, spec.dlq_topic,
                                                   len(invalid), timeout=20)}

    disagreements = []
    for offset, violation in verdicts.items():
        letter = letters.get(offset)
        stream = None if letter is None else {k: letter[k] for k in
                                              ("reason_code", "field", "reason")}
        python = None if violation is None else expected_letter(violation)
        if stream != python:
            disagreements.append(f"{payloads[offset]!r}: Python {python}, Flink {stream}")
    assert disagreements == [], f"{len(disagreements)} of {len(payloads)}:\n" + "\n".join(
        disagreements[:40])
    assert len(invalid) > EVENTS // 3 and len(invalid) < len(payloads) - EVENTS // 20, \
        "the events mix valid and invalid ones"
    assert {v.reason for v in invalid.values()} >= {
        "not_an_object", "missing_required", "wrong_type", "below_min", "above_max",
        "not_allowed", "unreadable_event_time"}


def test_the_stream_never_dead_letters_an_event_the_ingest_api_accepted(
        kafka_bootstrap: str, flink: FlinkClient) -> None:
    """The same events through the ingest API (its service, on the real broker): what the door
    accepts, the compiled job reads clean — every one becomes a result row, none a dead
    letter — and what it refuses never reaches the topic."""
    topic = f"door_{uuid.uuid4().hex[:8]}"
    registry = RegistryService(MemoryRegistryStore())
    registry.apply(definitions(topic), Provenance(actor="test"))
    catalog = validate_batch({}, parse_definitions(definitions(topic)))
    view = catalog["feature_view:contract_probe_view"]
    assert isinstance(view, FeatureView)
    # Its own namespace: the result topic of the test above is named after v1.
    spec = compile_view(view, catalog, "v2", 1, kafka=KafkaOptions(kafka_bootstrap))
    create_topics(kafka_bootstrap, {spec.source_topic: 1, spec.dlq_topic: 1,
                                    spec.result_topic: 1})

    async def through_the_door() -> tuple[list[bytes], int]:
        contracts = SourceContracts()
        registry_app = create_registry_app(registry)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=registry_app),  # type: ignore[arg-type]
                                 base_url="http://registry")
        door = IngestService(RegistryEvents("http://registry", contracts, http=http),
                             contracts, KafkaEventLog(kafka_bootstrap, 10_000),
                             MemoryIdempotencyStore(), delivery_timeout_ms=10_000,
                             idempotency_window_ms=60_000)
        await door.feed.catch_up()
        accepted: list[bytes] = []
        rejected = 0
        try:
            for payload in [*drawn_events(EVENTS), *PINNED_EVENTS]:
                try:
                    answer = await door.ingest(IngestRequest(
                        "contract_probe", payload, "application/json", "test"))
                except MalformedBodyError:  # not JSON at all: refused whole, as a 400
                    continue
                if answer.body["accepted"]:
                    accepted.append(payload)
                rejected += len(answer.body["rejected"])
        finally:
            await door.stop()
        return accepted, rejected

    accepted, rejected = asyncio.run(through_the_door())
    assert len(accepted) > EVENTS // 10 and rejected > EVENTS // 3
    flink.submit(bounded(spec, len(accepted)))
    status = flink.wait_until_terminal(spec.job_id, timeout=90)
    assert status is not None and status.state == "FINISHED", flink.exceptions(spec.job_id)
    # A clean event becomes a row of last values when it holds one (`n`, here).
    checker, n = ContractChecker(contracts_source(topic)), [f["name"] for f in SCHEMA].index("n")
    holding_n = [p for p in accepted if checker.check(p).values[n] is not None]
    rows = consume_all(kafka_bootstrap, spec.result_topic, len(holding_n), timeout=20)
    assert len(rows) == len(holding_n) > 0, "every accepted event is read clean"
    letters = consume_all(kafka_bootstrap, spec.dlq_topic, rejected + 1, timeout=5)
    assert [letter for letter in letters if letter["origin"] != "ingest"] == []
    assert len(letters) == rejected
