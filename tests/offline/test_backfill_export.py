"""A backfill hands Flink the archive's events as raw messages: a clean event's stored
fields rendered back to JSON must be read by the stream's checks (the Python twin of the
compiled SQL) to the same values, the same event time, and as clean; a flagged event is its
stored payload."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.domain.contracts import ContractChecker
from core.domain.definitions import Source, parse_definition
from offline import iceberg
from offline.archiver import EventBuffer
from offline.backfill import render_messages

SCHEMA: list[dict[str, Any]] = [
    {"name": "name", "type": "string", "required": True},
    {"name": "count", "type": "long"},
    {"name": "small", "type": "int"},
    {"name": "ratio", "type": "double"},
    {"name": "single", "type": "float"},
    {"name": "flag", "type": "boolean"},
    {"name": "at", "type": "timestamp"},
    {"name": "ts", "type": "double", "required": True},
]


def source(timestamp_format: str = "epoch_seconds") -> Source:
    parsed = parse_definition({"kind": "source", "name": "s", "topic": "t",
                               "timestamp_field": "ts", "timestamp_format": timestamp_format,
                               "schema": SCHEMA})
    assert isinstance(parsed, Source)
    return parsed


text = st.text(st.characters(codec="utf-8"), max_size=12)
timestamps = st.datetimes().map(lambda d: d.isoformat(timespec="milliseconds") + "Z")
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
events = st.fixed_dictionaries({"name": text, "ts": st.floats(-1e9, 4e9)}, optional={
    "count": st.integers(-2**63, 2**63 - 1), "small": st.integers(-2**31, 2**31 - 1),
    "ratio": finite, "single": finite, "flag": st.booleans(), "at": timestamps})


def archived(payloads: list[bytes]) -> tuple[ContractChecker, Any]:
    checker = ContractChecker(source())
    buffer = EventBuffer(checker, 1)
    for offset, payload in enumerate(payloads):
        buffer.add("t", 0, offset, payload, 0)
    schema = iceberg.archive_schema(source()).as_arrow()
    return checker, buffer.to_arrow(schema)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, min_size=1, max_size=20))
def test_a_clean_event_renders_to_a_message_read_back_to_the_same_values(
        batch: list[dict[str, Any]]) -> None:
    payloads = [json.dumps(e, ensure_ascii=False).encode() for e in batch]
    checker, rows = archived(payloads)
    clean = [checker.check(p) for p in payloads]
    messages = render_messages(rows, source().schema)

    for message in messages:
        assert "\n" not in message
    again = {json.dumps(c.values, default=str): c for c in
             (checker.check(m.encode()) for m in messages)}
    for original in clean:
        if original.violation is not None:
            continue
        reread = again[json.dumps(original.values, default=str)]
        assert reread.violation is None
        assert reread.event_time_ms == original.event_time_ms


def test_a_flagged_event_is_its_payload_on_one_line_and_unreadable_text_is_left_out() -> None:
    pretty = b'{"name": "a",\n "ts": 1.5,\n "count": "x"}'
    _, rows = archived([pretty, b"[1,\n2", b'{"name": 5, "ts": 1}'])
    assert render_messages(rows, source().schema) == [  # the archive's order: by event time
        '{"name": 5, "ts": 1}', '{"name": "a",  "ts": 1.5,  "count": "x"}']
