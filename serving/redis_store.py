"""The Redis adapter: feature hashes, version maps and the version-switch channel.

Batch reads send every HMGET of a request (entities times views) in one pipelined write and read
the replies back in order: one round trip, no MULTI.  The commands are packed here rather than
by redis-py's Pipeline, whose generic per-argument packing costs ≈8 µs a command — 4 ms of
a 500-command request — while an HMGET of a read differs from the next only by its key.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from core.domain.layout import VERSIONS_CHANNEL, versions_key
from core.errors import InfrastructureError
from serving.version_maps import VersionMap, parse_version_map

logger = logging.getLogger(__name__)

RawRow = list[bytes | None]
T = TypeVar("T")


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


@functools.lru_cache(maxsize=4096)
def _packed_fields(fields: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The RESP text an HMGET of ``fields`` starts with and ends with (its key goes between):
    the same for every request of a plan, so packed once."""
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(fields))
    return head, b"".join(_bulk(name.encode()) for name in fields)


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


class _ReadConnections:
    """Connections for the batch reads, beside redis-py's pool (which keeps serving the
    version maps).  A pool checkout takes a lock and probes the connection for unread data
    — a tenth of a single-entity request — while these reads never leave any: a round trip
    that fails is disconnected and dropped.  At most ``limit`` are open; more concurrent
    requests wait for one."""

    def __init__(self, pool: redis.ConnectionPool, limit: int) -> None:
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


class RedisOnlineStore:
    def __init__(self, url: str, max_connections: int = 32, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        # No socket_timeout: redis-py would arm a timer around every reply it reads (500 per
        # batch request, a third of the round trip's cost), and the pub/sub listener must be
        # able to wait forever.  Round trips get one deadline each instead.
        self._redis = redis.Redis.from_url(url, max_connections=max_connections,
                                           socket_connect_timeout=timeout)
        self._reads = _ReadConnections(self._redis.connection_pool, max_connections)

    async def close(self) -> None:
        await self._reads.close()
        await self._redis.aclose()

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
        """The current version map of each view (None: no map, the view is not deployed)."""
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

    async def version_switches(self) -> AsyncIterator[str]:
        """Names of views whose version map changed, as published on ``fp:versions``.

        Yields ``""`` once subscribed (and after each reconnect), meaning "re-read every
        map": switches published while not subscribed were missed.
        """
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
