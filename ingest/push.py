"""`fp ingest push SOURCE FILE.jsonl`: a file of events sent through the ingest API.

The file is read a batch at a time (its size does not matter) and each batch is sent as
NDJSON under an ``Idempotency-Key`` of its own, so that a batch retried after a timeout or a
503 is written once: a retry writes only what the broker had not acknowledged.  Rejections
are reported by the line of the file they came from.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.errors import FeaturePlatformError, InfrastructureError, NotFoundError
from ingest.batches import MAX_EVENTS, NDJSON, Mode
from registry.client import error_from_response, parse_token

DEFAULT_BATCH = 500
EXAMPLES_KEPT = 10
RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15)
"""Waits before each retry of a batch the API could not take (503, 409 while its first
attempt runs, a connection error)."""


@dataclass(frozen=True)
class Rejected:
    line: int
    """The line of the file, from 1."""
    field: str | None
    reason: str
    message: str


@dataclass
class PushSummary:
    sent: int = 0
    accepted: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[Rejected] = field(default_factory=list)
    """The first rejections, by line."""

    @property
    def rejected(self) -> int:
        return self.sent - self.accepted

    def add(self, lines: list[int], answer: dict[str, Any]) -> None:
        self.sent += len(lines)
        self.accepted += int(answer["accepted"])
        for rejection in answer["rejected"]:
            self.reasons[rejection["reason"]] += 1
            if len(self.examples) < EXAMPLES_KEPT:
                self.examples.append(Rejected(lines[rejection["index"]], rejection["field"],
                                              rejection["reason"], rejection["message"]))


def batches(path: Path, size: int) -> Iterator[tuple[list[int], bytes]]:
    """The file's events ``size`` at a time: their line numbers and the NDJSON body."""
    with path.open("rb") as lines:
        numbered = ((number, line.rstrip(b"\r\n"))
                    for number, line in enumerate(lines, 1) if line.strip())
        while chunk := list(itertools.islice(numbered, size)):
            yield [number for number, _ in chunk], b"\n".join(line for _, line in chunk)


class IngestClient:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        headers = {"Content-Type": NDJSON}
        if token:
            headers["Authorization"] = f"Bearer {parse_token(token, 1)[1]}"
        self.url = url
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def send(self, source: str, body: bytes, key: str, mode: Mode = Mode.PARTIAL
             ) -> dict[str, Any]:
        """One batch, retried under the same key until it is answered (or the retries run
        out: InfrastructureError).  A refusal of the whole batch (400, 401, 404, 413, 415)
        raises its error at once."""
        failure = ""
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = self._http.post(f"/v1/ingest/{source}", content=body,
                                           params={"mode": mode.value},
                                           headers={"Idempotency-Key": key})
            except httpx.HTTPError as error:
                failure = f"ingest API not reachable at {self.url} ({error})"
            else:
                if response.status_code in (200, 207, 422) and \
                        response.headers.get("content-type", "").startswith("application/json"):
                    answer: dict[str, Any] = response.json()
                    return answer
                refusal = error_from_response(response, "ingest API")
                if response.status_code not in (409, 503):
                    raise refusal
                failure = str(refusal)
            if delay is not None:
                self._sleep(delay)
        raise InfrastructureError(f"gave up after {len(RETRY_DELAYS_S)} retries: {failure}")


def push_file(client: IngestClient, source: str, path: Path, *, batch_size: int = DEFAULT_BATCH,
              mode: Mode = Mode.PARTIAL,
              on_batch: Callable[[int], None] = lambda sent: None) -> PushSummary:
    """Send every event of ``path``; ``on_batch`` hears how many each answered batch held."""
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file (expected one JSON event a line)")
    if not 0 < batch_size <= MAX_EVENTS:
        raise FeaturePlatformError(f"--batch-size must be 1 to {MAX_EVENTS:,}")
    run = uuid.uuid4().hex
    summary = PushSummary()
    for number, (lines, body) in enumerate(batches(path, batch_size)):
        summary.add(lines, client.send(source, body, f"push-{run}-{number}", mode))
        on_batch(len(lines))
    return summary
