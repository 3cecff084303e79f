"""The error a serving request raises when it is well-formed JSON but asks for the impossible.

It derives from the platform's root error; the serving app maps it to 422 problem+json with
one ``errors`` entry per problem.  (Unknown views and versions are ``NotFoundError``: 404.)
"""

from __future__ import annotations

from collections.abc import Sequence

from registry.errors import FeaturePlatformError, Problem


class InvalidFeatureRequestError(FeaturePlatformError):
    """A request names unknown features, lacks entity key columns or request-context fields,
    or gives them values of the wrong type; ``problems`` lists every reason found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid request")

    @classmethod
    def single(cls, path: str, message: str) -> InvalidFeatureRequestError:
        return cls([Problem(path, message)])
