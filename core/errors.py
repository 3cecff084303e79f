"""The platform's one exception hierarchy.

Every error raised on purpose by any component derives from :class:`FeaturePlatformError`,
so callers can catch the whole platform with one clause and the HTTP layers can map each
subclass to one status code.  Only the standard library is imported here: the pure domain
depends on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FeaturePlatformError(Exception):
    """Root of every error the platform raises deliberately."""


class ConfigurationError(FeaturePlatformError):
    """A setting (environment variable, flag, config file) is missing or invalid."""


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


class InvalidDefinitionError(FeaturePlatformError):
    """One or more definitions are invalid; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid definition")


class InvalidFeatureRequestError(FeaturePlatformError):
    """A feature request (serving or training set) names unknown features, lacks entity key
    columns or request-context fields, or gives them values of the wrong type; ``problems``
    lists every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid request")

    @classmethod
    def single(cls, path: str, message: str) -> InvalidFeatureRequestError:
        return cls([Problem(path, message)])


class ExpressionError(FeaturePlatformError):
    """An on-demand expression is outside the safe expression language or fails to parse."""


class ExpressionEvaluationError(FeaturePlatformError):
    """A checked on-demand expression failed while being evaluated on one row."""


class NotFoundError(FeaturePlatformError):
    """A named object (definition, version, delivery, ...) does not exist."""


class ConcurrencyConflictError(FeaturePlatformError):
    """An append expected a stream at one version but another writer got there first."""

    @classmethod
    def on_stream(cls, stream: str, expected: int, actual: int) -> ConcurrencyConflictError:
        return cls(f"{stream} is at version {actual}, expected {expected}: another writer "
                   "changed it concurrently; reload and retry")


class AuthenticationError(FeaturePlatformError):
    """A request lacks valid credentials for the operation it attempts."""


class InfrastructureError(FeaturePlatformError):
    """An outside system (database, Redis, Kafka, Flink, git) failed or is unreachable."""


class RepositoryLoadError(FeaturePlatformError):
    """A features repository could not be loaded: a file fails to parse or to run.

    The message names the file and, when known, the line (and column) at fault.
    """
