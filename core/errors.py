"""The platform's one exception hierarchy, and the one table of how each error is answered.

Every error raised on purpose by any component derives from :class:`FeaturePlatformError`,
so callers can catch the whole platform with one clause.  Each class carries how an HTTP API
answers it: ``status``, a ``title``, and ``code``, a stable machine-readable name that
problem bodies carry (``"code"``) and from which a client rebuilds the class
(:func:`error_class`).  A subclass that declares no ``code`` of its own is answered, and
rebuilt, as its parent.  Only the standard library is imported here: the pure domain
depends on this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self


class FeaturePlatformError(Exception):
    """Root of every error the platform raises deliberately."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def problem_members(self) -> dict[str, Any]:
        """Members of the problem body beyond type, title, status, detail and code."""
        return {}

    @classmethod
    def from_problem(cls, detail: str, members: Mapping[str, Any]) -> Self:
        """The error a problem body describes: the inverse of :meth:`problem_members`."""
        return cls(detail)


class ConfigurationError(FeaturePlatformError):
    """A setting (environment variable, flag, config file) is missing or invalid."""

    status = 500
    code = "configuration_error"
    title = "Server misconfigured"


class UnreadableEventError(FeaturePlatformError):
    """A stored event of a known type whose data does not fit any version of its schema: the
    log holds something this release cannot read, and no reader may skip it silently."""

    status = 500
    code = "unreadable_event"
    title = "Unreadable event"


@dataclass(frozen=True)
class Problem:
    """One reason a definition is invalid: where (a JSON path) and why."""

    path: str
    message: str
    definition: str | None = None
    """``kind:name`` of the definition the problem belongs to, when known."""

    def __str__(self) -> str:
        where = f"{self.definition} " if self.definition else ""
        return f"{where}{self.path}: {self.message}"

    @classmethod
    def from_json(cls, member: Mapping[str, Any]) -> Problem:
        return cls(member.get("path") or "$", member.get("message") or "",
                   member.get("definition"))


class LimitExceededError(FeaturePlatformError):
    """A request is over one of the platform's stated limits (definitions per batch, size of
    a spec, response cells, string length, ...); the message names the limit and its value."""

    status = 413
    code = "limit_exceeded"
    title = "Limit exceeded"


class MalformedBodyError(FeaturePlatformError):
    """A request body is not the JSON document its endpoint reads."""

    code = "malformed_body"
    title = "Malformed body"


class _ProblemsError(FeaturePlatformError):
    """An error listing every problem found; its problem body lists them as ``errors``."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or self.title.lower())

    def problem_members(self) -> dict[str, Any]:
        return {"errors": [{"path": p.path, "message": p.message} for p in self.problems]}

    @classmethod
    def from_problem(cls, detail: str, members: Mapping[str, Any]) -> Self:
        return cls([Problem.from_json(e) for e in members.get("errors") or ()]
                   or [Problem("$", detail)])


class InvalidDefinitionError(_ProblemsError):
    """One or more definitions are invalid; ``problems`` lists every reason found."""

    status = 422
    code = "invalid_definition"
    title = "Invalid definition"

    def problem_members(self) -> dict[str, Any]:
        return {"errors": [{"definition": p.definition, "path": p.path, "message": p.message}
                           for p in self.problems]}


class InvalidFeatureRequestError(_ProblemsError):
    """A feature request (serving or training set) names unknown features, lacks entity key
    columns or request-context fields, or gives them values of the wrong type; ``problems``
    lists every reason found."""

    status = 422
    code = "invalid_feature_request"
    title = "Invalid feature request"

    @classmethod
    def single(cls, path: str, message: str) -> InvalidFeatureRequestError:
        return cls([Problem(path, message)])


class ExpressionError(FeaturePlatformError):
    """An on-demand expression is outside the safe expression language or fails to parse."""

    status = 422
    code = "invalid_expression"
    title = "Invalid expression"


class ExpressionEvaluationError(FeaturePlatformError):
    """A checked on-demand expression failed while being evaluated on one row."""

    status = 422
    code = "expression_failed"
    title = "Expression failed"


class NotFoundError(FeaturePlatformError):
    """A named object (definition, version, delivery, ...) does not exist."""

    status = 404
    code = "not_found"
    title = "Not found"


class ConcurrencyConflictError(FeaturePlatformError):
    """An append expected a stream at one version but another writer got there first."""

    status = 409
    code = "concurrent_change"
    title = "Concurrent change"

    @classmethod
    def on_stream(cls, stream: str, expected: int, actual: int) -> ConcurrencyConflictError:
        return cls(f"{stream} is at version {actual}, expected {expected}: another writer "
                   "changed it concurrently; reload and retry")


class AuthenticationError(FeaturePlatformError):
    """A request lacks valid credentials for the operation it attempts."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(FeaturePlatformError):
    """A request its credentials do not allow, or that did not come from the page it must
    come from (a UI action posted from another site)."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class InfrastructureError(FeaturePlatformError):
    """An outside system (database, Redis, Kafka, Flink, git) failed or is unreachable."""

    status = 503
    code = "dependency_unavailable"
    title = "Dependency unavailable"


class BackfillError(FeaturePlatformError):
    """A backfill chunk could not be computed: its Flink job failed (the message quotes why)."""

    status = 502
    code = "backfill_failed"
    title = "Backfill failed"


class UnsupportedMediaTypeError(FeaturePlatformError):
    """A request body's ``Content-Type`` is not one its endpoint reads; the message lists
    those it does."""

    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


class IdempotencyConflictError(FeaturePlatformError):
    """An ``Idempotency-Key`` was used before for another request, or its first request is
    still being answered."""

    status = 409
    code = "idempotency_conflict"
    title = "Idempotency key conflict"


class NotAcknowledgedError(InfrastructureError):
    """The broker did not acknowledge every event of a request in time: the request is not
    acknowledged, not even in part (some of its events may have been written)."""

    code = "not_acknowledged"
    title = "Events not acknowledged"


class RepositoryLoadError(FeaturePlatformError):
    """A features repository could not be loaded: a file fails to parse or to run.

    The message names the file and, when known, the line (and column) at fault.
    """

    status = 422
    code = "repository_load_failed"
    title = "Repository load failed"


def error_class(code: object) -> type[FeaturePlatformError] | None:
    """The error class whose own ``code`` is ``code``; None for a code no class declares."""
    pending: list[type[FeaturePlatformError]] = [FeaturePlatformError]
    while pending:
        candidate = pending.pop()
        if "code" in candidate.__dict__ and candidate.code == code:
            return candidate
        pending.extend(candidate.__subclasses__())
    return None
