"""The registry's REST API (docs/reference.md, "Registry API")."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Router, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from core.domain.definitions import Kind
from core.domain.events import Provenance
from core.errors import AuthenticationError
from core.problems import EXCEPTION_HANDLERS
from registry.service import RegistryService

logger = logging.getLogger(__name__)

MAX_EVENTS_PAGE = 10_000
COLLECTION_PATHS = {
    Kind.ENTITY: "/v1/entities",
    Kind.SOURCE: "/v1/sources",
    Kind.FEATURE_VIEW: "/v1/feature-views",
    Kind.ON_DEMAND_FEATURE_VIEW: "/v1/on-demand-feature-views",
}


def bearer_guard(tokens: Collection[str]) -> Callable[[ASGIConnection[Any, Any, Any, Any],
                                                       BaseRouteHandler], None]:
    """Writes need one of ``tokens`` as a bearer token; with none configured writes are open."""
    allowed = [token.encode() for token in tokens]

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if not allowed:
            return
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("this write needs 'Authorization: Bearer <token>'")
        # Compare against every token so the time taken does not reveal which one matched.
        if not sum(hmac.compare_digest(token.strip().encode(), t) for t in allowed):
            raise AuthenticationError("the bearer token is not valid")

    return guard


def actor_of(request: Request[Any, Any, Any]) -> str:
    return request.headers.get("x-fp-actor") or "api"


class ApplyRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/apply``.  Each definition is an object the domain validates
    (unknown keys and all: a 422 naming the definition), not this schema."""

    definitions: list[dict[str, Any]]
    dry_run: bool = False
    message: str | None = None


class RollbackRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/feature-views/{name}/rollback``."""

    to_version: Annotated[int, msgspec.Meta(ge=1)]


def _definition_routes(kind: Kind, path: str, service: RegistryService) -> Router:
    """The read endpoints every kind shares: list, one, versions, one version, diff."""
    label = kind.value.replace("_", " ")

    @get("/", sync_to_thread=True, summary=f"Every {label}: latest and active version")
    def list_all() -> dict[str, Any]:
        return {"items": [_summary(r.to_json()) for r in service.definitions(kind)]}

    @get("/{name:str}", sync_to_thread=True, summary=f"One {label}")
    def one(name: FromPath[str]) -> dict[str, Any]:
        return service.definition(kind, name).to_json()

    @get("/{name:str}/versions", sync_to_thread=True, summary=f"Every version of a {label}")
    def versions(name: FromPath[str]) -> dict[str, Any]:
        return {"name": name, "versions": [v.to_json(with_spec=False)
                                           for v in service.versions(kind, name)]}

    @get("/{name:str}/versions/{number:int}", sync_to_thread=True,
         summary=f"One version of a {label}")
    def version(name: FromPath[str], number: FromPath[int]) -> dict[str, Any]:
        return {"name": name, **service.version(kind, name, number).to_json()}

    @get("/{name:str}/diff", sync_to_thread=True, summary=f"Diff between two versions of a {label}")
    def diff(name: FromPath[str],
             from_version: Annotated[int, QueryParameter(name="from", ge=1)],
             to_version: Annotated[int, QueryParameter(name="to", ge=1)]) -> dict[str, Any]:
        return service.diff(kind, name, from_version, to_version).to_json()

    return Router(path=path, route_handlers=[list_all, one, versions, version, diff],
                  tags=[label])


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "spec"}


def create_registry_app(
        service: RegistryService, api_tokens: Collection[str] = (),
        extra_handlers: Collection[Any] = (),
        lifespan: Collection[Callable[[Litestar], AbstractAsyncContextManager[None]]] = (),
) -> Litestar:
    """``extra_handlers`` and ``lifespan`` plug in components such as the git webhooks
    (``registry.webhooks.Webhooks``): their routes, and what runs while the app is up."""
    if not api_tokens:
        logger.warning("FP_API_TOKENS is empty: registry writes are open to anyone who can "
                       "reach this port")
    write_guard = bearer_guard(api_tokens)

    @post("/v1/apply", sync_to_thread=True, guards=[write_guard], status_code=200,
          summary="Validate and register definitions, all or nothing")
    def apply(request: Request[Any, Any, Any], data: JSONBody[ApplyRequest]) -> dict[str, Any]:
        changes = service.apply(data.definitions,
                                Provenance(actor=actor_of(request), message=data.message),
                                dry_run=data.dry_run)
        return {"dry_run": data.dry_run, "changes": [c.to_json() for c in changes]}

    @post("/v1/feature-views/{name:str}/rollback", sync_to_thread=True, guards=[write_guard],
          status_code=202, summary="Make an earlier version active again (through the deployer)")
    def rollback(request: Request[Any, Any, Any], name: FromPath[str],
                 data: JSONBody[RollbackRequest]) -> dict[str, Any]:
        position = service.request_rollback(name, data.to_version,
                                            Provenance(actor=actor_of(request)))
        return {"view": name, "to_version": data.to_version, "position": position}

    @get("/v1/feature-views/{name:str}/deployments", sync_to_thread=True,
         summary="Deployment history: state, jobs, timings, errors")
    def deployments(name: FromPath[str]) -> dict[str, Any]:
        return {"name": name, "deployments": service.deployments(name)}

    @get("/v1/events", sync_to_thread=True, summary="The global event log, in position order")
    def events(after: FromQuery[int] = 0, limit: FromQuery[int] = 1000) -> dict[str, Any]:
        if after < 0 or not 1 <= limit <= MAX_EVENTS_PAGE:
            raise ValidationException(f"'after' must be >= 0 and 'limit' in 1..{MAX_EVENTS_PAGE}")
        page = service.store.read_events(after, limit)
        return {"events": [e.to_json() for e in page],
                "last_position": page[-1].position if page else after}

    @get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    routers = [_definition_routes(kind, path, service) for kind, path in COLLECTION_PATHS.items()]
    return Litestar(
        route_handlers=[apply, rollback, deployments, events, healthz, PrometheusController,
                        *routers, *extra_handlers],
        middleware=[PrometheusConfig(app_name="fp_registry", prefix="fp_registry",
                                     group_path=True).middleware],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title="Feature Platform registry", version="1"),
        request_max_body_size=32 * 1024 * 1024,
        lifespan=list(lifespan),
        logging_config=None,  # the command line configures logging (fp -v)
    )
