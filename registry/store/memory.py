"""In-memory adapter of :class:`registry.store.base.RegistryStore`, for tests and demos.

Same contract as the PostgreSQL store (tests/contracts/test_registry_store.py runs one suite
over both): one lock makes every append all-or-nothing and gives positions in commit order.
Events are kept as JSON text in their stored form (:func:`encode_event`) and decoded on every
read (:func:`decode_event`), as a database would: a reader never shares objects with the
writer, and data that would not survive the database does not survive here either.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from core.domain.events import (
    RecordedEvent,
    StoredEvent,
    StreamAppend,
    decode_event,
    encode_event,
)
from core.errors import ConcurrencyConflictError
from registry.store.base import DefinitionRecord, VersionRecord
from registry.store.projection import ActivateVersion, AddVersion, projection_change


@dataclass(frozen=True)
class _EventRow:
    position: int
    stream: str
    version: int
    type: str
    data: str
    metadata: str
    recorded_at: datetime

    def decoded(self) -> RecordedEvent:
        stored = StoredEvent(self.type, json.loads(self.data), json.loads(self.metadata))
        return decode_event(self.position, self.stream, self.version, stored, self.recorded_at)


class MemoryRegistryStore:
    def __init__(self) -> None:
        self._events: list[_EventRow] = []
        """Index i holds position i + 1."""
        self._streams: dict[str, list[_EventRow]] = {}
        self._definitions: dict[tuple[str, str], DefinitionRecord] = {}
        self._versions: dict[tuple[str, str], list[VersionRecord]] = {}
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)

    # ------------------------------------------------------------------ writing

    def append(self, appends: Sequence[StreamAppend],
               preconditions: Mapping[str, int] | None = None) -> list[RecordedEvent]:
        expected = {**(preconditions or {}), **{a.stream: a.expected_version for a in appends}}
        # Encoded before the lock: an event that cannot be stored fails with nothing written.
        rows = [(append.stream, append.expected_version + offset, encode_event(event))
                for append in appends for offset, event in enumerate(append.events, start=1)]
        with self._lock:
            for stream, version in expected.items():
                current = len(self._streams.get(stream, ()))
                if current != version:
                    raise ConcurrencyConflictError.on_stream(stream, version, current)
            recorded_at = datetime.now(UTC)
            staged = [_EventRow(len(self._events) + index, stream, version, stored.type,
                                json.dumps(stored.data), json.dumps(stored.metadata),
                                recorded_at)
                      for index, (stream, version, stored) in enumerate(rows, start=1)]
            recorded = [row.decoded() for row in staged]
            for row, event in zip(staged, recorded, strict=True):
                self._events.append(row)
                self._streams.setdefault(row.stream, []).append(row)
                self._project(event)
            if recorded:
                self._appended.notify_all()
            return recorded

    def _project(self, event: RecordedEvent) -> None:
        change = projection_change(event)
        now = datetime.now(UTC)
        if isinstance(change, AddVersion):
            key = (change.version.kind, change.version.name)
            self._versions.setdefault(key, []).append(change.version)
            self._definitions[key] = change.definition_after(self._definitions.get(key), now)
        elif isinstance(change, ActivateVersion):
            key = (change.kind, change.view)
            current = self._definitions.get(key)
            if current is not None:
                self._definitions[key] = replace(current, active_version=change.version,
                                                 updated_at=now)

    # ------------------------------------------------------------------ reading

    def read_events(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        with self._lock:
            rows = self._events[max(after, 0):max(after, 0) + limit]
        return [row.decoded() for row in rows]

    def read_stream(self, stream: str) -> list[RecordedEvent]:
        with self._lock:
            rows = list(self._streams.get(stream, ()))
        return [row.decoded() for row in rows]

    def last_position(self) -> int:
        with self._lock:
            return len(self._events)

    def wait_for_append(self, after: int, timeout: float) -> int:
        """Block until an event past position ``after`` is committed, or ``timeout`` seconds;
        the last position then.  The in-memory counterpart of PostgreSQL's NOTIFY."""
        with self._appended:
            self._appended.wait_for(lambda: len(self._events) > after, timeout)
            return len(self._events)

    def definitions(self, kind: str | None = None) -> list[DefinitionRecord]:
        with self._lock:
            return [self._definitions[key] for key in sorted(self._definitions)
                    if kind is None or key[0] == kind]

    def definition(self, kind: str, name: str) -> DefinitionRecord | None:
        with self._lock:
            return self._definitions.get((kind, name))

    def versions(self, kind: str, name: str) -> list[VersionRecord]:
        with self._lock:
            return list(self._versions.get((kind, name), ()))

    def version(self, kind: str, name: str, version: int) -> VersionRecord | None:
        with self._lock:
            return next((record for record in self._versions.get((kind, name), ())
                         if record.version == version), None)
