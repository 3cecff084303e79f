"""The HTTP APIs fuzzed from their own OpenAPI schemas (schemathesis).

Every operation gets examples generated from its documented parameters and bodies, valid and
invalid, and each answer must be documented: no server error, no status code or content type
the schema does not list, no schema-valid request refused as malformed.  The registry runs
in-process over the in-memory store (the PostgreSQL-specific regressions are in
test_registry_api.py); serving runs under uvicorn on loopback over Redis and a registry, the
ingest API over its in-memory event log and keys and a registry.
The seed and the example count are fixed, so a run is repeatable and takes seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, seed, settings
from litestar.testing import TestClient
from litestar.types import ASGIApp
from schemathesis.checks import not_a_server_error
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    status_code_conformance,
)

from core.domain.events import Provenance
from core.settings import RateLimit
from fp.local.base import LOOPBACK, free_port, wait_until
from ingest.app import create_ingest_app
from ingest.batches import NDJSON
from ingest.contracts import SourceContracts
from ingest.event_log import MemoryEventLog
from ingest.idempotency import MemoryIdempotencyStore
from ingest.service import IngestService
from registry.api.app import Access, create_registry_app
from registry.feed import RegistryEvents
from registry.repo_loader import load_repository
from registry.service import RegistryService
from registry.store.memory import MemoryRegistryStore
from registry.webhooks import WebhookConfig, Webhooks
from registry.webhooks.memory_inbox import MemoryDeliveryInbox
from serving.app import create_serving_app
from serving.service import Intervals

EXAMPLES_PER_OPERATION = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          positive_data_acceptance]
# A schema-valid request may still be refused with 422: whether definitions reference each
# other rightly and their expressions check, or whether a feature reference names a deployed
# view and its entity keys have the right types, is the domain's verdict, not a schema's.
DOMAIN_VERDICTS = PositiveDataAcceptanceConfig(
    expected_statuses=["2xx", "401", "404", "409", "413", "422", "429"])
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "features"
UNLIMITED = RateLimit(1_000_000, 1_000)
"""The fuzz sends far more than any caller would: the limits have tests of their own."""


def _registry_app(cache_dir: Path) -> ASGIApp:
    service = RegistryService(MemoryRegistryStore())
    webhooks = Webhooks(service, MemoryDeliveryInbox(),
                        WebhookConfig(secret="hush", cache_dir=cache_dir))
    return create_registry_app(service, Access(apply_rate_limit=UNLIMITED,
                                               webhook_rate_limit=UNLIMITED),
                               extra_handlers=webhooks.route_handlers)


registry_schema = schemathesis.openapi.from_asgi("/schema/openapi.json",
                                                 _registry_app(Path("/nonexistent/fp-git")))
registry_schema.config.checks.positive_data_acceptance = DOMAIN_VERDICTS



@registry_schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck))
@seed(20261207)
def test_the_registry_api_answers_only_what_it_documents(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


class _Server:
    """An ASGI app under uvicorn in a daemon thread, on a free loopback port."""

    def __init__(self, app: ASGIApp) -> None:
        port = free_port()
        self.url = f"http://{LOOPBACK}:{port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> _Server:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "not started"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)


def _serving_app(registry_url: str, redis_url: str) -> ASGIApp:
    return create_serving_app(registry_url, redis_url, intervals=Intervals(
        registry_poll=0.1, version_safety_refresh=1.0, retry_after_error=0.2))


# The schema is the app's own, read without starting it; the examples go to a running one.
serving_schema = schemathesis.openapi.from_dict(TestClient(
    _serving_app("http://127.0.0.1:9", "redis://127.0.0.1:9/0")).get(
    "/schema/openapi.json").json())
serving_schema.config.checks.positive_data_acceptance = DOMAIN_VERDICTS


@pytest.fixture(scope="module")
def serving_url(stream_redis_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[str]:
    with _Server(_registry_app(tmp_path_factory.mktemp("git"))) as registry, \
            _Server(_serving_app(registry.url, stream_redis_url)) as serving:
        yield serving.url


@serving_schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck))
@seed(20261207)
def test_the_serving_api_answers_only_what_it_documents(case: Any, serving_url: str) -> None:
    case.call_and_validate(base_url=serving_url, checks=CHECKS)


def _ingest_app(registry_url: str) -> ASGIApp:
    contracts = SourceContracts()
    service = IngestService(RegistryEvents(registry_url, contracts), contracts,
                            MemoryEventLog(), MemoryIdempotencyStore(),
                            delivery_timeout_ms=1_000, idempotency_window_ms=60_000)
    return create_ingest_app(service, Access())


@schemathesis.serializer(NDJSON)
def _ndjson(_: Any, value: Any) -> bytes:
    """NDJSON bodies as the schema types them: text (one JSON event a line)."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


ingest_schema = schemathesis.openapi.from_dict(TestClient(
    _ingest_app("http://127.0.0.1:9")).get("/schema/openapi.json").json())
ingest_schema.config.checks.positive_data_acceptance = DOMAIN_VERDICTS


@pytest.fixture(scope="module")
def ingest_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    registry = RegistryService(MemoryRegistryStore())
    registry.apply(load_repository(EXAMPLES), Provenance(actor="fuzz"))
    with _Server(create_registry_app(registry)) as registry_server, \
            _Server(_ingest_app(registry_server.url)) as ingest:
        # Until the ingest API has read the registry it answers 503 to every event; on a
        # loaded machine its first read can miss the start, and the next comes a second later.
        wait_until(lambda: httpx.get(f"{ingest.url}/healthz", timeout=5).json()[
            "registry_loaded"], 30, "the ingest API to read the registry")
        yield ingest.url


@ingest_schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck))
@seed(20261207)
def test_the_ingest_api_answers_only_what_it_documents(case: Any, ingest_url: str) -> None:
    case.call_and_validate(base_url=ingest_url, checks=CHECKS)
