"""What the deployer needs besides the registry's log: a durable checkpoint, and one leader
among its workers that wakes early when events are appended.

Each need is an interface with a PostgreSQL adapter (production) and an in-memory one (tests,
one process); tests/contracts/test_deployer_coordination.py runs one suite over both.
Leadership in PostgreSQL is a session advisory lock: it dies with its connection, so a killed
leader hands over at once.  Wake-ups there are ``LISTEN`` on the registry store's NOTIFY
channel — a hint only: the worker still polls the log by position.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert

from core.errors import FeaturePlatformError, InfrastructureError
from registry.store.memory import MemoryRegistryStore
from registry.store.postgres import NOTIFY_CHANNEL, database_errors
from registry.store.tables import deployer_checkpoints

logger = logging.getLogger(__name__)

LEADER_LOCK_KEY = 7_214_002
CHECKPOINT_NAME = "deployer"


@dataclass(frozen=True)
class SavedCheckpoint:
    position: int
    """The last event position folded into ``state``."""
    state: dict[str, Any]
    """JSON: the rollout state of each view at ``position``."""


class CheckpointStore(Protocol):
    def load(self) -> SavedCheckpoint | None:
        """The last checkpoint saved; None before the first."""
        ...

    def save(self, checkpoint: SavedCheckpoint) -> None:
        """Replace the checkpoint, durably."""
        ...


class Leadership(Protocol):
    def wait_for_events(self, timeout: float) -> None:
        """Return once events may have been appended since leadership began or since the
        last return (spurious returns allowed), else after ``timeout`` seconds."""
        ...


class LeaderElection(Protocol):
    def try_lead(self) -> AbstractContextManager[Leadership | None]:
        """Leadership while the context is open, or None when another worker leads.
        Leaving the context — or the process dying — hands leadership over."""
        ...


def lead_when_elected(election: LeaderElection, stopping: threading.Event,
                      lead: Callable[[Leadership], None], *, name: str,
                      poll_interval: float) -> None:
    """Run ``lead`` while elected, else wait to be, until ``stopping`` is set; a platform
    error (a lost database, say) ends the term and is retried after ``poll_interval``."""
    while not stopping.is_set():
        try:
            with election.try_lead() as leadership:
                if leadership is None:
                    stopping.wait(poll_interval)
                    continue
                logger.info("%s leads", name)
                lead(leadership)
        except FeaturePlatformError as error:
            logger.warning("%s loop interrupted, retrying: %s", name, error)
            stopping.wait(poll_interval)


# --------------------------------------------------------------------------- PostgreSQL

class PostgresCheckpointStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load(self) -> SavedCheckpoint | None:
        query = select(deployer_checkpoints).where(deployer_checkpoints.c.name == CHECKPOINT_NAME)
        with database_errors("deployer checkpoint"), self.engine.connect() as conn:
            row = conn.execute(query).mappings().one_or_none()
        return SavedCheckpoint(row["position"], row["state"]) if row else None

    def save(self, checkpoint: SavedCheckpoint) -> None:
        now = datetime.now(UTC)
        upsert = insert(deployer_checkpoints).values(name=CHECKPOINT_NAME,
                                                     position=checkpoint.position,
                                                     state=checkpoint.state, updated_at=now)
        with database_errors("deployer checkpoint"), self.engine.begin() as conn:
            conn.execute(upsert.on_conflict_do_update(
                index_elements=["name"], set_={"position": checkpoint.position,
                                               "state": checkpoint.state, "updated_at": now}))




class PostgresLeaderElection:
    def __init__(self, engine: Engine, lock_key: int = LEADER_LOCK_KEY) -> None:
        # A psycopg connection of its own, outside the engine's pool: the lock lives as long
        # as that one session.
        self.url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.lock_key = lock_key

    @contextmanager
    def try_lead(self) -> Iterator[Leadership | None]:
        try:
            with psycopg.connect(self.url, autocommit=True) as connection:
                locked = connection.execute("SELECT pg_try_advisory_lock(%s)",
                                            (self.lock_key,)).fetchone()
                if not locked or not locked[0]:
                    yield None
                    return
                connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                yield _ListeningLeadership(connection)
        except psycopg.Error as error:
            logger.warning("deployer leadership lost: %s", error)
            raise InfrastructureError("deployer leadership lost") from error


class _ListeningLeadership:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def wait_for_events(self, timeout: float) -> None:
        for _ in self.connection.notifies(timeout=timeout, stop_after=1):
            pass


# --------------------------------------------------------------------------- in memory

class MemoryCheckpointStore:
    """Kept as JSON text, so state that would not survive the database fails here too."""

    def __init__(self) -> None:
        self._saved: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def load(self) -> SavedCheckpoint | None:
        with self._lock:
            saved = self._saved
        return SavedCheckpoint(saved[0], json.loads(saved[1])) if saved else None

    def save(self, checkpoint: SavedCheckpoint) -> None:
        encoded = json.dumps(checkpoint.state)
        with self._lock:
            self._saved = (checkpoint.position, encoded)


class MemoryLeaderElection:
    """One leader among the workers sharing this object, woken by appends to ``store``."""

    def __init__(self, store: MemoryRegistryStore) -> None:
        self.store = store
        self._lock = threading.Lock()

    @contextmanager
    def try_lead(self) -> Iterator[Leadership | None]:
        if not self._lock.acquire(blocking=False):
            yield None
            return
        try:
            yield _PositionLeadership(self.store)
        finally:
            self._lock.release()


class _PositionLeadership:
    def __init__(self, store: MemoryRegistryStore) -> None:
        self.store = store
        self._seen = store.last_position()
        """Appends past this position are the pending wake-ups, like queued notifications."""

    def wait_for_events(self, timeout: float) -> None:
        self._seen = self.store.wait_for_append(self._seen, timeout)
