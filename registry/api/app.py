"""The registry's REST API (docs/reference.md, "Registry API"; who may call what:
docs/security.md)."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import msgspec
from litestar import Litestar, Request, Router, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import TooManyRequestsException
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.params import Body, Parameter, QueryParameter
from litestar.plugins.prometheus import PrometheusConfig
from litestar.template import TemplateConfig
from litestar.types import Guard

from core.domain.definitions import NAME_PATTERN, Kind
from core.domain.events import Provenance
from core.errors import AuthenticationError
from core.problems import EXCEPTION_HANDLERS, metrics_endpoint, problem_responses
from core.settings import DEFAULT_APPLY_RATE_LIMIT, DEFAULT_WEBHOOK_RATE_LIMIT, RateLimit
from registry.client import parse_token
from registry.drift import DriftRegistry
from registry.service import RegistryService

MAX_EVENTS_PAGE = 10_000
MAX_VERSION = 2**31 - 1
"""Versions are PostgreSQL integers: a larger number names no version and must not reach it."""
MAX_POSITION = 2**53 - 1
"""The largest event position a client may name: beyond it JSON numbers lose precision."""
ANONYMOUS = "anonymous"
"""The actor of a write when the registry has no tokens (open writes)."""
COLLECTION_PATHS = {
    Kind.ENTITY: "/v1/entities",
    Kind.SOURCE: "/v1/sources",
    Kind.FEATURE_VIEW: "/v1/feature-views",
    Kind.ON_DEMAND_FEATURE_VIEW: "/v1/on-demand-feature-views",
}

DefinitionName = Annotated[str, Parameter(pattern=NAME_PATTERN.pattern,
                                          description="A definition's name")]
VersionNumber = Annotated[int, Parameter(ge=1, le=MAX_VERSION)]
_NO_OTHER_KEYS = Body(media_type=RequestEncodingType.JSON,
                      schema_extra={"additionalProperties": False})
"""A JSON body whose schema says what its struct's ``forbid_unknown_fields`` does."""
_IDENTITY = "fp_identity"
"""Where the write guard leaves the caller's identity for the handler (the request state)."""


class RateLimiter:
    """A token bucket per caller: ``limit.requests`` at once, refilled evenly over the period."""

    _MAX_CALLERS = 10_000

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(limit.requests)
        self._per_second = limit.requests / (limit.period_ms / 1000)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller: (tokens, at)

    def take(self, caller: str) -> None:
        """Spend one request of ``caller``'s; raises a 429 with Retry-After when none is left."""
        now = self._clock()
        tokens, at = self._buckets.get(caller, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - at) * self._per_second)
        if tokens < 1:
            wait = math.ceil((1 - tokens) / self._per_second)
            raise TooManyRequestsException(f"too many requests from {caller}: retry in {wait} s",
                                           headers={"Retry-After": str(wait)})
        if len(self._buckets) >= self._MAX_CALLERS:
            self._forget_refilled(now)
        self._buckets[caller] = (tokens - 1, now)

    def _forget_refilled(self, now: float) -> None:
        # A caller whose bucket has refilled is the same as one never seen: drop it, so that
        # many callers cannot grow the table without bound.
        full = self._capacity / self._per_second
        self._buckets = {caller: bucket for caller, bucket in self._buckets.items()
                         if now - bucket[1] < full}


def _secrets(entries: Sequence[str]) -> list[tuple[bytes, str]]:
    return [(secret.encode(), name) for name, secret in
            (parse_token(entry, position) for position, entry in enumerate(entries, 1))]


@dataclass(frozen=True)
class Access:
    """Who may write, who may read the protected reads, and how often one may write.

    Write tokens are ``name:secret`` entries (or bare secrets, named ``token-N``); the name is
    the identity recorded as the events' ``actor``.  Without write tokens every write is
    ``anonymous`` (the composition root refuses that off loopback unless asked for).  With
    read tokens, the protected reads need a read or a write token; without, they are open.
    """

    api_tokens: Sequence[str] = ()
    read_tokens: Sequence[str] = ()
    apply_rate_limit: RateLimit = DEFAULT_APPLY_RATE_LIMIT
    webhook_rate_limit: RateLimit = DEFAULT_WEBHOOK_RATE_LIMIT

    def writer(self) -> Callable[[ASGIConnection[Any, Any, Any, Any]], str]:
        """Who a write comes from: its bearer token's identity (a 401 without a valid token),
        or ``anonymous`` when there are no write tokens.  The registry's writes and the
        ingest API's share it."""
        writers = _secrets(self.api_tokens)

        def identity(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
            return _identity(_bearer(connection), writers) if writers else ANONYMOUS

        return identity

    def gate(self) -> Gate:
        """These rules, with the write rate limit's state: one per app."""
        return Gate(self)


class Gate:
    """One app's access rules at work: who a token is, whether a caller may write now.

    The API's guards read the token from the ``Authorization`` header; a component serving
    people (the UI, ``registry.ui``) reads it from its own cookie and asks the same gate, so
    a write through either is checked against the same tokens and the same rate limit.
    """

    def __init__(self, access: Access) -> None:
        self._writers = _secrets(access.api_tokens)
        self._readers = self._writers + _secrets(access.read_tokens)
        self.writes_need_token = bool(self._writers)
        """Without write tokens every write is anonymous."""
        self.reads_need_token = bool(access.read_tokens)
        """The protected reads (the event log, …) need a read or write token."""
        self._apply_limiter = RateLimiter(access.apply_rate_limit)
        self._webhook_limiter = RateLimiter(access.webhook_rate_limit)

    def writer(self, token: str) -> str:
        """The identity of a write token; AuthenticationError for any other text."""
        return _identity(token, self._writers)

    def reader(self, token: str) -> str:
        """The identity of a read or write token; AuthenticationError for any other text."""
        return _identity(token, self._readers)

    def spend_write(self, caller: str) -> None:
        """Count one write of ``caller`` against the write rate limit (a 429 past it)."""
        self._apply_limiter.take(caller)

    def guards(self) -> tuple[Guard, Guard, Guard]:
        """The guards of the writes, the protected reads and the webhooks."""

        def write_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
                        ) -> None:
            identity = self.writer(_bearer(connection)) if self.writes_need_token \
                else ANONYMOUS
            # Without tokens everyone is anonymous: the client address tells callers apart.
            self.spend_write(identity if self.writes_need_token else _client(connection))
            connection.state[_IDENTITY] = identity

        def read_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
                       ) -> None:
            if self.reads_need_token:
                self.reader(_bearer(connection))

        def webhook_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
                          ) -> None:
            self._webhook_limiter.take(_client(connection))

        return write_guard, read_guard, webhook_guard


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The request's bearer token; a 401 without one."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("this request needs 'Authorization: Bearer <token>'")
    return token.strip()


def _identity(token: str, secrets: Sequence[tuple[bytes, str]]) -> str:
    """The identity whose secret ``token`` is; raises a 401 otherwise."""
    given = token.encode()
    identity = None
    # Compare against every secret so the time taken does not reveal which one matched.
    for secret, name in secrets:
        if hmac.compare_digest(given, secret):
            identity = name
    if identity is None:
        raise AuthenticationError("the bearer token is not valid")
    return identity


def _client(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return connection.client.host if connection.client else "unknown"


def provenance(request: Request[Any, Any, Any], message: str | None = None) -> Provenance:
    """Who made a write request, for its events (a handler behind the write guard)."""
    # The actor is who the token says, never what the caller claims (X-FP-Actor is ignored):
    # an audit log a caller can write anything into records nothing.
    return Provenance(actor=request.state[_IDENTITY], message=message)


class ApplyRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/apply``.  Each definition is an object the domain validates
    (unknown keys and all: a 422 naming the definition), not this schema."""

    definitions: list[dict[str, Any]]
    dry_run: bool = False
    message: str | None = None


class RollbackRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/feature-views/{name}/rollback``."""

    to_version: Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)]


class BaselineRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/feature-views/{name}/baselines``: what `fp drift baseline`
    computed from a training set or the archive."""

    version: Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)]
    features: dict[str, dict[str, Any]]
    """Feature name → its statistics (docs/drift.md, "Baselines")."""
    origin: dict[str, Any] = msgspec.field(default_factory=dict)


READ_ERRORS = (400, 404, 503)
"""What a read of one definition may answer besides 200."""


def _definition_routes(kind: Kind, path: str, service: RegistryService) -> Router:
    """The read endpoints every kind shares: list, one, versions, one version, diff."""
    label = kind.value.replace("_", " ")

    @get("/", sync_to_thread=True, summary=f"Every {label}: latest and active version",
         responses=problem_responses(503))
    def list_all() -> dict[str, Any]:
        return {"items": [_summary(r.to_json()) for r in service.definitions(kind)]}

    @get("/{name:str}", sync_to_thread=True, summary=f"One {label}",
         responses=problem_responses(*READ_ERRORS))
    def one(name: DefinitionName) -> dict[str, Any]:
        return service.definition(kind, name).to_json()

    @get("/{name:str}/versions", sync_to_thread=True, summary=f"Every version of a {label}",
         responses=problem_responses(*READ_ERRORS))
    def versions(name: DefinitionName) -> dict[str, Any]:
        return {"name": name, "versions": [v.to_json(with_spec=False)
                                           for v in service.versions(kind, name)]}

    @get("/{name:str}/versions/{number:int}", sync_to_thread=True,
         summary=f"One version of a {label}", responses=problem_responses(*READ_ERRORS))
    def version(name: DefinitionName, number: VersionNumber) -> dict[str, Any]:
        return {"name": name, **service.version(kind, name, number).to_json()}

    @get("/{name:str}/diff", sync_to_thread=True, summary=f"Diff between two versions of a {label}",
         responses=problem_responses(*READ_ERRORS))
    def diff(name: DefinitionName,
             from_version: Annotated[int, QueryParameter(name="from", ge=1, le=MAX_VERSION)],
             to_version: Annotated[int, QueryParameter(name="to", ge=1, le=MAX_VERSION)]
             ) -> dict[str, Any]:
        return service.diff(kind, name, from_version, to_version).to_json()

    return Router(path=path, route_handlers=[list_all, one, versions, version, diff],
                  tags=[label])


def _documenting(handlers: list[HTTPRouteHandler], *statuses: int) -> list[HTTPRouteHandler]:
    """``handlers``, their OpenAPI responses now also listing ``statuses``: the answers of
    the guards this app puts in front of another component's handlers."""
    for handler in handlers:
        handler.responses = {**problem_responses(*statuses), **(handler.responses or {})}
    return handlers


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "spec"}


class Pages(Protocol):
    """A component serving pages to people under the app (``registry.ui.RegistryUI``): its
    own routes, which check access through the app's gate themselves, and its templates."""

    def router(self, gate: Gate) -> Router: ...

    @property
    def template_config(self) -> TemplateConfig[Any]: ...


def create_registry_app(
        service: RegistryService, access: Access = Access(), *,
        extra_handlers: Collection[HTTPRouteHandler] = (),
        lifespan: Collection[Callable[[Litestar], AbstractAsyncContextManager[None]]] = (),
        pages: Pages | None = None,
        drift: DriftRegistry | None = None,
        extra_writes: Collection[HTTPRouteHandler] = (),
) -> Litestar:
    """``extra_handlers`` and ``lifespan`` plug in components such as the git webhooks
    (``registry.webhooks.Webhooks``): their routes, and what runs while the app is up.  Their
    reads are protected reads; their other requests (the pushes) are rate-limited per client
    address.  ``extra_writes`` are writes of another component (the backfills'): behind the
    write guard, as apply; :func:`provenance` tells them who called.  ``pages`` plugs in the
    web UI (docs/ui.md)."""
    gate = access.gate()
    write_guard, read_guard, webhook_guard = gate.guards()

    @post("/v1/apply", sync_to_thread=True, guards=[write_guard], status_code=200,
          summary="Validate and register definitions, all or nothing",
          responses=problem_responses(400, 401, 409, 413, 422, 429, 503))
    def apply(request: Request[Any, Any, Any],
              data: Annotated[ApplyRequest, _NO_OTHER_KEYS]) -> dict[str, Any]:
        changes = service.apply(data.definitions, provenance(request, data.message),
                                dry_run=data.dry_run)
        return {"dry_run": data.dry_run, "changes": [c.to_json() for c in changes]}

    @post("/v1/feature-views/{name:str}/rollback", sync_to_thread=True, guards=[write_guard],
          status_code=202, summary="Make an earlier version active again (through the deployer)",
          responses=problem_responses(400, 401, 404, 409, 429, 503))
    def rollback(request: Request[Any, Any, Any], name: DefinitionName,
                 data: Annotated[RollbackRequest, _NO_OTHER_KEYS]) -> dict[str, Any]:
        position = service.request_rollback(name, data.to_version, provenance(request))
        return {"view": name, "to_version": data.to_version, "position": position}

    @get("/v1/feature-views/{name:str}/deployments", sync_to_thread=True,
         summary="Deployment history: state, jobs, timings, errors",
         responses=problem_responses(*READ_ERRORS))
    def deployments(name: DefinitionName) -> dict[str, Any]:
        return {"name": name, "deployments": service.deployments(name)}

    @get("/v1/feature-views/{name:str}/backfills", sync_to_thread=True,
         summary="Backfills into the offline feature tables, and each version's coverage",
         responses=problem_responses(*READ_ERRORS))
    def backfills(name: DefinitionName) -> dict[str, Any]:
        return service.backfills(name)

    drift_handlers: list[HTTPRouteHandler] = []
    if drift is not None:
        monitoring = drift

        @post("/v1/feature-views/{name:str}/baselines", sync_to_thread=True,
              guards=[write_guard], status_code=201,
              summary="Register the baseline of a view version's features (drift detection)",
              responses=problem_responses(400, 401, 404, 409, 422, 429, 503))
        def register_baseline(request: Request[Any, Any, Any], name: DefinitionName,
                              data: Annotated[BaselineRequest, _NO_OTHER_KEYS],
                              ) -> dict[str, Any]:
            position = monitoring.register_baseline(name, data.version, data.features,
                                                    data.origin, provenance(request))
            return {"view": name, "version": data.version, "position": position}

        @get("/v1/feature-views/{name:str}/drift", sync_to_thread=True,
             summary="Drift: baselines, the monitor's latest readings, open alerts",
             responses=problem_responses(*READ_ERRORS))
        def drift_status(name: DefinitionName) -> dict[str, Any]:
            return monitoring.status(name)

        drift_handlers = [register_baseline, drift_status]

    @get("/v1/events", sync_to_thread=True, summary="The global event log, in position order",
         responses=problem_responses(400, 401, 503))
    def events(after: Annotated[int, QueryParameter(ge=0, le=MAX_POSITION)] = 0,
               limit: Annotated[int, QueryParameter(ge=1, le=MAX_EVENTS_PAGE)] = 1000
               ) -> dict[str, Any]:
        page = service.store.read_events(after, limit)
        return {"events": [e.to_json() for e in page],
                "last_position": page[-1].position if page else after}

    @get("/healthz", summary="Liveness", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    routers = [_definition_routes(kind, path, service) for kind, path in COLLECTION_PATHS.items()]
    extra_reads = [h for h in extra_handlers if "GET" in h.http_methods]
    extra_webhook_writes = [h for h in extra_handlers if "GET" not in h.http_methods]
    protected_reads = Router(path="/", guards=[read_guard], route_handlers=[
        events, metrics_endpoint(401), *_documenting(extra_reads, 401)])
    webhooks = Router(path="/", guards=[webhook_guard],
                      route_handlers=_documenting(extra_webhook_writes, 429))
    # Guarded one by one rather than by a Router: a write may share its path with a read
    # here (POST and GET …/backfills), and Litestar merges only handlers registered side by side.
    for handler in _documenting(list(extra_writes), 401, 429):
        handler.guards = [*(handler.guards or []), write_guard]
    ui = [pages.router(gate)] if pages else []
    return Litestar(
        route_handlers=[apply, rollback, deployments, backfills, healthz, protected_reads,
                        webhooks, *extra_writes, *drift_handlers, *routers, *ui],
        template_config=pages.template_config if pages else None,
        middleware=[PrometheusConfig(app_name="fp_registry", prefix="fp_registry",
                                     group_path=True).middleware],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title="Feature Platform registry", version="1"),
        request_max_body_size=32 * 1024 * 1024,
        lifespan=list(lifespan),
        logging_config=None,  # the command line configures logging (fp -v)
    )
