"""The serving API's Litestar app and its entry points for ``fp serving serve``.

The API is described in docs/reference.md, "Serving API".

Handlers read the raw body and encode the response with msgspec themselves: the batch
endpoint moves thousands of values per request, and skipping Litestar's generic
(de)serialisation layers is a large part of keeping it at a few milliseconds.  A request to
the batch endpoint that succeeds does not even enter Litestar (:func:`with_fast_batch_path`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath
from litestar.plugins.prometheus import PrometheusController
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from core.errors import InvalidFeatureRequestError
from core.problems import EXCEPTION_HANDLERS, problem
from serving.catalog import DefinitionHistory
from serving.metrics import observe, request_metrics
from serving.registry_source import RegistryEvents
from serving.requests import MAX_BATCH_ENTITIES, decode_batch_request
from serving.service import (
    DEFAULT_INTERVALS,
    Clock,
    FeatureService,
    Intervals,
    wall_clock_millis,
)
from sinks.online_store import RedisOnlineStore

MAX_BODY_BYTES = 32 * 1024 * 1024
BATCH_PATH = "/v1/features/batch"
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
                       intervals: Intervals = DEFAULT_INTERVALS) -> ASGIApp:
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

    @post(BATCH_PATH, status_code=200,
          summary=f"Features of up to {MAX_BATCH_ENTITIES} entities from any views")
    async def batch(request: Request[Any, Any, Any]) -> Response[bytes]:
        return Response(await answer_batch(await request.body()), media_type="application/json")

    async def answer_batch(body: bytes) -> bytes:
        return _encoder.encode(await service.batch(decode_batch_request(body)))

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
    return with_fast_batch_path(app, answer_batch)


def with_fast_batch_path(app: Litestar, answer_batch: Callable[[bytes], Awaitable[bytes]]
                         ) -> ASGIApp:
    """``app``, except that a batch read is first tried on a short path of its own.

    Litestar's routing, signature and response layers cost about a sixth of a
    single-entity batch read.  The short path reads the body, answers it with the batch
    handler's own ``answer_batch`` and sends the JSON; when anything goes wrong — a bad
    request, an unknown view, Redis unavailable, a body over the limit — nothing has been
    sent yet, and the request goes to ``app`` with its body replayed, so that errors, their
    problem responses and the OpenAPI schema have one owner.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] != BATCH_PATH \
                or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= MAX_BODY_BYTES:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = None
        if not more and size <= MAX_BODY_BYTES:  # else Litestar answers 413
            with contextlib.suppress(Exception):
                body = await answer_batch(b"".join(chunks))
        if body is None:
            await app(scope, _replaying(chunks, more, receive), send)
            return
        start: HTTPResponseStartEvent = {
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body))]}
        await send(start)
        end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body,
                                      "more_body": False}
        await send(end)
        observe("POST", BATCH_PATH, 200, started)

    return asgi


def _replaying(chunks: list[bytes], more: bool, receive: Receive) -> Receive:
    """A ``receive`` that gives the body chunks already read, then the rest of the stream."""
    pending = list(chunks)

    async def replay() -> ReceiveMessage:
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending) or more}
        return await receive()

    return replay

