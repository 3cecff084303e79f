"""The ingest API's composition root, and the server `fp ingest serve` runs."""

from __future__ import annotations

import logging

import uvicorn
from litestar import Litestar

from core.settings import Settings
from ingest.app import create_ingest_app
from ingest.contracts import SourceContracts
from ingest.event_log import KafkaEventLog
from ingest.idempotency import RedisIdempotencyStore
from ingest.service import IngestService
from registry.api.app import Access
from registry.bootstrap import check_open_writes
from registry.client import parse_token
from registry.feed import RegistryEvents

logger = logging.getLogger(__name__)


def build(settings: Settings) -> Litestar:
    registry, ingest = settings.registry, settings.ingest
    # The event log may need a read token: the client's token, else the first read token.
    entry = registry.client_token or next(iter(registry.read_tokens), None)
    contracts = SourceContracts()
    service = IngestService(
        feed=RegistryEvents(registry.url, contracts,
                            token=parse_token(entry, 1)[1] if entry else None,
                            meanwhile="judging by the contracts already read"),
        contracts=contracts,
        log=KafkaEventLog(settings.require_kafka_bootstrap(), ingest.delivery_timeout_ms),
        keys=RedisIdempotencyStore(settings.require_redis_url()),
        delivery_timeout_ms=ingest.delivery_timeout_ms,
        idempotency_window_ms=ingest.idempotency_window_ms)
    return create_ingest_app(service, Access(api_tokens=registry.api_tokens))


def serve(app: Litestar, settings: Settings, host: str, port: int) -> None:
    """Run the ingest API in this process until interrupted; it refuses anyone's writes off
    loopback as the registry does (:func:`registry.bootstrap.check_open_writes`)."""
    check_open_writes(bool(settings.registry.api_tokens), settings.registry.open_writes, host,
                      "the ingest API", "write events to every source")
    logger.info("ingest API on http://%s:%d", host, port)
    uvicorn.run(app, host=host, port=port, workers=1, loop="uvloop", http="httptools",
                access_log=False, log_config=None)
