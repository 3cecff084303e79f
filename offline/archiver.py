"""Kafka → Iceberg: every registered source's raw events, each archived exactly once.

One :class:`SourceArchiver` per source: a consumer in group ``fp.archive.{source}`` (several
archiver processes share a source's partitions), a contract checker, and a micro-batch that
is appended when it holds ``batch_rows`` events or is ``batch_seconds`` old.

Where to resume is never taken from Kafka's committed offsets: on every partition assignment
the archiver reads the offsets stored in the table's newest snapshot and seeks there, and an
append commits only if those offsets are still the stored ones (see :mod:`offline.iceberg`).
The group's Kafka offsets are committed after each append for monitoring (lag) only.  Hence:
killed before the Iceberg commit → the batch is read again; killed after it → the stored
offsets skip it; two archivers briefly owning one partition during a rebalance → the second
commit of the same messages is refused and that archiver rejoins from the stored offsets.

Invalid events are archived too, with ``_violation`` set and the raw ``_payload`` kept; the
dead-letter topic stays the streaming job's business.  New sources and new contract versions
are picked up by polling the registry; maintenance runs every ``maintenance_every`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from core.domain.contracts import ContractChecker
from core.domain.definitions import Kind, Source, parse_definition
from offline import iceberg
from registry.store.base import DefinitionRecord

logger = logging.getLogger(__name__)

GROUP_PREFIX = "fp.archive."


def archive_group(source: str) -> str:
    return f"{GROUP_PREFIX}{source}"


@dataclass(frozen=True)
class ArchiverOptions:
    batch_rows: int = 100_000
    """Append once this many events are buffered (fewer, larger files)..."""
    batch_seconds: float = 10.0
    """...or once the oldest buffered event waited this long."""
    registry_poll_seconds: float = 5.0
    maintenance_every_seconds: float = 3600.0
    """0 = never (run `fp archiver maintain` instead)."""
    target_file_bytes: int = 128 * 1024 * 1024
    snapshot_max_age_ms: int = 7 * 86_400_000
    orphan_min_age_ms: int = 3_600_000
    consumer_properties: Mapping[str, str] = field(default_factory=dict)


class SourceCatalog(Protocol):
    """What the archiver reads from the registry."""

    def definitions(self, kind: str | None = None) -> list[DefinitionRecord]: ...


# --------------------------------------------------------------------------- pure bookkeeping

class OffsetTracker:
    """Per partition: the stored offset the current batch continues from, and the next
    offset expected.  A message below the expected offset is a repeat and is skipped."""

    def __init__(self) -> None:
        self._stored: dict[int, int | None] = {}
        self._next: dict[int, int] = {}
        self._batch_start: dict[int, int | None] = {}

    def assign(self, partition: int, stored: int | None) -> None:
        self._stored[partition] = stored
        self._batch_start.pop(partition, None)
        if stored is None:
            self._next.pop(partition, None)
        else:
            self._next[partition] = stored

    def revoke(self, partition: int) -> None:
        for held in (self._stored, self._next, self._batch_start):
            held.pop(partition, None)

    def accept(self, partition: int, offset: int) -> bool:
        """Record a consumed message; False when it must be skipped (unassigned or repeat)."""
        if partition not in self._stored:
            return False
        expected = self._next.get(partition)
        if expected is not None and offset < expected:
            return False
        self._batch_start.setdefault(partition, self._stored[partition])
        self._next[partition] = offset + 1
        return True

    def batch(self) -> tuple[dict[int, int | None], dict[int, int]]:
        """(stored offsets the batch continues from, next offsets after it)."""
        return dict(self._batch_start), {p: self._next[p] for p in self._batch_start}

    def committed(self) -> None:
        for partition in self._batch_start:
            self._stored[partition] = self._next[partition]
        self._batch_start.clear()

    def discard(self) -> None:
        """Forget the batch: positions go back to the stored offsets."""
        for partition in list(self._batch_start):
            self.assign(partition, self._stored[partition])


class EventBuffer:
    """Checked events of one micro-batch, column by column."""

    def __init__(self, checker: ContractChecker, contract_version: int) -> None:
        self.checker = checker
        self.contract_version = contract_version
        self.field_names = checker.field_names
        self.columns: dict[str, list[Any]] = {}
        self.first_at: float | None = None
        self.clear()

    def clear(self) -> None:
        names = (*self.field_names, iceberg.EVENT_TIME, iceberg.TOPIC, iceberg.PARTITION,
                 iceberg.OFFSET, iceberg.INGESTED_AT, iceberg.VIOLATION, iceberg.PAYLOAD,
                 iceberg.CONTRACT_VERSION)
        self.columns = {name: [] for name in names}
        self.first_at = None

    def __len__(self) -> int:
        return len(self.columns[iceberg.OFFSET])

    def add(self, topic: str, partition: int, offset: int, payload: bytes | None,
            ingested_at_us: int) -> None:
        checked = self.checker.check(payload)
        columns = self.columns
        for name, value in zip(self.field_names, checked.values, strict=True):
            columns[name].append(value)
        millis = checked.event_time_ms
        columns[iceberg.EVENT_TIME].append(None if millis is None else millis * 1000)
        columns[iceberg.TOPIC].append(topic)
        columns[iceberg.PARTITION].append(partition)
        columns[iceberg.OFFSET].append(offset)
        columns[iceberg.INGESTED_AT].append(ingested_at_us)
        violation = checked.violation
        columns[iceberg.VIOLATION].append(None if violation is None else violation.message)
        columns[iceberg.PAYLOAD].append(
            None if violation is None or payload is None
            else payload.decode("utf-8", errors="replace"))
        columns[iceberg.CONTRACT_VERSION].append(self.contract_version)
        if self.first_at is None:
            self.first_at = time.monotonic()

    def to_arrow(self, schema: pa.Schema) -> pa.Table:
        """The batch in the table's schema (columns the contract no longer has are null),
        sorted by event time so that each day's rows land in few, time-ordered files."""
        rows = len(self)
        arrays = [pa.array(self.columns[f.name], type=f.type) if f.name in self.columns
                  else pa.nulls(rows, type=f.type) for f in schema]
        table = pa.Table.from_arrays(arrays, schema=schema)
        return table.sort_by([(iceberg.EVENT_TIME, "ascending"),
                              (iceberg.PARTITION, "ascending"), (iceberg.OFFSET, "ascending")])


# --------------------------------------------------------------------------- one source

class SourceArchiver:
    def __init__(self, catalog: Catalog, source: Source, version: int, bootstrap: str,
                 options: ArchiverOptions) -> None:
        self.catalog = catalog
        self.bootstrap = bootstrap
        self.options = options
        self.source = source
        self.version = version
        self.table: Table = iceberg.ensure_archive(catalog, source)
        self.buffer = EventBuffer(ContractChecker(source), version)
        self.offsets = OffsetTracker()
        self.archived = 0
        self.consumer = self._subscribe()

    @property
    def name(self) -> str:
        return self.source.name

    def _subscribe(self) -> Consumer:
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": archive_group(self.source.name),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # A topic created after the source was registered is noticed within seconds.
            "topic.metadata.refresh.interval.ms": 5000,
            "session.timeout.ms": 10_000,
            **self.options.consumer_properties,
        })
        consumer.subscribe([self.source.topic], on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_lost)
        return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.table.refresh()
        stored = iceberg.stored_offsets(self.table.metadata).get(self.source.topic, {})
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
            self.offsets.assign(tp.partition, stored.get(tp.partition))
        consumer.assign(partitions)
        logger.info("archive %s: resuming %s at %s", self.name, self.source.topic,
                    {tp.partition: stored.get(tp.partition, "earliest") for tp in partitions})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._append_pending()  # hand the partitions over with nothing pending
        self._forget(partitions)
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own them already: committing the batch could only be refused.
        self.buffer.clear()
        self.offsets.discard()
        self._forget(partitions)
        consumer.unassign()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.offsets.revoke(tp.partition)

    def poll(self, timeout: float) -> int:
        """Read what is available (up to a batch); returns the number of messages read."""
        wanted = max(1, min(10_000, self.options.batch_rows - len(self.buffer)))
        messages = self.consumer.consume(num_messages=wanted, timeout=timeout)
        now_us = time.time_ns() // 1000
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("archive %s: %s", self.name, error)
                continue
            partition, offset = message.partition(), message.offset()
            if partition is None or offset is None or not self.offsets.accept(partition,
                                                                                offset):
                continue
            self.buffer.add(self.source.topic, partition, offset, message.value(), now_us)
        return len(messages)

    def due(self) -> bool:
        buffer = self.buffer
        return len(buffer) >= self.options.batch_rows or (
            buffer.first_at is not None
            and time.monotonic() - buffer.first_at >= self.options.batch_seconds)

    def flush(self) -> None:
        """Append the buffered events; when another archiver got there first, rejoin the
        group, which resumes every partition from the stored offsets."""
        if not self._append_pending():
            self._resubscribe()

    def _append_pending(self) -> bool:
        """Append the buffered events; False when they were stale (and are dropped)."""
        if not len(self.buffer):
            return True
        rows = self.buffer.to_arrow(self.table.schema().as_arrow())
        continues_from, next_offsets = self.offsets.batch()
        try:
            snapshot = iceberg.append_batch(self.table, rows, self.source.topic,
                                            continues_from, next_offsets)
        except iceberg.StaleOffsetsError as stale:
            logger.warning("archive %s: %d buffered events were archived by another "
                           "archiver (%s); dropping them", self.name, len(rows), stale)
            self.buffer.clear()
            self.offsets.discard()
            return False
        self.buffer.clear()
        self.offsets.committed()
        self.archived += len(rows)
        logger.info("archive %s: %d events → snapshot %d, next offsets %s", self.name,
                    len(rows), snapshot, next_offsets)
        self._commit_kafka_offsets(next_offsets)
        return True

    def _commit_kafka_offsets(self, next_offsets: Mapping[int, int]) -> None:
        """Progress for lag monitoring only; never read back."""
        try:
            self.consumer.commit(offsets=[TopicPartition(self.source.topic, p, o)
                                          for p, o in next_offsets.items()],
                                 asynchronous=True)
        except KafkaException as error:
            logger.debug("archive %s: offset commit for monitoring failed: %s", self.name,
                         error)

    def _resubscribe(self) -> None:
        self.consumer.close()
        self.offsets = OffsetTracker()
        self.consumer = self._subscribe()

    def update(self, source: Source, version: int) -> None:
        """A new contract version: evolve the table, check new events by it."""
        self.flush()
        self.table = iceberg.ensure_archive(self.catalog, source)
        topic_changed = source.topic != self.source.topic
        self.source, self.version = source, version
        self.buffer = EventBuffer(ContractChecker(source), version)
        if topic_changed:
            self._resubscribe()
        logger.info("archive %s: now on contract version %d", self.name, version)

    def maintain(self) -> iceberg.MaintenanceReport:
        options = self.options
        return iceberg.maintain(self.table, target_file_bytes=options.target_file_bytes,
                                snapshot_max_age_ms=options.snapshot_max_age_ms,
                                orphan_min_age_ms=options.orphan_min_age_ms)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.consumer.close()


# --------------------------------------------------------------------------- all sources

def registered_sources(registry: SourceCatalog) -> dict[str, tuple[Source, int]]:
    """Every registered source at its latest version."""
    sources = {}
    for record in registry.definitions(Kind.SOURCE.value):
        source = parse_definition(dict(record.spec))
        assert isinstance(source, Source)
        sources[source.name] = (source, record.latest_version)
    return sources


class Archiver:
    """Archives every registered source until :meth:`stop`."""

    def __init__(self, registry: SourceCatalog, catalog: Catalog, bootstrap: str,
                 options: ArchiverOptions | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.catalog = catalog
        self.bootstrap = bootstrap
        self.options = options or ArchiverOptions()
        self.clock = clock
        self.sources: dict[str, SourceArchiver] = {}
        self.refused: dict[str, int] = {}
        """Source → contract version the archive cannot hold (archiving paused)."""
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        next_registry_poll = next_maintenance = self.clock()
        if self.options.maintenance_every_seconds > 0:
            next_maintenance += self.options.maintenance_every_seconds
        try:
            while not self._stopping.is_set():
                now = self.clock()
                if now >= next_registry_poll:
                    self._guarded("reading the registry", self.refresh_sources)
                    next_registry_poll = now + self.options.registry_poll_seconds
                if not self.sources:
                    self._stopping.wait(min(1.0, self.options.registry_poll_seconds))
                    continue
                self._poll_each()
                if self.options.maintenance_every_seconds > 0 and now >= next_maintenance:
                    self._guarded("maintenance", self.maintain_all)
                    next_maintenance = self.clock() + self.options.maintenance_every_seconds
        finally:
            for archiver in self.sources.values():
                archiver.close()
            self.sources.clear()

    def _guarded(self, what: str, action: Callable[[], object]) -> None:
        """Run ``action``; a failure (database or storage away) is logged and retried on
        the next round instead of stopping every source's archive."""
        try:
            action()
        except Exception:
            logger.exception("archiver: %s failed; will retry", what)

    def _poll_each(self) -> None:
        timeout = min(0.5, self.options.batch_seconds) / max(1, len(self.sources))
        for archiver in list(self.sources.values()):
            try:
                archiver.poll(timeout)
                if archiver.due():
                    archiver.flush()
            except Exception:
                # The batch stays buffered and is retried; nothing was stored half-way.
                logger.exception("archive %s: append failed; retrying", archiver.name)
                self._stopping.wait(1.0)

    def refresh_sources(self) -> None:
        for name, (source, version) in registered_sources(self.registry).items():
            current = self.sources.get(name)
            if (current is not None and current.version == version) or \
                    self.refused.get(name) == version:
                continue
            try:
                if current is None:
                    self.sources[name] = SourceArchiver(self.catalog, source, version,
                                                        self.bootstrap, self.options)
                    logger.info("archive %s: archiving topic %s into %s", name, source.topic,
                                iceberg.table_name(name))
                else:
                    current.update(source, version)
                self.refused.pop(name, None)
            except iceberg.ArchiveError as error:
                logger.error("archive %s: version %d cannot be archived, paused: %s", name,
                             version, error)
                self.refused[name] = version
                if current is not None:
                    current.close()
                    del self.sources[name]

    def maintain_all(self) -> list[iceberg.MaintenanceReport]:
        reports = []
        for archiver in self.sources.values():
            archiver.flush()
            report = archiver.maintain()
            logger.info("maintenance %s", report)
            reports.append(report)
        return reports
