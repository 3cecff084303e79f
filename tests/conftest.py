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
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fp.local.base import free_port, wait_until
from fp.local.postgres import LocalPostgres
from registry.store.migrate import upgrade_to_head
from registry.store.postgres import PostgresRegistryStore, create_registry_engine

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REGISTRY_TABLES = "fp_events, fp_definitions, fp_definition_versions, fp_webhook_deliveries"


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
def registry_server(store: PostgresRegistryStore, database_url: str, tmp_path: Path,
                    ) -> Iterator[RunningRegistry]:
    """`fp registry serve` as a real subprocess on a free port, over an emptied database."""
    port = free_port()
    env = {**os.environ, "FP_DATABASE_URL": database_url,
           "FP_REGISTRY_URL": f"http://127.0.0.1:{port}", "FP_API_TOKENS": "", "NO_COLOR": "1"}
    log = (tmp_path / "registry.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "fp.cli", "registry", "serve", "--port",
                                str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _healthy(f"http://127.0.0.1:{port}"), 30, "the registry server")
        yield RunningRegistry(f"http://127.0.0.1:{port}", env)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
