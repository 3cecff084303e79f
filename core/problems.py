"""RFC 9457 problem responses for every error the platform raises, shared by all HTTP apps."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from core.errors import (
    AuthenticationError,
    ConcurrencyConflictError,
    FeaturePlatformError,
    InfrastructureError,
    InvalidDefinitionError,
    NotFoundError,
)

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_STATUS: list[tuple[type[FeaturePlatformError], int, str]] = [
    (InvalidDefinitionError, 422, "Invalid definition"),
    (NotFoundError, 404, "Not found"),
    (ConcurrencyConflictError, 409, "Concurrent change"),
    (AuthenticationError, 401, "Unauthorized"),
    (InfrastructureError, 503, "Dependency unavailable"),
]


def problem(status: int, title: str, detail: str, **extra: Any) -> Response[dict[str, Any]]:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response({"type": "about:blank", "title": title, "status": status, "detail": detail,
                     **extra}, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _platform_error(_: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    for error_type, status, title in _STATUS:
        if isinstance(error, error_type):
            extra: dict[str, Any] = {}
            if isinstance(error, InvalidDefinitionError):
                extra["errors"] = [{"definition": p.definition, "path": p.path,
                                    "message": p.message} for p in error.problems]
            return problem(status, title, str(error), **extra)
    return problem(400, "Bad request", str(error))


def _http_error(_: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    assert isinstance(error, HTTPException)
    extra = {"errors": error.extra} if error.extra else {}
    return problem(error.status_code, type(error).__name__, error.detail, **extra)


def _unexpected_error(request: Request[Any, Any, Any],
                      error: Exception) -> Response[dict[str, Any]]:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(500, "Internal server error", f"{type(error).__name__}: see the server log")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    FeaturePlatformError: _platform_error,
    HTTPException: _http_error,
    Exception: _unexpected_error,
}
