"""Shared fixtures: real services, found or started once per test session.

Postgres: ``FP_TEST_DATABASE_URL`` if set, else a server on 127.0.0.1:5432 if one answers,
else a throwaway local server started here.  Each session gets its own fresh database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fp.local.base import answers_ok, free_port, wait_until
from fp.local.flink import LocalFlink
from fp.local.kafka import LocalKafka
from fp.local.postgres import LocalPostgres
from fp.local.redis import LocalRedis
from registry.store.migrate import upgrade_to_head
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from sinks.flink import FlinkClient
from sinks.flink_jars import ensure_kafka_connector_jars
from tests.services import PlatformProcess

pytest_plugins = ["tests.platform"]
"""The end-to-end platform's fixtures, shared by the deployer's and the UI's tests."""

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REGISTRY_TABLES = ("fp_events, fp_definitions, fp_definition_versions, fp_webhook_deliveries, "
                   "fp_webhook_applied_commits, fp_deployer_checkpoints, fp_drift_windows, "
                   "fp_drift_readings")


def _reachable(url: str) -> bool:
    try:
        with create_engine(url, connect_args={"connect_timeout": 3}).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("FP_TEST_DATABASE_URL", DEFAULT_POSTGRES)
    if _reachable(url):
        yield url
        return
    server = LocalPostgres(tmp_path_factory.mktemp("postgres"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database at migration head, dropped after the session."""
    name = f"fp_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(database_url: str) -> Iterator[PostgresRegistryStore]:
    engine = create_registry_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {REGISTRY_TABLES} RESTART IDENTITY"))
    yield PostgresRegistryStore(engine)
    engine.dispose()


@pytest.fixture
def examples_path() -> Path:
    return Path(__file__).resolve().parents[1] / "examples" / "features"


@dataclass(frozen=True)
class RunningRegistry:
    url: str
    env: dict[str, str]
    """Environment for `fp` subprocesses talking to this registry."""


@pytest.fixture
def registry_env() -> dict[str, str]:
    """Settings the registry server runs with besides its database; a test module overrides
    this fixture to give it more (the UI's tests: tokens, Redis, the serving API)."""
    return {}


@pytest.fixture
def registry_server(store: PostgresRegistryStore, database_url: str, tmp_path: Path,
                    registry_env: dict[str, str]) -> Iterator[RunningRegistry]:
    """`fp registry serve` as a real subprocess on a free port, over an emptied database."""
    port = free_port()
    env = {**os.environ, "FP_DATABASE_URL": database_url,
           "FP_REGISTRY_URL": f"http://127.0.0.1:{port}", "FP_API_TOKENS": "", "NO_COLOR": "1",
           **registry_env}
    log = (tmp_path / "registry.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "fp.cli", "registry", "serve", "--port",
                                str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(partial(answers_ok, f"http://127.0.0.1:{port}/healthz"), 30,
                   "the registry server")
        yield RunningRegistry(f"http://127.0.0.1:{port}", env)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


# --------------------------------------------------------------------------- streaming

@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    yield broker.url
    broker.stop()


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlink]:
    cluster = LocalFlink(tmp_path_factory.mktemp("flink"), task_slots=4)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def flink(flink_cluster: LocalFlink) -> Iterator[FlinkClient]:
    # Submitting starts a PyFlink client JVM: on a machine shared with other suites that
    # alone was seen to take 90 s.
    client = FlinkClient(flink_cluster.url, jars=ensure_kafka_connector_jars(),
                         checkpoint_interval_ms=2000, submit_timeout=300)
    yield client
    client.close()


@pytest.fixture(scope="session")
def stream_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = LocalRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def stream_redis(stream_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stream_redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def writer(kafka_bootstrap: str, stream_redis_url: str, tmp_path: Path,
           ) -> Iterator[PlatformProcess]:
    """`fp writer run`: result topics → Redis."""
    process = PlatformProcess(["writer", "run"], {"FP_KAFKA_BOOTSTRAP": kafka_bootstrap,
                                                  "FP_REDIS_URL": stream_redis_url},
                              tmp_path / "writer.log")
    process.start()
    yield process
    process.stop()


