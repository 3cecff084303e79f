"""An ingest request, from its body to what is written and what is answered (pure; no I/O).

A body holds one event, a batch ``{"events": [...]}`` or NDJSON (docs/ingest.md).  Every
event is judged by its source's contract exactly as the stream judges a message
(:class:`core.domain.contracts.ContractChecker`: the same rules, the same reason codes), on
the event's own bytes — which are also what is written to the topic, so the stream reads
what was judged, numbers spelled as the producer spelled them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from core.domain.contracts import ContractChecker, Violation
from core.errors import LimitExceededError, MalformedBodyError, UnsupportedMediaTypeError

MAX_EVENTS = 10_000
"""Events one request may carry."""
MAX_BODY_BYTES = 16 * 1024 * 1024
"""The largest body a request may send (413 beyond)."""
MAX_EVENT_BYTES = 1_000_000
"""The largest event: Kafka's default largest message (``message.max.bytes``), less room for
the record's overhead."""

JSON = "application/json"
NDJSON = "application/x-ndjson"
MEDIA_TYPES = {JSON: JSON, NDJSON: NDJSON, "application/jsonl": NDJSON,
               "application/x-jsonlines": NDJSON}
"""The ``Content-Type`` media types a body may have, and how each is read."""
ORIGIN = "ingest"
"""Dead letters' ``origin``: the stream's say ``stream``."""


class Mode(StrEnum):
    """What a request with invalid events writes: the valid ones (``partial``) or none."""

    PARTIAL = "partial"
    ATOMIC = "atomic"


_top_level = msgspec.json.Decoder(dict[str, msgspec.Raw])
_elements = msgspec.json.Decoder(list[msgspec.Raw])


def read_events(body: bytes, content_type: str | None) -> list[bytes]:
    """The events of a body, each as its own bytes.

    Raises UnsupportedMediaTypeError (415) for a media type not in :data:`MEDIA_TYPES`,
    MalformedBodyError (400) for a JSON body that is not JSON or holds no event, and
    LimitExceededError (413) beyond :data:`MAX_EVENTS` or :data:`MAX_EVENT_BYTES`.
    """
    media = (content_type or "").partition(";")[0].strip().lower()
    reading = MEDIA_TYPES.get(media)
    if reading is None:
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type or '(none)'!r} is not read here: send "
            f"{JSON} (one event, or {{\"events\": [...]}}) or {NDJSON} (one event a line)")
    events = _json_events(body) if reading == JSON else _ndjson_events(body)
    if not events:
        raise MalformedBodyError("the body holds no event")
    if len(events) > MAX_EVENTS:
        raise LimitExceededError(f"the body holds {len(events):,} events: at most "
                                 f"{MAX_EVENTS:,} a request")
    oversized = next((i for i, event in enumerate(events) if len(event) > MAX_EVENT_BYTES), None)
    if oversized is not None:
        raise LimitExceededError(f"event {oversized} is {len(events[oversized]):,} bytes: at "
                                 f"most {MAX_EVENT_BYTES:,} an event")
    return events


def _json_events(body: bytes) -> list[bytes]:
    """``{"events": [...]}`` (that one key, an array) is a batch; any other JSON value is one
    event — an object, or a value the contract refuses as not an object."""
    try:
        members = _top_level.decode(body)
    except msgspec.ValidationError:  # JSON, but no object: one event, not an object
        return [body]
    except msgspec.DecodeError as error:
        raise MalformedBodyError(f"the body is not JSON: {error}") from None
    if members.keys() != {"events"}:
        return [body]
    try:
        return [bytes(event) for event in _elements.decode(members["events"])]
    except msgspec.ValidationError:  # an event whose one field is named "events"
        return [body]


def _ndjson_events(body: bytes) -> list[bytes]:
    """One event a line; blank lines are skipped.  A line is judged like any message: one
    that is not JSON is refused as not an object, as the stream would."""
    return [line.rstrip(b"\r") for line in body.split(b"\n") if line.strip()]


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    """The event's position in the request, from 0."""
    violation: Violation

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.violation.field,
                "reason": self.violation.reason.value, "message": self.violation.message}


@dataclass(frozen=True)
class Verdict:
    """Each event of a request, judged: the valid ones and the rejections, by index."""

    events: Sequence[bytes]
    valid: list[int]
    rejected: list[Rejection]

    def writes_valid(self, mode: Mode) -> bool:
        """Whether the valid events are written: always, unless the request is atomic and
        some event is invalid."""
        return mode is Mode.PARTIAL or not self.rejected

    def status(self, mode: Mode) -> int:
        """200 when every event was accepted, 207 when some were, 422 when none was."""
        if not self.rejected:
            return 200
        return 207 if self.writes_valid(mode) and self.valid else 422

    def answer(self, mode: Mode, request_id: str) -> dict[str, Any]:
        return {"accepted": len(self.valid) if self.writes_valid(mode) else 0,
                "rejected": [rejection.to_json() for rejection in self.rejected],
                "request_id": request_id}


def judge(checker: ContractChecker, events: Sequence[bytes]) -> Verdict:
    valid: list[int] = []
    rejected: list[Rejection] = []
    for index, event in enumerate(events):
        violation = checker.check(event).violation
        if violation is None:
            valid.append(index)
        else:
            rejected.append(Rejection(index, violation))
    return Verdict(events, valid, rejected)


@dataclass(frozen=True, slots=True)
class Record:
    """One message to write: to a topic, for the event at ``index`` of its request."""

    topic: str
    value: bytes
    index: int


_dead_letter = msgspec.json.Encoder()


def records(verdict: Verdict, mode: Mode, *, source: str, contract_version: int, topic: str,
            dead_letter_topic: str, request_id: str) -> list[Record]:
    """What a request writes: its valid events to the source's topic (see
    :meth:`Verdict.writes_valid`) and one dead letter per rejected event, in the stream's
    dead-letter format (docs/reference.md, "Kafka topics and result rows") with
    ``origin: ingest`` and where in which request it came from."""
    written = [Record(topic, verdict.events[i], i) for i in verdict.valid] \
        if verdict.writes_valid(mode) else []
    for rejection in verdict.rejected:
        violation = rejection.violation
        letter = {"reason": violation.message, "reason_code": violation.reason.value,
                  "field": violation.field, "origin": ORIGIN, "source": source,
                  "contract_version": contract_version, "topic": topic,
                  "request_id": request_id, "index": rejection.index,
                  "payload": verdict.events[rejection.index].decode("utf-8", errors="replace")}
        written.append(Record(dead_letter_topic, _dead_letter.encode(letter), rejection.index))
    return written
