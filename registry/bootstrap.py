"""The registry's composition root: its API with the git webhooks, over PostgreSQL."""

from __future__ import annotations

import logging

import uvicorn
from litestar import Litestar

from core.settings import Settings
from registry.api.app import create_registry_app
from registry.service import RegistryService
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from registry.webhooks import WebhookConfig, Webhooks
from registry.webhooks.inbox import PostgresDeliveryInbox

logger = logging.getLogger(__name__)


def build(settings: Settings) -> Litestar:
    engine = create_registry_engine(settings.require_database_url())
    service = RegistryService(PostgresRegistryStore(engine))
    webhooks = Webhooks(service, PostgresDeliveryInbox(engine), WebhookConfig(
        secret=settings.webhooks.secret, branch=settings.webhooks.branch,
        features_path=settings.webhooks.features_path))
    return create_registry_app(service, settings.registry.api_tokens,
                               extra_handlers=webhooks.route_handlers,
                               lifespan=[webhooks.lifespan])


def serve(app: Litestar, host: str, port: int) -> None:
    """Run the registry API in this process until interrupted."""
    logger.info("registry API on http://%s:%d", host, port)
    # No log_config: uvicorn's loggers follow the command's (a library's from WARNING).
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)
