"""Fixtures for the webhook tests: a registry app with webhooks on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select

from registry.api.app import create_registry_app
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore
from registry.store.tables import webhook_deliveries
from registry.webhooks import SandboxLimits, WebhookConfig, Webhooks
from registry.webhooks.inbox import PostgresDeliveryInbox
from tests.webhooks.support import SECRET, GitRemote

TEST_LIMITS = SandboxLimits(wall_seconds=10, cpu_seconds=3, memory_bytes=512 << 20)
ClientFactory = Callable[..., TestClient[Any]]


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path / "remote")


@pytest.fixture
def make_client(store: PostgresRegistryStore, tmp_path: Path,
                remote: GitRemote) -> Iterator[ClientFactory]:
    """Builds a registry app with webhooks (worker running) and returns its test client.
    Pushes of ``remote`` are applied: its file:// URL is listed in the repositories."""
    clients: list[TestClient[Any]] = []

    def make(secret: str | None = SECRET, **config: Any) -> TestClient[Any]:
        service = RegistryService(store)
        config.setdefault("repositories", (remote.url,))
        webhooks = Webhooks(service, PostgresDeliveryInbox(store.engine), WebhookConfig(
            secret=secret, cache_dir=tmp_path / "git-cache", limits=TEST_LIMITS,
            poll_seconds=0.2, **config))
        client = TestClient(create_registry_app(service, extra_handlers=webhooks.route_handlers,
                                                lifespan=[webhooks.lifespan]))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient[Any]:
    return make_client()


@pytest.fixture
def stored_deliveries(store: PostgresRegistryStore) -> Callable[[], int]:
    def count() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(webhook_deliveries))
                       .scalar_one())
    return count
