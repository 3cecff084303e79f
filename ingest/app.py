"""The ingest API's Litestar app (docs/ingest.md; docs/reference.md, "Ingest API")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import HeaderParameter, Parameter, QueryParameter

from core.domain.contracts import Reason
from core.domain.definitions import NAME_PATTERN
from core.errors import FeaturePlatformError
from core.problems import EXCEPTION_HANDLERS, metrics_endpoint, problem_responses
from ingest import metrics
from ingest.batches import JSON, MAX_BODY_BYTES, MAX_EVENTS, NDJSON, Mode
from ingest.idempotency import MAX_KEY_CHARS
from ingest.service import IngestRequest, IngestService
from registry.api.app import Access

INGEST_PATH = "/v1/ingest/{source:str}"
REPLAYED_HEADER = "Idempotent-Replayed"

_encoder = msgspec.json.Encoder()


class RejectedEvent(msgspec.Struct):
    index: int
    """The event's position in the request, from 0."""
    field: str | None
    """The field the broken rule is about; null for a rule about the whole event."""
    reason: Reason
    message: str


class IngestResult(msgspec.Struct):
    """The answer to an ingest request (200, 207, 422)."""

    accepted: int
    """Events written to the source's topic and acknowledged by the broker."""
    rejected: list[RejectedEvent]
    request_id: str
    """Also the dead letters' ``request_id``."""


_EVENT = Schema(type=OpenAPIType.OBJECT, description="One event: a JSON object of the "
                "source's fields (any JSON value is judged; a non-object is rejected)")


@dataclass
class _IngestOperation(Operation):
    """The ingest operation's OpenAPI description, with the bodies its handler reads raw."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content={
            JSON: OpenAPIMediaType(schema=Schema(one_of=[
                _EVENT,
                Schema(type=OpenAPIType.OBJECT, required=["events"],
                       additional_properties=False, properties={"events": Schema(
                           type=OpenAPIType.ARRAY, items=_EVENT, min_items=1,
                           max_items=MAX_EVENTS)})])),
            NDJSON: OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.STRING, pattern=r"\S", max_length=MAX_BODY_BYTES,
                description="One JSON event a line (blank lines are skipped; at least one "
                            "event)"))})


def _answers(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=IngestResult, description=description,
                        generate_examples=False)


def create_ingest_app(service: IngestService, access: Access) -> Litestar:
    writer = access.writer()

    @post(INGEST_PATH, status_code=200, operation_class=_IngestOperation,
          summary=f"Check up to {MAX_EVENTS:,} events against the source's contract and write "
                  "the valid ones to its topic",
          responses={207: _answers("Some events were accepted, some rejected"),
                     422: _answers("No event was accepted (or the request was atomic and some "
                                   "event invalid)"),
                     **problem_responses(400, 401, 404, 409, 413, 415, 503)})
    async def ingest(request: Request[Any, Any, Any],
                     source: Annotated[str, Parameter(
                         pattern=NAME_PATTERN.pattern, description="A source's name",
                         examples=[Example(summary="the demo's source",
                                           value="transactions")])],
                     mode: Annotated[Mode, QueryParameter(
                         description="partial: write the valid events; atomic: write "
                                     "nothing if any is invalid")] = Mode.PARTIAL,
                     idempotency_key: Annotated[str | None, HeaderParameter(
                         name="Idempotency-Key", max_length=MAX_KEY_CHARS,
                         # Documented only: check_key refuses others with its own message.
                         schema_extra={"pattern": f"^[!-~]{{1,{MAX_KEY_CHARS}}}$"},
                         description="Makes a retry safe: the same key and body within the "
                                     "idempotency window are answered as the first time, "
                                     "and nothing is written again")] = None,
                     ) -> Response[bytes]:
        started, status = time.perf_counter(), 500
        try:
            answer = await service.ingest(IngestRequest(
                source, await request.body(), request.headers.get("content-type"),
                writer(request), mode, idempotency_key))
            status = answer.status
            return Response(_encoder.encode(answer.body), status_code=answer.status,
                            media_type=JSON,
                            headers={REPLAYED_HEADER: "true"} if answer.replayed else None)
        except FeaturePlatformError as error:
            status = error.status
            raise
        finally:
            metrics.REQUESTS.labels(str(status)).observe(time.perf_counter() - started)

    @get("/healthz", summary="Liveness, and whether the registry has been read",
         tags=["operations"])
    async def healthz() -> dict[str, Any]:
        return service.health()

    return Litestar(
        route_handlers=[ingest, healthz, metrics_endpoint()],
        exception_handlers=EXCEPTION_HANDLERS,
        on_startup=[service.start],
        on_shutdown=[service.stop],
        openapi_config=OpenAPIConfig(title="Feature Platform ingest", version="1"),
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # the command line configures logging (fp -v)
    )
