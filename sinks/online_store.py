"""The online store: feature hashes, namespace progress and version maps over the key layout
of :mod:`core.domain.layout` (docs/reference.md, "Online store layout").

One store seen from three sides, each a protocol: the writer applies result rows
(:class:`FeatureWriter`), the deployer switches version maps, reads a namespace's progress
and purges namespaces (:class:`NamespaceControl`), serving reads hashes and follows version
switches (:class:`FeatureReader`).  :class:`RedisOnlineStore` is the production adapter and
holds every line of Redis code of the online store; :mod:`sinks.online_memory` is the
in-memory fake.  ``tests/contracts/test_online_store.py`` holds both to the same behaviour.
Stores written by a release before the reserved ``_meta``/``_versions`` segments move to the
current layout once, with :meth:`RedisOnlineStore.migrate_key_layout`.

Writes are exactly-once in effect: a row is applied only when it is not older than what the
hash holds (per feature when the view's windows close at different times), so replays and
out-of-order rows never move a value backwards.  Reads of a batch request send every HMGET
(entities times views) in one pipelined write and read the replies back in order: one round
trip, no MULTI.  The commands are packed here rather than by redis-py's Pipeline, whose
generic per-argument packing costs ≈8 µs a command — 4 ms of a 500-command request — while an
HMGET of a read differs from the next only by its key.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis
import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from core.domain.layout import (
    ACTIVE_FIELD,
    EVENT_TIME_FIELD,
    VERSIONS_CHANNEL,
    feature_key,
    meta_key,
    namespace_of,
    versions_key,
)
from core.errors import InfrastructureError

logger = logging.getLogger(__name__)

RawRow = list[bytes | None]
"""The fields of one hash as a read asked for them (None: absent)."""
T = TypeVar("T")

OLDEST_TIME_REFRESH_MS = 10_000
"""How often (in event time) the writer recomputes a hash's ``__ts_min`` exactly; in between it
is a lower bound that may lag behind.  Serving reads per-feature times only for rows whose
bound is too old to rule out an expired value."""

WATERMARK_FIELD, ROWS_FIELD, UPDATED_AT_FIELD = "watermark", "rows", "updated_at"
"""The fields of a namespace's meta hash."""


# ---------------------------------------------------------------------------- values

@dataclass(frozen=True)
class FeatureRow:
    """One result row: the features of one entity as of ``event_time_ms``."""

    entity_key: str
    event_time_ms: int
    features: dict[str, Any]
    per_feature_times: bool
    last_values: bool
    """Values of ``last`` features: a null means "no value yet" and leaves the held one."""
    advances_watermark: bool

    @classmethod
    def parse(cls, payload: bytes) -> FeatureRow:
        """A row as the compiled jobs write it to their result topic."""
        try:
            r = _decode_row(payload)
        except msgspec.DecodeError:
            # Not the exact shape ("t" a float or string, …) or not JSON: the general path,
            # which accepts what it always accepted and raises ValueError/KeyError otherwise.
            row = json.loads(payload)
            return cls(entity_key=row["e"], event_time_ms=int(row["t"]), features=row["f"],
                       per_feature_times=bool(row["p"]), last_values=bool(row["l"]),
                       advances_watermark=bool(row["w"]))
        return cls(r.e, r.t, r.f, r.p, r.l, r.w)


class _ResultRow(msgspec.Struct):
    """The result row exactly as the compiler writes it, decoded in one C call."""

    e: str
    t: int
    f: dict[str, Any]
    p: bool
    l: bool  # noqa: E741 - the compiler's field name
    w: bool


_decode_row = msgspec.json.Decoder(_ResultRow).decode

RowBatches = Mapping[tuple[str, str], Sequence[FeatureRow]]
"""Rows to apply, by (view, namespace)."""


def stored_values(values: list[Any]) -> list[str]:
    """The text a hash holds for each feature value: ``[json.dumps(v) for v in values]``,
    byte for byte, in one call of the C encoder — the list's text split at its separators.
    When a value's own text holds a separator (a string with ", ", a container), the pieces
    do not add up and each value is encoded alone."""
    if not values:
        return []
    pieces = json.dumps(values)[1:-1].split(", ")
    return pieces if len(pieces) == len(values) else [json.dumps(v) for v in values]


@dataclass(frozen=True)
class NamespaceProgress:
    """A namespace's meta hash, kept by the writer."""

    watermark: int | None
    """Epoch ms up to which the namespace's results are complete (the newest window end
    written); None before any."""
    rows: int
    """Rows applied, replays included."""
    updated_at_ms: int | None
    """Wall-clock time of the last batch applied."""


@dataclass(frozen=True, slots=True)
class VersionMap:
    """``fp:_versions:{view}``: the active version and the namespace of every serveable one."""

    active: int | None
    namespaces: Mapping[int, str]

    def namespace(self, version: int) -> str | None:
        return self.namespaces.get(version)


def parse_version_map(fields: Mapping[bytes, bytes]) -> VersionMap | None:
    """The map in a ``HGETALL`` reply; None when the hash is absent (view not deployed)."""
    if not fields:
        return None
    namespaces: dict[int, str] = {}
    active: int | None = None
    for raw_name, raw_value in fields.items():
        name, value = raw_name.decode(), raw_value.decode()
        try:
            if name == ACTIVE_FIELD:
                active = int(value)
            else:
                namespaces[int(name)] = value
        except ValueError:
            logger.warning("ignoring field %r=%r of a version map: not a version number",
                           name, value)
    if active is not None and active not in namespaces:
        # The deployer adds the active version's field in the same HSET; if one ever does not,
        # the namespace a version's own job writes is still the conventional one.
        namespaces[active] = namespace_of(active)
    return VersionMap(active, MappingProxyType(namespaces))


def version_map_fields(active: int, namespaces: Mapping[int, str]) -> dict[str, str]:
    """The fields of ``fp:_versions:{view}`` for a map (what :func:`parse_version_map` reads)."""
    return {ACTIVE_FIELD: str(active), **{str(v): ns for v, ns in namespaces.items()}}


def refuse_active(view: str, namespace: str, current: VersionMap | None) -> None:
    """Purging the namespace serving answers from would turn every read into a miss."""
    if current is not None and current.active is not None \
            and current.namespace(current.active) == namespace:
        raise InfrastructureError(f"namespace {namespace} of {view} is active; "
                                  "refusing to delete data that is being served")


def versions_on(namespace: str, current: VersionMap | None) -> list[int]:
    """The versions a map serves from ``namespace``."""
    return [] if current is None else [v for v, ns in current.namespaces.items()
                                       if ns == namespace]


@functools.lru_cache(maxsize=4096)
def _packed_fields(fields: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The RESP text an HMGET of ``fields`` starts with and ends with (its key goes between):
    the same for every request of a plan, so packed once."""
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(fields))
    return head, b"".join(_bulk(name.encode()) for name in fields)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


@dataclass(frozen=True, slots=True)
class HashRead:
    """The same fields of many hashes whose keys share a prefix: one HMGET per key."""

    key_prefix: str
    key_suffixes: Sequence[bytes]
    fields: tuple[str, ...]

    def pack(self, out: list[bytes]) -> None:
        """Append this read's commands in RESP (the wire format every Redis speaks)."""
        head, tail = _packed_fields(self.fields)
        prefix = self.key_prefix.encode()
        length = len(prefix)
        out.extend(b"%b$%d\r\n%b%b\r\n%b" % (head, length + len(suffix), prefix, suffix, tail)
                   for suffix in self.key_suffixes)


# ---------------------------------------------------------------------------- the interface

class FeatureWriter(Protocol):
    """The writer's side: result rows into feature hashes, progress into the meta hash."""

    def apply(self, batches: RowBatches) -> None:
        """Apply every row not older than what its hash holds (per feature with per-feature
        times; nulls of last-values rows skipped), then count the rows in each namespace's
        progress and advance its watermark to the newest watermark-advancing row.
        Raises :class:`InfrastructureError`."""


class NamespaceControl(Protocol):
    """The deployer's side: version maps, namespace progress and purges."""

    def switch(self, view: str, active: int, namespaces: Mapping[int, str]) -> None:
        """Replace the view's version map in one atomic step and tell every server."""

    def progress(self, view: str, namespace: str) -> NamespaceProgress:
        """What the writer has recorded of the namespace (nothing yet: no watermark, 0 rows)."""

    def clear_namespace(self, view: str, namespace: str) -> int:
        """Take a namespace out of the version map (pinned versions on it stop being served,
        servers are told) and delete its keys and progress; returns the feature hashes
        deleted.  The active namespace is refused with :class:`InfrastructureError`."""


class FeatureReader(Protocol):
    """The serving side: hashes and version maps, and the switches as they happen."""

    async def read_hashes(self, reads: Sequence[HashRead],
                          each: Callable[[int, list[RawRow]], T]) -> list[T]:
        """``each(position, rows)`` of every read, in order: the fields of each of its keys."""

    async def version_maps(self, views: Iterable[str]) -> dict[str, VersionMap | None]:
        """The current version map of each view (None: no map, the view is not deployed)."""

    def version_switches(self) -> AsyncGenerator[str, None]:
        """Names of views whose version map changed.  Yields ``""`` once subscribed (and after
        each resubscription), meaning "re-read every map": switches made while not
        subscribed were missed."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class OnlineStore(FeatureWriter, NamespaceControl, FeatureReader, Protocol):
    """The whole store, as the contract suite exercises it."""


# ---------------------------------------------------------------------------- Redis

# Applies many rows in one call (a script call per row cost more than the row itself).
# KEYS: the feature hash of each row.  ARGV, row after row in KEYS order: event time, mode
# (0: one time for the row; 1: a time per feature; 2: a time per feature and a last-values row,
# whose nulls are skipped), feature count n, the n feature names, then their n values.
# Returns the number of rows that changed something.
_APPLY_ROWS = """
local function hset(key, fields)
  for i = 1, #fields, 4000 do
    redis.call('HSET', key, unpack(fields, i, math.min(i + 3999, #fields)))
  end
end
local function hmget(key, fields)
  local values = {}
  for i = 1, #fields, 4000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 3999, #fields)))
    for j = 1, #part do values[#values + 1] = part[j] end
  end
  return values
end
local OLDEST_REFRESH = {oldest_refresh_ms}
local a, applied = 1, 0
for k = 1, #KEYS do
  local key, time, mode, n = KEYS[k], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local t, first, last = tonumber(time), a + 3, a + 2 + n
  a = last + n + 1
  if mode == '0' then
    local current = redis.call('HGET', key, '__ts')
    if (not current) or tonumber(current) <= t then
      local fields = {}
      for i = first, last do
        fields[#fields + 1] = ARGV[i]
        fields[#fields + 1] = ARGV[i + n]
      end
      fields[#fields + 1] = '__ts'
      fields[#fields + 1] = time
      hset(key, fields)
      applied = applied + 1
    end
  else
    local held = redis.call('HMGET', key, '__ts', '__ts_min', '__ts_min_at')
    local newest, oldest, oldest_at = held[1], held[2], held[3]
    local fields, written = {}, {}
    if newest and tonumber(newest) <= t then
      -- Every feature time of a hash is at most its __ts (this script keeps it so): all pass.
      for i = first, last do
        if not (mode == '2' and ARGV[i + n] == 'null') then
          fields[#fields + 1] = ARGV[i]
          fields[#fields + 1] = ARGV[i + n]
          fields[#fields + 1] = '__ts:' .. ARGV[i]
          fields[#fields + 1] = time
          written[ARGV[i]] = true
        end
      end
    else
      local names, times = {}, {}
      for i = first, last do
        if not (mode == '2' and ARGV[i + n] == 'null') then
          names[#names + 1] = i
          times[#times + 1] = '__ts:' .. ARGV[i]
        end
      end
      local previous = hmget(key, times)
      for j = 1, #names do
        if (not previous[j]) or tonumber(previous[j]) <= t then
          local i = names[j]
          fields[#fields + 1] = ARGV[i]
          fields[#fields + 1] = ARGV[i + n]
          fields[#fields + 1] = times[j]
          fields[#fields + 1] = time
          written[ARGV[i]] = true
        end
      end
    end
    if #fields > 0 then
      if (not newest) or tonumber(newest) < t then
        fields[#fields + 1] = '__ts'
        fields[#fields + 1] = time
      end
      -- __ts_min: a lower bound of the per-feature times, exact when computed (from the times
      -- the row leaves in place, and its own), then refreshed every OLDEST_REFRESH ms of event
      -- time.  Times only move forward, so in between it can only fall behind, never ahead.
      if (not oldest_at) or t - tonumber(oldest_at) >= OLDEST_REFRESH then
        local low, low_text, all = t, time, redis.call('HGETALL', key)
        for i = 1, #all, 2 do
          if string.sub(all[i], 1, 5) == '__ts:' and not written[string.sub(all[i], 6)] then
            local value = tonumber(all[i + 1])
            if value and value < low then low, low_text = value, all[i + 1] end
          end
        end
        fields[#fields + 1] = '__ts_min'
        fields[#fields + 1] = low_text
        fields[#fields + 1] = '__ts_min_at'
        fields[#fields + 1] = time
      elseif t < tonumber(oldest) then  -- a feature's first time, older than the bound
        fields[#fields + 1] = '__ts_min'
        fields[#fields + 1] = time
      end
      hset(key, fields)
      applied = applied + 1
    end
  end
end
return applied
""".replace("{oldest_refresh_ms}", str(OLDEST_TIME_REFRESH_MS))
ROWS_PER_CALL = 100
"""Rows per script call.  Redis runs one call at a time, so this bounds how long a write
holds up readers (≈ 1.5 ms at ≈ 14 µs a row of 10 features); 100 already saves the per-call
overhead (Redis CPU a row is the same from 50 to 500; 1000 is slower, and doubles p99 reads)."""

# KEYS[1] meta hash; ARGV: watermark candidate (or -1), rows, updated_at
_ADVANCE_META = """
local current = redis.call('HGET', KEYS[1], 'watermark')
if tonumber(ARGV[1]) >= 0 and ((not current) or tonumber(current) < tonumber(ARGV[1])) then
  redis.call('HSET', KEYS[1], 'watermark', ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'rows', ARGV[2])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
return 1
"""

PURGE_BATCH = 1000
"""Keys scanned and unlinked per command when a namespace is purged."""

FIRST_LAYOUT_META_PREFIX = "fp:meta:"
FIRST_LAYOUT_VERSIONS_PREFIX = "fp:versions:"
"""Where the first layout kept progress (``fp:meta:{view}:{namespace}``) and version maps
(``fp:versions:{view}``): beside feature hashes, so that a view named ``meta`` could write
over a namespace's progress and a purge of it delete another view's."""

# KEYS[1] a key of the first layout, KEYS[2] its key now.  A hash holding __ts is a feature
# hash of a view named `meta` or `versions` and stays.  Returns 1 moved, 2 superseded (the
# current layout's key was written already, by this release: it is the newer one), 0 left.
_MOVE_TO_CURRENT_LAYOUT = """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[1])
  return 2
end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
"""


@dataclass(frozen=True)
class KeyMigration:
    """What :meth:`RedisOnlineStore.migrate_key_layout` did."""

    moved: int
    """Progress hashes and version maps renamed to their current keys."""
    superseded: int
    """First-layout keys deleted because their current key had been written already."""


def current_layout_key(key: str) -> str | None:
    """The current key of a first-layout progress hash or version map; None for any other key
    (a first-layout feature hash of a view named ``meta`` can look like progress: the caller
    tells them apart by the ``__ts`` every feature hash holds).  View names and namespaces
    hold no ``:``, so the segments count tells the kinds apart."""
    parts = key.split(":")
    if key.startswith(FIRST_LAYOUT_META_PREFIX) and len(parts) == 4:
        return meta_key(parts[2], parts[3])
    if key.startswith(FIRST_LAYOUT_VERSIONS_PREFIX) and len(parts) == 3:
        return versions_key(parts[2])
    return None


def _row_arguments(rows: Sequence[FeatureRow]) -> list[Any]:
    """ARGV of :data:`_APPLY_ROWS` for ``rows``."""
    values = stored_values([v for row in rows for v in row.features.values()])
    args: list[Any] = []
    extend, position = args.extend, 0
    for row in rows:
        features, count = row.features, len(row.features)
        mode = (2 if row.last_values else 1) if row.per_feature_times else 0
        extend((row.event_time_ms, mode, count))
        extend(features)
        extend(values[position:position + count])
        position += count
    return args


def batch_watermark(rows: Iterable[FeatureRow]) -> int | None:
    """The newest time of the rows that advance the watermark; None if none does."""
    return max((r.event_time_ms for r in rows if r.advances_watermark), default=None)


class _ReadConnections:
    """Connections for the batch reads, beside redis-py's pool (which keeps serving the
    version maps).  A pool checkout takes a lock and probes the connection for unread data
    — a tenth of a single-entity request — while these reads never leave any: a round trip
    that fails is disconnected and dropped.  At most ``limit`` are open; more concurrent
    requests wait for one."""

    def __init__(self, pool: aioredis.ConnectionPool, limit: int) -> None:
        self._pool = pool
        self._idle: list[AbstractConnection] = []
        self._slots = asyncio.Semaphore(limit)

    async def acquire(self) -> AbstractConnection:
        await self._slots.acquire()
        if self._idle:
            return self._idle.pop()
        connection: AbstractConnection = self._pool.connection_class(
            **self._pool.connection_kwargs)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            self._slots.release()
            raise
        return connection

    def release(self, connection: AbstractConnection) -> None:
        self._idle.append(connection)
        self._slots.release()

    async def discard(self, connection: AbstractConnection) -> None:
        self._slots.release()
        await connection.disconnect()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()


@contextmanager
def _as_infrastructure_error(what: str) -> Iterator[None]:
    """Redis failing is an outage: callers (the deployer above all) retry it as one."""
    try:
        yield
    except RedisError as error:
        raise InfrastructureError(f"{what} failed: {error}") from error


class RedisOnlineStore:
    """The online store in Redis.  The writer and the deployer use the blocking client, the
    serving API the asyncio one; neither connects before its first command, so each process
    opens only the connections of its own side."""

    def __init__(self, url: str, max_connections: int = 32, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._client = redis.Redis.from_url(url)
        self._apply_rows = self._client.register_script(_APPLY_ROWS)
        self._advance_meta = self._client.register_script(_ADVANCE_META)
        self._move_to_current_layout = self._client.register_script(_MOVE_TO_CURRENT_LAYOUT)
        # No socket_timeout: redis-py would arm a timer around every reply it reads (500 per
        # batch request, a third of the round trip's cost), and the pub/sub listener must be
        # able to wait forever.  Round trips get one deadline each instead.
        self._redis = aioredis.Redis.from_url(url, max_connections=max_connections,
                                              socket_connect_timeout=timeout)
        self._reads = _ReadConnections(self._redis.connection_pool, max_connections)

    # ------------------------------------------------------------------ writer

    def apply(self, batches: RowBatches) -> None:
        """Apply rows of several (view, namespace) pairs in one pipelined round trip.

        The script calls stream out on one connection as they are encoded, so Redis runs a
        call while the next one is being built; every reply is read at the end."""
        now_ms = str(int(time.time() * 1000))
        with _as_infrastructure_error("writing features to Redis"):
            self._load_scripts()
            errors = self._send_and_read(batches, now_ms)
        if errors:
            raise InfrastructureError(f"writing features to Redis failed: {errors[0]}")

    def _load_scripts(self) -> None:
        """What a redis-py pipeline does before it runs: load the scripts Redis lacks."""
        scripts = (self._apply_rows, self._advance_meta)
        present = cast(list[bool], self._client.script_exists(*(s.sha for s in scripts)))
        for script, exists in zip(scripts, present, strict=True):
            if not exists:
                script.sha = cast(str, self._client.script_load(script.script))

    def _send_and_read(self, batches: RowBatches, now_ms: str) -> list[redis.ResponseError]:
        pool = self._client.connection_pool
        connection = pool.get_connection()
        calls, errors = 0, []
        try:
            for (view, namespace), rows in batches.items():
                for start in range(0, len(rows), ROWS_PER_CALL):
                    chunk = rows[start:start + ROWS_PER_CALL]
                    keys = [feature_key(view, namespace, r.entity_key) for r in chunk]
                    # No health check (a PING) once replies are pending: it would read theirs.
                    connection.send_command("EVALSHA", self._apply_rows.sha, len(keys), *keys,
                                            *_row_arguments(chunk), check_health=calls == 0)
                    calls += 1
                watermark = batch_watermark(rows)
                connection.send_command("EVALSHA", self._advance_meta.sha, 1,
                                        meta_key(view, namespace),
                                        -1 if watermark is None else watermark, len(rows),
                                        now_ms, check_health=calls == 0)
                calls += 1
            for _ in range(calls):
                try:
                    connection.read_response()
                except redis.ResponseError as error:  # the other replies are still read
                    errors.append(error)
        except BaseException:
            connection.disconnect()  # replies left unread would answer the next command
            raise
        finally:
            pool.release(connection)
        return errors

    # ------------------------------------------------------------------ deployer

    def switch(self, view: str, active: int, namespaces: Mapping[int, str]) -> None:
        with (_as_infrastructure_error(f"switching {view} to v{active}"),
              self._client.pipeline(transaction=True) as pipeline):
            pipeline.delete(versions_key(view))
            pipeline.hset(versions_key(view), mapping=version_map_fields(active, namespaces))
            pipeline.publish(VERSIONS_CHANNEL, view)
            pipeline.execute()

    def progress(self, view: str, namespace: str) -> NamespaceProgress:
        with _as_infrastructure_error(f"reading the progress of {view} {namespace}"):
            fields = cast(dict[bytes, bytes], self._client.hgetall(meta_key(view, namespace)))

        def number(name: str) -> int | None:
            value = fields.get(name.encode())
            return None if value is None else int(value)

        return NamespaceProgress(number(WATERMARK_FIELD), number(ROWS_FIELD) or 0,
                                 number(UPDATED_AT_FIELD))

    def clear_namespace(self, view: str, namespace: str) -> int:
        with _as_infrastructure_error(f"clearing {view} {namespace}"):
            self._unmap(view, namespace)
            deleted = 0
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=feature_key(view, namespace, "*"),
                                              count=PURGE_BATCH):
                batch.append(key)
                if len(batch) == PURGE_BATCH:
                    deleted += cast(int, self._client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += cast(int, self._client.unlink(*batch))
            self._client.delete(meta_key(view, namespace))
            return deleted

    def migrate_key_layout(self) -> KeyMigration:
        """Move the progress hashes and version maps of the first layout to their current keys
        (docs/reference.md, "Online store layout"); feature hashes keep theirs.  Run once
        between stopping the old release's writers, deployer and servers and starting the new
        release's, so that neither layout is written meanwhile; running it again finds
        nothing to move.  Each key moves in one script call, so a key is never lost or
        half-moved."""
        moved = superseded = 0
        with _as_infrastructure_error("migrating the online store's keys"):
            for prefix in (FIRST_LAYOUT_META_PREFIX, FIRST_LAYOUT_VERSIONS_PREFIX):
                for raw_key in self._client.scan_iter(match=f"{prefix}*", count=PURGE_BATCH):
                    key = cast(bytes, raw_key).decode()
                    current = current_layout_key(key)
                    if current is None:
                        continue
                    outcome = self._move_to_current_layout(keys=[key, current],
                                                           args=[EVENT_TIME_FIELD])
                    moved += outcome == 1
                    superseded += outcome == 2
        return KeyMigration(moved, superseded)

    def _unmap(self, view: str, namespace: str) -> None:
        """Drop the map's versions on ``namespace``, unless it is active — checked and done
        in one transaction, so that a switch in between is never undone."""
        with self._client.pipeline(transaction=True) as pipeline:
            pipeline.watch(versions_key(view))  # type: ignore[no-untyped-call]
            current = parse_version_map(
                cast(dict[bytes, bytes], pipeline.hgetall(versions_key(view))))
            refuse_active(view, namespace, current)
            stale = versions_on(namespace, current)
            pipeline.multi()
            if stale:
                pipeline.hdel(versions_key(view), *(str(version) for version in stale))
                pipeline.publish(VERSIONS_CHANNEL, view)
            pipeline.execute()

    # ------------------------------------------------------------------ serving

    async def close(self) -> None:
        await self._reads.close()
        await self._redis.aclose()
        self._client.close()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def read_hashes(self, reads: Sequence[HashRead],
                          each: Callable[[int, list[RawRow]], T]) -> list[T]:
        """``each(position, rows)`` of every read, in order: the fields of each of its keys.

        All commands go out in one pipelined write; ``each`` runs on a read's rows as soon as
        they have arrived, while Redis still works on the later reads, so that the caller's
        decoding overlaps the round trip instead of following it.
        """
        commands: list[bytes] = []
        for read in reads:
            read.pack(commands)
        sizes = [len(read.key_suffixes) for read in reads]
        if not commands:
            return [each(position, []) for position in range(len(reads))]
        try:
            connection = await self._reads.acquire()
        except (RedisError, OSError) as error:
            raise _unavailable(self.url, error) from error
        try:
            async with asyncio.timeout(self.timeout):
                await connection.send_packed_command(b"".join(commands), check_health=False)
                results = await _read_replies(connection, sizes, each)
        except BaseException as error:
            # Replies may be left unread on the socket: never hand it to the next request.
            await self._reads.discard(connection)
            if isinstance(error, RedisError | OSError | TimeoutError):
                raise _unavailable(self.url, error) from error
            raise
        self._reads.release(connection)
        return results

    async def version_maps(self, views: Iterable[str]) -> dict[str, VersionMap | None]:
        names = list(views)
        if not names:
            return {}
        try:
            async with asyncio.timeout(self.timeout), \
                    self._redis.pipeline(transaction=False) as pipeline:
                for name in names:
                    pipeline.hgetall(versions_key(name))
                replies: list[Mapping[bytes, bytes]] = await pipeline.execute()
        except (RedisError, OSError, TimeoutError) as error:
            raise _unavailable(self.url, error) from error
        return {name: parse_version_map(reply) for name, reply in zip(names, replies,
                                                                        strict=True)}

    async def version_switches(self) -> AsyncGenerator[str, None]:
        """As published on ``fp:versions``; a lost subscription is renewed."""
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(VERSIONS_CHANNEL)
                    yield ""
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            yield data.decode() if isinstance(data, bytes) else str(data)
            except (RedisError, OSError) as error:
                logger.warning("lost the %s subscription (%s); resubscribing", VERSIONS_CHANNEL,
                               error)
                await asyncio.sleep(1.0)


async def _read_replies(connection: AbstractConnection, sizes: Sequence[int],
                        each: Callable[[int, list[RawRow]], T]) -> list[T]:
    """``each`` of each group of ``sizes`` replies, called as soon as the group is in.

    With hiredis, replies are taken straight from its reader, which costs a third less than
    redis-py's ``read_response`` per reply (it re-checks the connection and awaits once per
    reply); without hiredis, through ``read_response``."""
    parser = getattr(connection, "_parser", None)
    # redis-py 5.x (pinned): the hiredis.Reader the parser feeds, set while connected.
    reader: Any = getattr(parser, "_reader", None)
    hiredis = isinstance(parser, _AsyncHiredisParser) and reader is not None
    results: list[T] = []
    for size in sizes:
        replies: list[Any] = []
        while len(replies) < size:
            if not hiredis:
                replies.append(await connection.read_response())
            elif (reply := reader.gets()) is NOT_ENOUGH_DATA:
                await parser.read_from_socket()  # type: ignore[union-attr]
            else:
                replies.append(reply)
        for reply in replies:
            if isinstance(reply, RedisError):  # e.g. WRONGTYPE: a key that is not a hash
                raise InfrastructureError(f"Redis refused a read: {reply}")
        results.append(each(len(results), replies))
    return results


def _unavailable(url: str, error: BaseException) -> InfrastructureError:
    return InfrastructureError(f"the online store (Redis at {redacted(url)}) is unavailable: "
                               f"{error}")


def redacted(url: str) -> str:
    """``url`` without its password: error messages reach clients and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
