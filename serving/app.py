"""The serving API's Litestar app (CONTRACT.md §7) and its entry points for ``fp serving serve``.

Handlers read the raw body and encode the response with msgspec themselves: the batch
endpoint moves thousands of values per request, and skipping Litestar's generic
(de)serialisation layers is a large part of keeping it at a few milliseconds.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import uvicorn
from litestar import Litestar, Request, Response, get, post
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath
from litestar.plugins.prometheus import PrometheusController

from registry.api.problems import EXCEPTION_HANDLERS, problem
from serving.catalog import DefinitionHistory
from serving.errors import InvalidFeatureRequestError
from serving.metrics import request_metrics
from serving.redis_store import RedisOnlineStore
from serving.registry_source import RegistryEvents
from serving.requests import MAX_BATCH_ENTITIES, decode_batch_request
from serving.service import (
    DEFAULT_INTERVALS,
    Clock,
    FeatureService,
    Intervals,
    wall_clock_millis,
)

DEFAULT_PORT = 8001
MAX_BODY_BYTES = 32 * 1024 * 1024
VERSION_PARAMETER = "version"

_encoder = msgspec.json.Encoder()


def _json(body: dict[str, Any]) -> Response[bytes]:
    return Response(_encoder.encode(body), media_type="application/json")


def _invalid_request(_: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    assert isinstance(error, InvalidFeatureRequestError)
    return problem(422, "Invalid feature request", str(error),
                   errors=[{"path": p.path, "message": p.message} for p in error.problems])


def _version_parameter(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidFeatureRequestError.single(VERSION_PARAMETER, f"must be a version number "
                                                                   f"(1, 2, ...), got {text!r}")
    return int(text)


def create_serving_app(registry_url: str, redis_url: str, *,
                       clock: Clock = wall_clock_millis,
                       intervals: Intervals = DEFAULT_INTERVALS) -> Litestar:
    history = DefinitionHistory()
    service = FeatureService(RegistryEvents(registry_url, history), RedisOnlineStore(redis_url),
                             history, clock=clock, intervals=intervals)

    @get("/v1/features/{view:str}/{entity_key:str}",
         summary="One entity's features of one view, at the active or a pinned version")
    async def one_entity(request: Request[Any, Any, Any], view: FromPath[str],
                         entity_key: FromPath[str]) -> Response[bytes]:
        # Query parameters other than `version` are request-context fields of on-demand views.
        query = dict(request.query_params)
        version = _version_parameter(query.pop(VERSION_PARAMETER, None))
        return _json(await service.single(view, entity_key, version, query))

    @post("/v1/features/batch", status_code=200,
          summary=f"Features of up to {MAX_BATCH_ENTITIES} entities from any views")
    async def batch(request: Request[Any, Any, Any]) -> Response[bytes]:
        parsed = decode_batch_request(await request.body())
        return _json(await service.batch(parsed))

    @get("/healthz", summary="Liveness, and whether the registry has been read")
    async def healthz() -> dict[str, Any]:
        return service.health()

    app = Litestar(
        route_handlers=[one_entity, batch, healthz, PrometheusController],
        middleware=[request_metrics],
        exception_handlers={**EXCEPTION_HANDLERS,
                            InvalidFeatureRequestError: _invalid_request},
        on_startup=[service.start],
        on_shutdown=[service.stop],
        openapi_config=OpenAPIConfig(title="Feature Platform serving", version="1"),
        request_max_body_size=MAX_BODY_BYTES,
    )
    app.state.service = service
    return app


def serve(registry_url: str, redis_url: str, host: str = "127.0.0.1",
          port: int = DEFAULT_PORT) -> None:
    """Run the serving API in this process until interrupted: one worker, no access log
    (a log line per request costs more than serving a single-entity read)."""
    # httpx logs every request at INFO: here that is one registry poll a second, forever.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvicorn.run(create_serving_app(registry_url, redis_url), host=host, port=port, workers=1,
                loop="uvloop", http="httptools", access_log=False, log_level="info")
