"""The serving API's Litestar app and its entry points for ``fp serving serve``.

The API is described in docs/reference.md, "Serving API".

Handlers read the raw body and encode the response with msgspec themselves: the batch
endpoint moves thousands of values per request, and skipping Litestar's generic
(de)serialisation layers is a large part of keeping it at a few milliseconds.  A request to
the batch endpoint does not even enter Litestar (:func:`with_fast_batch_path`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.enums import ScopeType
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from core.errors import InvalidFeatureRequestError
from core.problems import (
    EXCEPTION_HANDLERS,
    PROBLEM_MEDIA_TYPE,
    answer_error,
    metrics_endpoint,
    problem_responses,
)
from registry.feed import RegistryEvents
from serving.catalog import DefinitionHistory
from serving.metrics import observe, request_metrics
from serving.requests import MAX_BATCH_ENTITIES, MAX_BODY_BYTES, decode_batch_request
from serving.service import (
    DEFAULT_INTERVALS,
    Clock,
    FeatureService,
    Intervals,
    wall_clock_millis,
)
from sinks.online_store import RedisOnlineStore

BATCH_PATH = "/v1/features/batch"
VERSION_PARAMETER = "version"

_encoder = msgspec.json.Encoder()


def _json(body: dict[str, Any]) -> Response[bytes]:
    return Response(_encoder.encode(body), media_type="application/json")


def _version_parameter(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidFeatureRequestError.single(VERSION_PARAMETER, f"must be a version number "
                                                                   f"(1, 2, ...), got {text!r}")
    return int(text)


@dataclass
class _BatchOperation(Operation):
    """The batch endpoint's OpenAPI operation, with the body its handler reads raw."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content={"application/json": (
            OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.OBJECT, required=["entities", "features"],
                additional_properties=False,
                properties={
                    "entities": Schema(
                        type=OpenAPIType.ARRAY, max_items=MAX_BATCH_ENTITIES,
                        items=Schema(type=OpenAPIType.OBJECT),
                        description="One object of join-key values per entity"),
                    "features": Schema(
                        type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING),
                        description="Feature references: view:feature or view@N:feature"),
                    "request_context": Schema(
                        type=OpenAPIType.OBJECT,
                        description="Per request-context field, one value per entity"),
                })))})


def create_serving_app(registry_url: str, redis_url: str, *,
                       registry_token: str | None = None,
                       clock: Clock = wall_clock_millis,
                       intervals: Intervals = DEFAULT_INTERVALS) -> ASGIApp:
    history = DefinitionHistory()
    events = RegistryEvents(registry_url, history, token=registry_token,
                            meanwhile="serving from the definitions already read")
    service = FeatureService(events, RedisOnlineStore(redis_url),
                             history, clock=clock, intervals=intervals)

    @get("/v1/features/{view:str}/{entity_key:str}",
         summary="One entity's features of one view, at the active or a pinned version",
         responses=problem_responses(404, 422, 503))
    async def one_entity(request: Request[Any, Any, Any], view: FromPath[str],
                         entity_key: FromPath[str]) -> Response[bytes]:
        # Query parameters other than `version` are request-context fields of on-demand views.
        query = dict(request.query_params)
        version = _version_parameter(query.pop(VERSION_PARAMETER, None))
        return _json(await service.single(view, entity_key, version, query))

    @post(BATCH_PATH, status_code=200, operation_class=_BatchOperation,
          summary=f"Features of up to {MAX_BATCH_ENTITIES} entities from any views",
          responses=problem_responses(400, 404, 413, 422, 503))
    async def batch(request: Request[Any, Any, Any]) -> Response[bytes]:
        return Response(await answer_batch(await request.body()), media_type="application/json")

    async def answer_batch(body: bytes) -> bytes:
        return _encoder.encode(await service.batch(decode_batch_request(body)))

    @get("/healthz", summary="Liveness, and whether the registry has been read",
         responses=problem_responses(503))
    async def healthz() -> dict[str, Any]:
        return service.health()

    app = Litestar(
        route_handlers=[one_entity, batch, healthz, metrics_endpoint()],
        middleware=[request_metrics],
        exception_handlers=EXCEPTION_HANDLERS,
        on_startup=[service.start],
        on_shutdown=[service.stop],
        openapi_config=OpenAPIConfig(title="Feature Platform serving", version="1"),
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # the command line configures logging (fp -v)
    )
    return with_fast_batch_path(app, answer_batch)


def with_fast_batch_path(app: Litestar, answer_batch: Callable[[bytes], Awaitable[bytes]]
                         ) -> ASGIApp:
    """``app``, except that a batch read is answered on a short path of its own.

    Litestar's routing, signature and response layers cost about a sixth of a
    single-entity batch read.  The short path reads the body, answers it with the batch
    handler's own ``answer_batch`` and sends the JSON.  It answers every batch read, errors
    included: a bad request, an unknown view, Redis unavailable or a body over the limit get
    the problem response ``app`` would give (:func:`core.problems.answer_error`), so a
    request runs once whatever happens — a failing batch is not tried again, and a Redis
    outage costs one timeout, not two.  Every other request goes to ``app``, which also
    describes the batch endpoint in the OpenAPI schema.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] != BATCH_PATH \
                or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            request = await _body(receive)
            if request is None:  # the client left
                return
            status, headers = 200, [(b"content-type", b"application/json")]
            body = await answer_batch(request)
        except Exception as error:  # answered as the app answers it, whatever it is
            answer = answer_error(error, "POST", BATCH_PATH)
            status, body = answer.status, _encoder.encode(answer.body)
            headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                       *((name.lower().encode(), value.encode())
                         for name, value in answer.headers.items())]
        start: HTTPResponseStartEvent = {
            "type": "http.response.start", "status": status,
            "headers": [*headers, (b"content-length", b"%d" % len(body))]}
        await send(start)
        end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body,
                                      "more_body": False}
        await send(end)
        observe("POST", BATCH_PATH, status, started)

    return asgi


async def _body(receive: Receive) -> bytes | None:
    """The request body; None when the client leaves before sending all of it.  A body
    over :data:`MAX_BODY_BYTES` is refused as soon as it is, with Litestar's own error."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES:
            raise RequestEntityTooLarge
        more = message.get("more_body", False)
    return b"".join(chunks)

