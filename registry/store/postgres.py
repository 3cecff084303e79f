"""PostgreSQL adapter of :class:`registry.store.base.RegistryStore`.

Ordering: every append takes ``LOCK TABLE fp_events IN SHARE ROW EXCLUSIVE MODE`` before it
draws a position.  The mode conflicts with itself and with plain inserts but not with reads,
so writers are serialised while readers never wait, and a writer can only draw positions
after the previous writer committed: commit order equals position order and a reader paging
by position can never see position p+1 while p is still in flight.  The trade-off is one
writer at a time (each append holds the lock for a few milliseconds — registry writes are
human- and deployer-paced); the alternative, xid8 + ``pg_snapshot_xmin`` filtering, allows
parallel writers but must order readers by (xid, position), which breaks the contract's
"positions only grow".  NOTIFY ``fp_events`` with the last position is sent on commit as a
wake-up hint only; readers still poll by position.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import OperationalError

from core.domain.events import (
    NewEvent,
    RecordedEvent,
    StoredEvent,
    StreamAppend,
    decode_event,
    encode_event,
)
from core.errors import ConcurrencyConflictError, InfrastructureError
from registry.store.base import DefinitionRecord, VersionRecord
from registry.store.projection import ActivateVersion, AddVersion, projection_change
from registry.store.tables import definition_versions, definitions, events

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "fp_events"


def create_registry_engine(url: str) -> Engine:
    if not url.startswith("postgresql"):
        scheme = url.split(":", maxsplit=1)[0]
        raise InfrastructureError(f"the registry needs a PostgreSQL URL, got {scheme!r}")
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@contextmanager
def database_errors(what: str) -> Iterator[None]:
    """psycopg's message names the database's host and user: the log gets it, the caller —
    possibly an API's 503 answer — only "{what} unavailable"."""
    try:
        yield
    except OperationalError as error:
        logger.warning("%s unavailable: %s", what, error.orig)
        raise InfrastructureError(f"{what} unavailable") from error


class PostgresRegistryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ writing

    def append(self, appends: Sequence[StreamAppend],
               preconditions: Mapping[str, int] | None = None) -> list[RecordedEvent]:
        expected = {**(preconditions or {}), **{a.stream: a.expected_version for a in appends}}
        with database_errors("registry database"), self.engine.begin() as conn:
            conn.execute(text("LOCK TABLE fp_events IN SHARE ROW EXCLUSIVE MODE"))
            current = self._stream_versions(conn, list(expected))
            for stream, version in expected.items():
                if current.get(stream, 0) != version:
                    raise ConcurrencyConflictError.on_stream(stream, version,
                                                             current.get(stream, 0))
            recorded = [self._insert(conn, append.stream, append.expected_version + offset,
                                     event)
                        for append in appends
                        for offset, event in enumerate(append.events, start=1)]
            for event in recorded:
                _project(conn, event)
            if recorded:
                conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(recorded[-1].position))))
            return recorded

    @staticmethod
    def _stream_versions(conn: Connection, streams: list[str]) -> dict[str, int]:
        if not streams:
            return {}
        rows = conn.execute(select(events.c.stream, func.max(events.c.version))
                            .where(events.c.stream.in_(streams)).group_by(events.c.stream))
        return {stream: version for stream, version in rows}

    @staticmethod
    def _insert(conn: Connection, stream: str, version: int, event: NewEvent) -> RecordedEvent:
        stored = encode_event(event)
        row = conn.execute(
            events.insert().values(stream=stream, version=version, type=stored.type,
                                   data=stored.data, metadata=stored.metadata)
            .returning(*events.c)
        ).mappings().one()
        return _event(row)

    # ------------------------------------------------------------------ reading

    def read_events(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        query = (select(events).where(events.c.position > after)
                 .order_by(events.c.position).limit(limit))
        with self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(query).mappings()]

    def read_stream(self, stream: str) -> list[RecordedEvent]:
        query = select(events).where(events.c.stream == stream).order_by(events.c.version)
        with self.engine.connect() as conn:
            return [_event(row) for row in conn.execute(query).mappings()]

    def last_position(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(events.c.position), 0)))
                       .scalar_one())

    def definitions(self, kind: str | None = None) -> list[DefinitionRecord]:
        query = select(definitions).order_by(definitions.c.kind, definitions.c.name)
        if kind is not None:
            query = query.where(definitions.c.kind == kind)
        with self.engine.connect() as conn:
            return [DefinitionRecord(**row) for row in conn.execute(query).mappings()]

    def definition(self, kind: str, name: str) -> DefinitionRecord | None:
        query = select(definitions).where(definitions.c.kind == kind, definitions.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().one_or_none()
        return DefinitionRecord(**row) if row else None

    def versions(self, kind: str, name: str) -> list[VersionRecord]:
        query = (select(definition_versions)
                 .where(definition_versions.c.kind == kind, definition_versions.c.name == name)
                 .order_by(definition_versions.c.version))
        with self.engine.connect() as conn:
            return [VersionRecord(**row) for row in conn.execute(query).mappings()]

    def version(self, kind: str, name: str, version: int) -> VersionRecord | None:
        query = select(definition_versions).where(
            definition_versions.c.kind == kind, definition_versions.c.name == name,
            definition_versions.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().one_or_none()
        return VersionRecord(**row) if row else None


def _event(row: RowMapping) -> RecordedEvent:
    return decode_event(row["position"], row["stream"], row["version"],
                        StoredEvent(row["type"], row["data"], row["metadata"]),
                        row["recorded_at"])


def _project(conn: Connection, event: RecordedEvent) -> None:
    """Keep the definition projections current, in the transaction of the append."""
    change = projection_change(event)
    now = datetime.now(UTC)
    if isinstance(change, AddVersion):
        conn.execute(definition_versions.insert().values(**vars(change.version)))
        # The row a first registration inserts; a later one keeps the active version
        # unless this one activates at once.
        inserted = change.definition_after(None, now)
        upsert = insert(definitions).values(**vars(inserted))
        update: dict[str, Any] = {"latest_version": upsert.excluded.latest_version,
                                  "spec": upsert.excluded.spec,
                                  "spec_hash": upsert.excluded.spec_hash, "updated_at": now}
        if change.activates:
            update["active_version"] = upsert.excluded.active_version
        conn.execute(upsert.on_conflict_do_update(index_elements=["kind", "name"], set_=update))
    elif isinstance(change, ActivateVersion):
        conn.execute(definitions.update()
                     .where(definitions.c.kind == change.kind,
                            definitions.c.name == change.view)
                     .values(active_version=change.version, updated_at=now))
