"""The backfills' writes on the registry API, for orchestrators that reach the platform over
HTTP only (the Airflow DAG): plan or request a backfill, run one chunk, record the outcome.
The registry serves them behind its write guard (``create_registry_app(extra_writes=…)``);
the reads (``GET /v1/feature-views/{name}/backfills``) are the registry's own.

A chunk runs inside the request (minutes for a large day): the caller waits for its result,
and a retried request finds a committed chunk done instead of computing it twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, Parameter

from core.domain.backfills import Reprocess
from core.domain.definitions import NAME_PATTERN
from core.domain.durations import parse_duration, parse_instant
from core.domain.events import json_data
from core.errors import InvalidFeatureRequestError, Problem
from core.problems import problem_responses
from offline.backfill import Backfills
from registry.api.app import provenance

_STRICT = Body(media_type=RequestEncodingType.JSON, schema_extra={"additionalProperties": False})
ViewName = Annotated[str, Parameter(pattern=NAME_PATTERN.pattern, description="A feature view")]
BackfillNumber = Annotated[int, Parameter(ge=1, le=2**31 - 1)]


class BackfillRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/feature-views/{name}/backfills``."""

    start: str
    """A date (``2026-01-01``) or an ISO date-time; UTC when it has no offset."""
    end: str
    """Exclusive."""
    version: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None
    """None: the active version (the latest when none is active)."""
    chunk: str = "1d"
    reprocess: Reprocess = Reprocess.MISSING
    dry_run: bool = False


class ChunkRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/feature-views/{name}/backfills/{number}/chunks``."""

    start_ms: int
    end_ms: int
    replace: bool = False
    """Recompute a chunk the table already holds (``reprocess: all``)."""


class FinishRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/feature-views/{name}/backfills/{number}/finish``."""

    failed_chunks: list[tuple[int, int]] = msgspec.field(default_factory=list)
    reason: str | None = None


def _parsed(request: BackfillRequest) -> tuple[int, int, int]:
    problems = []
    values = {}
    for path, text, parse in (("start", request.start, parse_instant),
                              ("end", request.end, parse_instant),
                              ("chunk", request.chunk, parse_duration)):
        try:
            values[path] = parse(text)
        except ValueError as error:
            problems.append(Problem(path, str(error)))
    if problems:
        raise InvalidFeatureRequestError(problems)
    return values["start"], values["end"], values["chunk"]


def _once(build: Callable[[], Backfills]) -> Callable[[], Backfills]:
    lock = threading.Lock()
    built: list[Backfills] = []

    def service() -> Backfills:
        with lock:
            if not built:
                built.append(build())
            return built[0]

    return service


def route_handlers(planning: Callable[[], Backfills], running: Callable[[], Backfills],
                   ) -> list[HTTPRouteHandler]:
    """The write endpoints over services built on first use: ``planning`` (the registry and
    the catalog) plans and records, ``running`` (also Flink and the warehouse) runs chunks.
    A registry without Flink or a warehouse still starts; running then answers what is
    missing."""
    backfills, runner = _once(planning), _once(running)

    @post("/v1/feature-views/{name:str}/backfills", sync_to_thread=True, status_code=200,
          summary="Plan a backfill (dry run) or request one: its chunks to run",
          responses=problem_responses(400, 401, 404, 409, 422, 429, 500, 503))
    def request_backfill(request: Request[Any, Any, Any], name: ViewName,
                         data: Annotated[BackfillRequest, _STRICT]) -> dict[str, Any]:
        start, end, chunk = _parsed(data)
        plan = backfills().plan(name, data.version, start, end, chunk_ms=chunk,
                                reprocess=data.reprocess)
        if data.dry_run:
            return {"dry_run": True, **plan.to_json()}
        number = backfills().start(plan, provenance(request))
        return {"dry_run": False, "backfill": number, **plan.to_json()}

    @post("/v1/feature-views/{name:str}/backfills/{number:int}/chunks", sync_to_thread=True,
          status_code=200, summary="Compute and commit one chunk of a backfill (idempotent)",
          responses=problem_responses(400, 401, 404, 409, 422, 429, 500, 502, 503))
    def run_chunk(request: Request[Any, Any, Any], name: ViewName, number: BackfillNumber,
                  data: Annotated[ChunkRequest, _STRICT]) -> dict[str, Any]:
        chunk = (data.start_ms, data.end_ms)
        requested = backfills().requested(name, number)
        if chunk not in {tuple(c) for c in requested.chunks}:
            raise InvalidFeatureRequestError.single(
                "start_ms", f"[{data.start_ms}, {data.end_ms}) is not a chunk of backfill "
                            f"{number} (it has {len(requested.chunks)}: see its plan)")
        result = runner().run_chunk(name, number, chunk, replace=data.replace,
                                    provenance=provenance(request))
        return {"start_ms": chunk[0], "end_ms": chunk[1], "snapshot_id": result.snapshot_id,
                "rows": result.rows, "events_read": result.events_read,
                "seconds": round(result.seconds, 3), "ran": result.ran}

    @post("/v1/feature-views/{name:str}/backfills/{number:int}/finish", sync_to_thread=True,
          status_code=200, summary="Record a backfill's outcome: completed, or failed chunks",
          responses=problem_responses(400, 401, 404, 409, 422, 429, 503))
    def finish(request: Request[Any, Any, Any], name: ViewName, number: BackfillNumber,
               data: Annotated[FinishRequest, _STRICT]) -> dict[str, Any]:
        outcome = backfills().finish(name, number, data.failed_chunks, data.reason,
                                     provenance(request))
        return {"type": str(outcome.TYPE), "data": json_data(outcome)}

    return [request_backfill, run_chunk, finish]
