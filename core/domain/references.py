"""Feature references as clients write them: ``view:feature`` or ``view@N:feature``; view
versions as commands name them: ``view`` or ``view@N``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.domain.definitions import NAME
from core.errors import InvalidFeatureRequestError, Problem

_REFERENCE = re.compile(rf"^(?P<view>{NAME})(?:@(?P<version>[1-9][0-9]{{0,8}}))?:"
                        rf"(?P<feature>{NAME})$")


@dataclass(frozen=True, slots=True)
class FeatureReference:
    text: str
    """Exactly as the client wrote it: the result column is named by it."""
    view: str
    version: int | None
    """The pinned version; None = the version active when the request is served."""
    feature: str

    @property
    def view_label(self) -> str:
        """``view`` or ``view@N``: the key under which the response reports its version."""
        return self.view if self.version is None else f"{self.view}@{self.version}"


def parse_reference(text: str) -> FeatureReference:
    """Raise ValueError when ``text`` is not ``view:feature`` or ``view@N:feature``."""
    match = _REFERENCE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a feature reference: write 'view:feature' or "
                         "'view@N:feature' (N a version number, names in lowercase)")
    version = match["version"]
    return FeatureReference(text, match["view"], int(version) if version else None,
                            match["feature"])


def parse_references(texts: Sequence[str], path: str = "features"
                     ) -> tuple[FeatureReference, ...]:
    """Every reference of a request; every malformed or repeated one is reported together."""
    problems: list[Problem] = []
    references: list[FeatureReference] = []
    seen: set[str] = set()
    for index, text in enumerate(texts):
        try:
            reference = parse_reference(text)
        except ValueError as error:
            problems.append(Problem(f"{path}[{index}]", str(error)))
            continue
        if text in seen:
            # Results are keyed by reference, so a repeat would misalign the status lists.
            problems.append(Problem(f"{path}[{index}]", f"{text!r} is requested twice"))
        seen.add(text)
        references.append(reference)
    if not texts:
        problems.append(Problem(path, "must name at least one feature"))
    if problems:
        raise InvalidFeatureRequestError(problems)
    return tuple(references)


def parse_view_version(text: str) -> tuple[str, int | None]:
    """``view`` or ``view@N``."""
    name, separator, number = text.partition("@")
    if not separator:
        return name, None
    if not number.isdigit() or int(number) < 1:
        raise ValueError(f"{text!r}: the version after @ must be a whole number >= 1")
    return name, int(number)
