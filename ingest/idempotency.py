"""Safe retries: what an ``Idempotency-Key`` remembers, shared by every ingest process.

A request with a key first *claims* it.  The claim is atomic, so two processes given the
same key at once cannot both write:

- a key never seen is claimed (``running``, for a lease as long as a request may take);
- a key whose request ended with its answer (``done``) is answered with that answer again,
  and nothing is written — if the body is the same; another body is a 409;
- a key whose request was not acknowledged (``interrupted``: the broker failed) is claimed
  again, and remembers which events the broker did acknowledge before it failed: the retry
  writes only the others;
- a key still ``running`` is a 409: its first request is being answered.

A process that dies mid-request leaves ``running`` until the lease ends; then the key is
free again (what that request wrote may be written twice: docs/ingest.md, "Guarantees").

:class:`IdempotencyStore` is the interface, :class:`RedisIdempotencyStore` its adapter (one
hash per key, claimed by a Lua script) and :class:`MemoryIdempotencyStore` its in-memory twin;
tests/contracts/test_idempotency_store.py runs one suite over both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.errors import InfrastructureError, MalformedBodyError

KEY_PREFIX = "fp:_ingest:idempotency:"
"""Where the records live in Redis (beside the online store's ``fp:`` keys)."""
MAX_KEY_CHARS = 255


def check_key(key: str) -> str:
    """An ``Idempotency-Key`` header: 1 to 255 visible ASCII characters (400 otherwise)."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not all(" " < char <= "~" for char in key):
        raise MalformedBodyError(f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII "
                                 "characters (a UUID, say)")
    return key


def record_key(identity: str, source: str, key: str) -> str:
    """A key is the caller's and the source's: two callers (or two sources) never share one."""
    scoped = json.dumps([identity, source, key]).encode()
    return KEY_PREFIX + hashlib.sha256(scoped).hexdigest()


def fingerprint(*parts: str | bytes) -> str:
    """What makes two requests the same request."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(b"%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()


class State(StrEnum):
    RUNNING = "running"
    DONE = "done"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class KeyRecord:
    fingerprint: str
    state: State
    acknowledged: frozenset[int] = frozenset()
    """``interrupted``: the indexes of the events (and dead letters) the broker acknowledged."""
    status: int = 0
    """``done``: the answer's status and body."""
    answer: Mapping[str, Any] | None = None

    def to_fields(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "state": self.state.value,
                "acknowledged": json.dumps(sorted(self.acknowledged)),
                "status": str(self.status), "answer": json.dumps(self.answer)}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> KeyRecord:
        return cls(fields["fingerprint"], State(fields["state"]),
                   frozenset(json.loads(fields.get("acknowledged") or "[]")),
                   int(fields.get("status") or 0), json.loads(fields.get("answer") or "null"))


def claims(previous: KeyRecord | None, fingerprint: str) -> bool:
    """Whether a claim of a key holding ``previous`` takes it (see the module's rules)."""
    return previous is None or (previous.state is State.INTERRUPTED
                                and previous.fingerprint == fingerprint)


class IdempotencyStore(Protocol):
    async def claim(self, key: str, fingerprint: str, lease_ms: int) -> KeyRecord | None:
        """Atomically: the key's record before the claim (None: none), and, when
        :func:`claims` says so, the key now ``running`` for ``lease_ms`` (keeping what an
        interrupted request had acknowledged)."""

    async def finish(self, key: str, record: KeyRecord, keep_ms: int) -> None:
        """Store a claimed key's outcome (``done`` or ``interrupted``) for ``keep_ms``."""

    async def close(self) -> None: ...


# The claim: a key's hash holds the KeyRecord's fields.
_CLAIM = """
local previous = redis.call('HGETALL', KEYS[1])
if #previous > 0 then
  local state = redis.call('HGET', KEYS[1], 'state')
  local fingerprint = redis.call('HGET', KEYS[1], 'fingerprint')
  if state == 'interrupted' and fingerprint == ARGV[1] then
    redis.call('HSET', KEYS[1], 'state', 'running')
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return previous
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'running')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return previous
"""


class RedisIdempotencyStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis = aioredis.Redis.from_url(url, decode_responses=True,
                                              socket_timeout=5, socket_connect_timeout=5)
        self._claim = self._redis.register_script(_CLAIM)

    async def claim(self, key: str, fingerprint: str, lease_ms: int) -> KeyRecord | None:
        try:
            flat: list[str] = await self._claim(keys=[key], args=[fingerprint, lease_ms])
        except RedisError as error:
            raise InfrastructureError(f"Redis unavailable at {self.url}: {error}") from error
        return KeyRecord.from_fields(dict(zip(flat[::2], flat[1::2], strict=True))) \
            if flat else None

    async def finish(self, key: str, record: KeyRecord, keep_ms: int) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=record.to_fields())
                pipe.pexpire(key, keep_ms)
                await pipe.execute()
        except RedisError as error:
            raise InfrastructureError(f"Redis unavailable at {self.url}: {error}") from error

    async def close(self) -> None:
        await self._redis.aclose()


class MemoryIdempotencyStore:
    """The in-memory twin, with a clock the tests move (keys expire as in Redis)."""

    def __init__(self) -> None:
        self.now_ms = 0
        self._records: dict[str, tuple[KeyRecord, int]] = {}

    def _current(self, key: str) -> KeyRecord | None:
        held = self._records.get(key)
        if held is None or held[1] <= self.now_ms:
            self._records.pop(key, None)
            return None
        return held[0]

    async def claim(self, key: str, fingerprint: str, lease_ms: int) -> KeyRecord | None:
        previous = self._current(key)
        if claims(previous, fingerprint):
            acknowledged = previous.acknowledged if previous else frozenset()
            self._records[key] = (KeyRecord(fingerprint, State.RUNNING, acknowledged),
                                  self.now_ms + lease_ms)
        return previous

    async def finish(self, key: str, record: KeyRecord, keep_ms: int) -> None:
        self._records[key] = (record, self.now_ms + keep_ms)

    async def close(self) -> None:
        return None
