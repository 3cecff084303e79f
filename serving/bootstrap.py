"""The serving API's composition root, and the server `fp serving serve` runs."""

from __future__ import annotations

import logging

import uvicorn
from litestar.types import ASGIApp

from core.settings import Settings
from registry.client import parse_token
from serving.app import create_serving_app

logger = logging.getLogger(__name__)


def build(settings: Settings) -> ASGIApp:
    registry = settings.registry
    # The event log may need a read token: the client's token, else the first read token.
    entry = registry.client_token or next(iter(registry.read_tokens), None)
    return create_serving_app(registry.url, settings.require_redis_url(),
                              registry_token=parse_token(entry, 1)[1] if entry else None)


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Run the serving API in this process until interrupted: one worker, no access log
    (a log line per request costs more than serving a single-entity read)."""
    logger.info("serving API on http://%s:%d", host, port)
    # No log_config: uvicorn's loggers follow the command's (a library's from WARNING).
    uvicorn.run(app, host=host, port=port, workers=1, loop="uvloop",
                http="httptools", access_log=False, log_config=None)
