"""The ingest use case: judge a request's events, write them, answer once the broker has them.

The order of one request (docs/ingest.md):

1. the source's latest contract (404 for an unknown source), the body's events
   (400/413/415), each judged (:mod:`ingest.batches`);
2. with an ``Idempotency-Key``, its claim (:mod:`ingest.idempotency`): a replay is answered
   here, and nothing is written;
3. the source's topic and its ``.dlq`` created if missing (once per process and source);
4. the valid events (unless atomic and some are invalid) and a dead letter per invalid one
   appended, and every report of the broker awaited;
5. the answer — or, if the broker did not acknowledge everything, a 503 that acknowledges
   nothing, the acknowledged part remembered under the key so that a retry writes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import IdempotencyConflictError, InfrastructureError, NotAcknowledgedError
from ingest import metrics
from ingest.batches import (
    JSON,
    MEDIA_TYPES,
    Mode,
    Record,
    Verdict,
    judge,
    read_events,
    records,
)
from ingest.contracts import SourceContract, SourceContracts
from ingest.event_log import Delivery, EventLog
from ingest.idempotency import (
    IdempotencyStore,
    KeyRecord,
    State,
    check_key,
    claims,
    fingerprint,
    record_key,
)
from registry.feed import RegistryEvents
from sinks.compiler import dlq_topic

REGISTRY_POLL_S = 1.0
LEASE_MARGIN_MS = 30_000
"""How much longer than the broker's delivery timeout a claimed key stays ``running``."""


@dataclass(frozen=True)
class IngestRequest:
    source: str
    body: bytes
    content_type: str | None
    identity: str
    """Who sends it: a token's identity, or ``anonymous``."""
    mode: Mode = Mode.PARTIAL
    idempotency_key: str | None = None


@dataclass(frozen=True)
class IngestAnswer:
    status: int
    body: Mapping[str, Any]
    replayed: bool = False


@dataclass(frozen=True)
class _ClaimedKey:
    key: str
    fingerprint: str
    acknowledged: frozenset[int]
    """What the broker acknowledged of an interrupted first request with this key."""


@dataclass
class IngestService:
    feed: RegistryEvents
    contracts: SourceContracts
    log: EventLog
    keys: IdempotencyStore
    delivery_timeout_ms: int
    idempotency_window_ms: int
    _ready_topics: set[str] = field(default_factory=set)
    _follower: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        with contextlib.suppress(InfrastructureError):
            await self._read_registry()
        # What is loaded now lives as long as the process: keep it out of the collector's
        # full passes, which otherwise stop a request for hundreds of milliseconds under load
        # (benchmarks/ingest measured 339 ms).
        gc.freeze()
        self._follower = asyncio.create_task(self._follow_registry())
        metrics.PRODUCER_QUEUE.set_function(self.log.queue_depth)

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        await self.feed.close()
        await self.log.close()
        await self.keys.close()

    async def _follow_registry(self) -> None:
        while True:
            await asyncio.sleep(REGISTRY_POLL_S)
            with contextlib.suppress(InfrastructureError):
                await self._read_registry()

    async def _read_registry(self) -> None:
        try:
            await self.feed.catch_up()
        except InfrastructureError:
            metrics.REGISTRY_ERRORS.inc()
            raise

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "registry_loaded": self.contracts.loaded,
                "registry_error": self.feed.error}

    # ------------------------------------------------------------------ requests

    async def ingest(self, request: IngestRequest) -> IngestAnswer:
        contract = self.contracts.latest(request.source)
        verdict = judge(contract.checker, read_events(request.body, request.content_type))
        if request.idempotency_key is None:
            return await self._write(request, contract, verdict)
        key = record_key(request.identity, request.source, check_key(request.idempotency_key))
        media = MEDIA_TYPES.get((request.content_type or JSON).partition(";")[0].strip().lower())
        this_request = fingerprint(request.mode.value, media or JSON, request.body)
        previous = await self.keys.claim(key, this_request,
                                         self.delivery_timeout_ms + LEASE_MARGIN_MS)
        if not claims(previous, this_request):
            assert previous is not None, "a key never seen is always claimed"
            return _replay(previous, this_request)
        return await self._write(request, contract, verdict, _ClaimedKey(
            key, this_request, previous.acknowledged if previous else frozenset()))

    async def _write(self, request: IngestRequest, contract: SourceContract, verdict: Verdict,
                     claimed: _ClaimedKey | None = None) -> IngestAnswer:
        source = contract.source
        request_id = uuid.uuid4().hex
        acknowledged_before = claimed.acknowledged if claimed else frozenset()
        pending = [record for record in records(
            verdict, request.mode, source=source.name, contract_version=contract.version,
            topic=source.topic, dead_letter_topic=dlq_topic(source), request_id=request_id)
            if record.index not in acknowledged_before]
        try:
            delivery = await self._append(source.topic, dlq_topic(source), pending)
        except BaseException:
            # Cancelled (the client left) or failed unexpectedly: whatever was written is
            # unknown, and the key must not stay `running` until its lease ends.
            if claimed is not None:
                await self._finish(claimed, State.INTERRUPTED, acknowledged_before)
            raise
        if delivery.error is not None:
            if claimed is not None:
                await self._finish(claimed, State.INTERRUPTED,
                                   acknowledged_before | delivery.acknowledged)
            metrics.NOT_ACKNOWLEDGED.inc()
            raise NotAcknowledgedError(
                f"the broker did not acknowledge {len(pending) - len(delivery.acknowledged)} "
                f"of this request's {len(pending)} records ({delivery.error}): nothing of it "
                "is acknowledged; retry it" + (" with the same Idempotency-Key, which writes "
                                               "only what the broker did not acknowledge"
                                               if claimed is not None else ""))
        status, answer = verdict.status(request.mode), verdict.answer(request.mode, request_id)
        if claimed is not None:
            await self._finish(claimed, State.DONE, status=status, answer=answer)
        _count(source.name, verdict, request.mode)
        return IngestAnswer(status, answer)

    async def _finish(self, claimed: _ClaimedKey, state: State,
                      acknowledged: frozenset[int] = frozenset(), status: int = 0,
                      answer: Mapping[str, Any] | None = None) -> None:
        await self.keys.finish(claimed.key, KeyRecord(claimed.fingerprint, state, acknowledged,
                                                      status, answer),
                               self.idempotency_window_ms)

    async def _append(self, topic: str, dead_letters: str, pending: list[Record]) -> Delivery:
        if topic not in self._ready_topics:
            try:
                await self.log.ensure_topics([topic, dead_letters])
            except InfrastructureError as error:
                return Delivery(error=f"cannot create topic {topic}: {error}")
            self._ready_topics.add(topic)
        delivery = await self.log.append(pending)
        if delivery.error is not None:
            # The topics may be gone (deleted, or a broker that lost its data): look again
            # at the next request rather than fail every later one.
            self._ready_topics.discard(topic)
        return delivery


def _replay(previous: KeyRecord, this_request: str) -> IngestAnswer:
    if previous.fingerprint != this_request:
        raise IdempotencyConflictError(
            "this Idempotency-Key was used for another request (another body, mode or "
            "content type): use a new key for a new request")
    if previous.state is State.RUNNING or previous.answer is None:
        raise IdempotencyConflictError(
            "the first request with this Idempotency-Key is still being answered: retry "
            "once it has been")
    metrics.REPLAYS.inc()
    return IngestAnswer(previous.status, previous.answer, replayed=True)


def _count(source: str, verdict: Verdict, mode: Mode) -> None:
    accepted = len(verdict.valid) if verdict.writes_valid(mode) else 0
    metrics.EVENTS.labels(source, "accepted").inc(accepted)
    metrics.EVENTS.labels(source, "rejected").inc(len(verdict.events) - accepted)
    for rejection in verdict.rejected:
        metrics.REJECTIONS.labels(source, rejection.violation.reason.value).inc()
