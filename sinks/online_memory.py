"""The online store in memory, for tests of the writer, deployer and serving code without a
Redis: the same observable behaviour as :class:`sinks.online_store.RedisOnlineStore` (held to
it by ``tests/contracts/test_online_store.py``) — hashes with the fields the writer's Lua
script writes, atomic version map switches announced to every subscriber, namespace progress,
purges that refuse the active namespace."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core.domain.layout import (
    EVENT_TIME_FIELD,
    OLDEST_TIME_AT_FIELD,
    OLDEST_TIME_FIELD,
    feature_key,
    feature_time_field,
    meta_key,
    versions_key,
)
from sinks.online_store import (
    OLDEST_TIME_REFRESH_MS,
    ROWS_FIELD,
    UPDATED_AT_FIELD,
    WATERMARK_FIELD,
    FeatureRow,
    HashRead,
    NamespaceProgress,
    RawRow,
    RowBatches,
    T,
    VersionMap,
    batch_watermark,
    parse_version_map,
    refuse_active,
    stored_values,
    version_map_fields,
    versions_on,
)

Hash = dict[str, str]
NULL = "null"
"""The stored text of a null value."""


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    switches: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


class InMemoryOnlineStore:
    """Keys as Redis would hold them (:mod:`core.domain.layout`), each a hash of text fields.

    Thread-safe: the writer, the deployer and serving may run on different threads, as they
    run in different processes against Redis.  Subscribers are told of switches on their own
    event loop."""

    def __init__(self) -> None:
        self.hashes: dict[str, Hash] = {}
        self._lock = threading.Lock()
        self._subscribers: list[_Subscriber] = []

    # ------------------------------------------------------------------ writer

    def apply(self, batches: RowBatches) -> None:
        now_ms = str(int(time.time() * 1000))
        with self._lock:
            for (view, namespace), rows in batches.items():
                for row in rows:
                    self._apply_row(feature_key(view, namespace, row.entity_key), row)
                self._advance_progress(meta_key(view, namespace), batch_watermark(rows),
                                       len(rows), now_ms)

    def _apply_row(self, key: str, row: FeatureRow) -> None:
        """What the writer's Lua script does to one hash (sinks/online_store.py)."""
        held = self.hashes.setdefault(key, {})
        t, time_text = row.event_time_ms, str(row.event_time_ms)
        values = dict(zip(row.features, stored_values(list(row.features.values())),
                          strict=True))
        newest = _number(held.get(EVENT_TIME_FIELD))
        if not row.per_feature_times:
            if _not_after(held.get(EVENT_TIME_FIELD), t):
                held.update(values)
                held[EVENT_TIME_FIELD] = time_text
            self._drop_if_empty(key)
            return
        candidates = {name: value for name, value in values.items()
                      if not (row.last_values and value == NULL)}
        if newest is not None and newest <= t:
            written = candidates  # no feature time is above the row time __ts: all pass
        else:
            written = {name: value for name, value in candidates.items()
                       if _not_after(held.get(feature_time_field(name)), t)}
        if not written:
            self._drop_if_empty(key)
            return
        oldest_at = _number(held.get(OLDEST_TIME_AT_FIELD))
        updates: Hash = {}
        for name, value in written.items():
            updates[name] = value
            updates[feature_time_field(name)] = time_text
        if newest is None or newest < t:
            updates[EVENT_TIME_FIELD] = time_text
        if oldest_at is None or t - oldest_at >= OLDEST_TIME_REFRESH_MS:
            # Exact: the oldest of the times this row leaves in place, and its own.
            kept = [text for name, text in held.items()
                    if name.startswith(feature_time_field(""))
                    and name.removeprefix(feature_time_field("")) not in written]
            updates[OLDEST_TIME_FIELD] = min([time_text, *kept], key=int)
            updates[OLDEST_TIME_AT_FIELD] = time_text
        elif t < int(held[OLDEST_TIME_FIELD]):
            updates[OLDEST_TIME_FIELD] = time_text
        held.update(updates)

    def _drop_if_empty(self, key: str) -> None:
        """Redis holds no empty hash: a row that changed nothing leaves no key behind."""
        if not self.hashes[key]:
            del self.hashes[key]

    def _advance_progress(self, key: str, watermark: int | None, rows: int,
                          now_ms: str) -> None:
        meta = self.hashes.setdefault(key, {})
        current = _number(meta.get(WATERMARK_FIELD))
        if watermark is not None and (current is None or current < watermark):
            meta[WATERMARK_FIELD] = str(watermark)
        meta[ROWS_FIELD] = str(int(meta.get(ROWS_FIELD, "0")) + rows)
        meta[UPDATED_AT_FIELD] = now_ms

    # ------------------------------------------------------------------ deployer

    def switch(self, view: str, active: int, namespaces: Mapping[int, str]) -> None:
        with self._lock:
            self.hashes[versions_key(view)] = version_map_fields(active, namespaces)
        self._announce(view)

    def progress(self, view: str, namespace: str) -> NamespaceProgress:
        with self._lock:
            meta = dict(self.hashes.get(meta_key(view, namespace), {}))
        return NamespaceProgress(_number(meta.get(WATERMARK_FIELD)),
                                 _number(meta.get(ROWS_FIELD)) or 0,
                                 _number(meta.get(UPDATED_AT_FIELD)))

    def clear_namespace(self, view: str, namespace: str) -> int:
        with self._lock:
            versions = self.hashes.get(versions_key(view), {})
            current = self._version_map(view)
            refuse_active(view, namespace, current)
            stale = versions_on(namespace, current)
            for version in stale:
                versions.pop(str(version), None)
            prefix = feature_key(view, namespace, "")
            doomed = [key for key in self.hashes if key.startswith(prefix)]
            for key in doomed:
                del self.hashes[key]
            self.hashes.pop(meta_key(view, namespace), None)
        if stale:
            self._announce(view)
        return len(doomed)

    def _version_map(self, view: str) -> VersionMap | None:
        fields = self.hashes.get(versions_key(view), {})
        return parse_version_map({name.encode(): value.encode()
                                  for name, value in fields.items()})

    def _announce(self, view: str) -> None:
        for subscriber in list(self._subscribers):
            subscriber.loop.call_soon_threadsafe(subscriber.switches.put_nowait, view)

    # ------------------------------------------------------------------ serving

    async def read_hashes(self, reads: Sequence[HashRead],
                          each: Callable[[int, list[RawRow]], T]) -> list[T]:
        results: list[T] = []
        for position, read in enumerate(reads):
            with self._lock:
                rows = [self._fields(read.key_prefix + suffix.decode(), read.fields)
                        for suffix in read.key_suffixes]
            results.append(each(position, rows))
        return results

    def _fields(self, key: str, fields: Sequence[str]) -> RawRow:
        held = self.hashes.get(key, {})
        return [None if (value := held.get(name)) is None else value.encode()
                for name in fields]

    async def version_maps(self, views: Iterable[str]) -> dict[str, VersionMap | None]:
        with self._lock:
            return {view: self._version_map(view) for view in views}

    async def version_switches(self) -> AsyncGenerator[str, None]:
        subscriber = _Subscriber(asyncio.get_running_loop())
        self._subscribers.append(subscriber)
        try:
            yield ""
            while True:
                yield await subscriber.switches.get()
        finally:
            self._subscribers.remove(subscriber)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        """Nothing to release: the data stays, as Redis's does when a client disconnects."""


def _number(text: str | None) -> int | None:
    return None if text is None else int(text)


def _not_after(held_time: str | None, row_time: int) -> bool:
    """Whether a row of ``row_time`` may overwrite what was written at ``held_time``: ties go
    to the later row, as a replay rewrites what it wrote."""
    return held_time is None or int(held_time) <= row_time
