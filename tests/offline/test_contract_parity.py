"""The Python contract check and the stream's SQL check, both built from one rule table
(:func:`core.domain.contracts.contract_rules`), judge every event alike: the same verdict,
reason code, field and message.

Hypothesis draws several hundred events — valid ones, every kind of violation, edge numbers
spelled as JSON spells them, unicode text, nulls, non-objects, broken JSON — and one bounded
Flink job (the compiled job itself, its source bounded) judges them all; its dead letters are
compared with the Python verdicts offset by offset."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from core.domain.contracts import ContractChecker, Violation
from core.domain.definitions import FeatureView, Source, parse_definitions
from core.domain.validation import validate_batch
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
