"""The registry's composition root: its API with the git webhooks, over PostgreSQL."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

import uvicorn
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from prometheus_client import REGISTRY

from core.errors import ConfigurationError
from core.settings import API_TOKENS, OPEN_WRITES, Settings
from registry.api.app import Access, create_registry_app
from registry.drift import DriftMetrics, DriftRegistry
from registry.service import RegistryService
from registry.store.drift import PostgresDriftStore
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from registry.ui.pages import RegistryUI
from registry.ui.registry_panels import EventLogBackfills, MonitoredDrift
from registry.ui.sources import IngestMetrics, ServingApi
from registry.webhooks import WebhookConfig, Webhooks
from registry.webhooks.inbox import PostgresDeliveryInbox

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryServer:
    app: Litestar
    writes_need_tokens: bool
    open_writes_asked: bool
    """Writes without tokens may be served on any address (``FP_OPEN_WRITES``)."""


def build(settings: Settings, extra_writes: Collection[HTTPRouteHandler] = ()) -> RegistryServer:
    """``extra_writes``: other components' write endpoints the registry serves behind its
    write guard (the command line adds the backfills')."""
    registry = settings.registry
    engine = create_registry_engine(settings.require_database_url())
    service = RegistryService(PostgresRegistryStore(engine))
    webhooks = Webhooks(service, PostgresDeliveryInbox(engine), webhook_config(settings))
    access = Access(api_tokens=registry.api_tokens, read_tokens=registry.read_tokens,
                    apply_rate_limit=registry.apply_rate_limit,
                    webhook_rate_limit=registry.webhook_rate_limit)
    drift = DriftRegistry(service, PostgresDriftStore(engine))
    REGISTRY.register(DriftMetrics(drift.store))
    app = create_registry_app(service, access, extra_handlers=webhooks.route_handlers,
                              lifespan=[webhooks.lifespan], pages=ui(service, settings, drift),
                              drift=drift, extra_writes=extra_writes)
    return RegistryServer(app, writes_need_tokens=bool(registry.api_tokens),
                          open_writes_asked=registry.open_writes)


def ui(service: RegistryService, settings: Settings, drift: DriftRegistry) -> RegistryUI:
    """The web UI, with a reader for each service the settings name (docs/ui.md); backfills
    and drift from the registry's own log and the drift monitor's store."""
    progress = live = dead_letters = None
    if settings.redis_url:
        from sinks.online_store import RedisOnlineStore

        progress = RedisOnlineStore(settings.redis_url)
    if settings.serving_url:
        live = ServingApi(settings.serving_url)
    if settings.kafka_bootstrap:
        # confluent-kafka comes with the runtime extra: imported only where Kafka is named.
        from sinks.kafka_admin import KafkaAdmin

        dead_letters = KafkaAdmin(settings.kafka_bootstrap)
    return RegistryUI(service, progress=progress, live=live, dead_letters=dead_letters,
                      ingest=IngestMetrics(settings.ingest.url),
                      backfills=EventLogBackfills(service.store),
                      drift=MonitoredDrift(drift, settings.monitor.horizon_ms),
                      kafka_bootstrap=settings.kafka_bootstrap)


def webhook_config(settings: Settings) -> WebhookConfig:
    webhooks = settings.webhooks
    return WebhookConfig(
        secret=webhooks.secret, github_secret=webhooks.github_secret,
        gitlab_secret=webhooks.gitlab_secret, repositories=webhooks.repositories,
        retention=timedelta(milliseconds=webhooks.retention_ms), branch=webhooks.branch,
        features_path=webhooks.features_path, python=webhooks.python)


def serve(server: RegistryServer, host: str, port: int) -> None:
    """Run the registry API in this process until interrupted (see :func:`check_open_writes`)."""
    check_open_writes(server.writes_need_tokens, server.open_writes_asked, host,
                      "the registry", "apply and roll back")
    logger.info("registry API on http://%s:%d", host, port)
    # No log_config: uvicorn's loggers follow the command's (a library's from WARNING).
    uvicorn.run(server.app, host=host, port=port, access_log=False, log_config=None)


def check_open_writes(writes_need_tokens: bool, open_writes_asked: bool, host: str,
                      server: str, writes: str) -> None:
    """Refuses, before a server listens, to take anyone's ``writes`` on an address other
    hosts can reach unless that was asked for; warns when it takes them on loopback."""
    if not writes_need_tokens and not open_writes_asked and not _loopback(host):
        raise ConfigurationError(
            f"refusing to serve {server} on {host} with {API_TOKENS.name} empty: anyone "
            f"who can reach it could {writes}.  Set {API_TOKENS.name} "
            f"(name:secret,...), or set {OPEN_WRITES.name}=true to accept writes from anyone")
    if not writes_need_tokens:
        logger.warning("%s is empty: anyone who can reach %s may %s", API_TOKENS.name, host,
                       writes)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False
