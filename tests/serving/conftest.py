"""Real services for the serving tests: Redis, a registry API over Postgres, the serving API.

Redis: ``FP_TEST_REDIS_URL`` if set, else the server on 127.0.0.1:6379 (database 14, so the
keys stay apart from other suites) if it answers, else a throwaway ``LocalRedis``.  Every
view a test creates has a name unique to the test session, and every key of those views is
deleted afterwards.  The registry and serving apps run under uvicorn in background threads on
free ports, exactly as in production, and the tests talk to them over HTTP.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from litestar.types import ASGIApp
from sqlalchemy import text

from core.domain.layout import (
    EVENT_TIME_FIELD,
    OLDEST_TIME_AT_FIELD,
    OLDEST_TIME_FIELD,
    feature_key,
    feature_time_field,
    versions_key,
)
from fp.local.base import LOOPBACK, free_port
from registry.api.app import create_registry_app
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from serving.app import create_serving_app
from serving.service import Intervals
from sinks.online_store import RedisOnlineStore

SHARED_REDIS = "redis://127.0.0.1:6379/14"
REGISTRY_TABLES = "fp_events, fp_definitions, fp_definition_versions"
FAST_REFRESH = Intervals(registry_poll=0.1, version_safety_refresh=1.0, retry_after_error=0.2)


def _answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    configured = os.environ.get("FP_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if _answers(SHARED_REDIS):
        yield SHARED_REDIS
        return
    from fp.local.redis import LocalRedis

    server = LocalRedis()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class ThreadedServer:
    """An ASGI app under uvicorn in a daemon thread, on a free loopback port."""

    def __init__(self, app: ASGIApp) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=self.port,
                                                     log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)


@pytest.fixture(scope="module")
def registry_url(database_url: str) -> Iterator[str]:
    """A registry API over the session's database, emptied first (other suites' leftovers)."""
    engine = create_registry_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {REGISTRY_TABLES} RESTART IDENTITY"))
    app = create_registry_app(RegistryService(PostgresRegistryStore(engine)))
    with ThreadedServer(app) as server:
        yield server.url
    engine.dispose()


@pytest.fixture(scope="module")
def serving_url(registry_url: str, redis_url: str) -> Iterator[str]:
    with ThreadedServer(create_serving_app(registry_url, redis_url,
                                           intervals=FAST_REFRESH)) as server:
        yield server.url


@pytest.fixture(scope="module")
def serving(serving_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serving_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def registry(registry_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_url, timeout=30) as client:
        yield client


class OnlineStore:
    """Writes feature hashes as the stream sink does, or as an older sink did (raw, so that a
    test chooses every field), and switches version maps through the deployer's store."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.versions = RedisOnlineStore(url)
        self.views: set[str] = set()

    def write(self, view: str, namespace: str, entity_key: str, values: Mapping[str, str],
              event_time: int, *, feature_times: Mapping[str, int] | None = None,
              oldest_time: bool = True) -> None:
        """``values`` are stored as given: the JSON text of each value.  With
        ``feature_times``, ``__ts_min`` too unless not ``oldest_time`` (a hash written before
        the sink kept it)."""
        self.views.add(view)
        fields: dict[str, str | int] = {**values, EVENT_TIME_FIELD: event_time}
        fields.update({feature_time_field(name): t for name, t in (feature_times or {}).items()})
        if feature_times and oldest_time:
            fields.update({OLDEST_TIME_FIELD: min(feature_times.values()),
                           OLDEST_TIME_AT_FIELD: event_time})
        self.client.hset(feature_key(view, namespace, entity_key), mapping=fields)

    def switch(self, view: str, active: int, namespaces: Mapping[int, str]) -> None:
        self.views.add(view)
        self.versions.switch(view, active, namespaces)

    def remove_everything(self) -> None:
        for view in self.views:
            for key in self.client.scan_iter(match=f"fp:{view}:*", count=1000):
                self.client.delete(key)
            self.client.delete(versions_key(view))
        self.client.close()


@pytest.fixture
def online_store(redis_url: str) -> Iterator[OnlineStore]:
    store = OnlineStore(redis_url)
    yield store
    store.remove_everything()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """A name unique to this test run: views of different tests never share keys."""
    token = uuid.uuid4().hex[:8]
    return lambda name: f"{name}_{token}"


def apply(registry: httpx.Client, definitions: list[dict[str, Any]]) -> dict[str, Any]:
    response = registry.post("/v1/apply", json={"definitions": definitions})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
