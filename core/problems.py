"""RFC 9457 problem responses for every error the platform raises, shared by all HTTP apps.

:func:`answer_error` is the one place an exception becomes a problem: the Litestar apps
answer through :data:`EXCEPTION_HANDLERS`, and a path that bypasses Litestar (the serving
API's short batch path) calls it directly, so both give the same status, headers and body.
A platform error is answered from its class (``status``, ``title``, ``code``; see
:mod:`core.errors`), an HTTP error of Litestar's from its status.

:func:`problem_responses` describes those answers in an app's OpenAPI schema, so that every
operation documents the error statuses it can give and their ``application/problem+json``
body; :func:`metrics_endpoint` is the documented ``GET /metrics`` both apps serve.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import FeaturePlatformError

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemAnswer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def _answer(status: int, title: str, detail: str, code: str,
            members: dict[str, Any], *, headers: dict[str, str] | None = None
            ) -> ProblemAnswer:
    # RFC 9110: a 401 must say which authentication scheme would be accepted.
    headers = {**({"WWW-Authenticate": "Bearer"} if status == 401 else {}), **(headers or {})}
    return ProblemAnswer(status, {"type": "about:blank", "title": title, "status": status,
                                  "detail": detail, "code": code, **members}, headers)


def answer_error(error: Exception, method: str, path: str) -> ProblemAnswer:
    """How an API answers ``error`` raised while serving ``method path``."""
    if isinstance(error, FeaturePlatformError):
        return _answer(error.status, error.title, str(error), error.code,
                       error.problem_members())
    if isinstance(error, HTTPException):
        # Litestar's validation errors say what is wrong only in `extra`: the detail names it
        # too, so that a client showing the detail alone still tells the user which field.
        # The key of the body as a whole is the handler parameter it decodes into, `data`.
        reasons = [e["message"] if e.get("key") in (None, "data") else
                   f"{e['key']}: {e['message']}"
                   for e in error.extra if isinstance(e, dict) and "message" in e] \
            if isinstance(error.extra, list) else []
        detail = f"{error.detail}: {'; '.join(reasons)}" if reasons else error.detail
        members = {"errors": error.extra} if error.extra else {}
        # The error's own headers go with it: a 429's Retry-After, say.
        return _answer(error.status_code, type(error).__name__, detail,
                       _status_code_name(error.status_code), members, headers=error.headers)
    logger.exception("unhandled error on %s %s", method, path)
    return _answer(500, "Internal server error", f"{type(error).__name__}: see the server log",
                   _status_code_name(500), {})


def _status_code_name(status: int) -> str:
    """``not_found`` for 404: an HTTP error's code is its status phrase, so that the codes
    of platform errors named after a status (``not_found``, ``unauthorized``) rebuild them."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # a status outside the standard's list
        return f"http_{status}"
    return phrase.lower().replace(" ", "_").replace("-", "_")


def _problem_response(request: Request[Any, Any, Any], error: Exception
                      ) -> Response[dict[str, Any]]:
    answer = answer_error(error, request.method, request.url.path)
    return Response(answer.body, status_code=answer.status, media_type=PROBLEM_MEDIA_TYPE,
                    headers=answer.headers or None)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    FeaturePlatformError: _problem_response,
    HTTPException: _problem_response,
    Exception: _problem_response,
}


class ProblemDocument(msgspec.Struct, omit_defaults=True):
    """The body of every error answer (RFC 9457), as the OpenAPI schemas describe it."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    """Stable and machine-readable: a client rebuilds the platform's error class from it."""
    errors: list[dict[str, Any]] | None = None
    """Every problem found, for the errors that list them (invalid definitions, requests)."""


_WHEN = {
    400: "A malformed request: a body that is not the JSON the operation reads, or a path or "
         "query parameter out of its bounds.",
    401: "A missing or wrong bearer token (with `WWW-Authenticate: Bearer`).",
    403: "Refused: the request is authenticated but not allowed.",
    404: "An unknown name, version or delivery.",
    409: "A conflict: a concurrent change (reload and retry), or an `Idempotency-Key` reused "
         "for another request or whose first request is still running.",
    413: "The request is over a stated limit (body size, definitions per batch, ...).",
    415: "The body's `Content-Type` is not one the operation reads.",
    422: "Well-formed but invalid: `errors` lists every problem found.",
    429: "Too many requests from this caller: retry after the `Retry-After` header's seconds.",
    500: "The server lacks a setting the operation needs (the detail names it).",
    502: "A job the operation ran on an outside system failed (the detail says why).",
    503: "A service the API depends on is unavailable.",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The OpenAPI ``responses`` of an operation that may answer these error statuses."""
    return {status: ResponseSpec(data_container=ProblemDocument, media_type=PROBLEM_MEDIA_TYPE,
                                 description=_WHEN[status], generate_examples=False)
            for status in statuses}


def metrics_endpoint(*error_statuses: int) -> HTTPRouteHandler:
    """``GET /metrics``: the process's Prometheus metrics, documented as the text it is, with
    the error statuses its app's guards may answer."""

    @get("/metrics", media_type=CONTENT_TYPE_LATEST, tags=["operations"],
         summary="Prometheus metrics", responses=problem_responses(*error_statuses))
    async def metrics() -> bytes:
        return generate_latest()

    return metrics
