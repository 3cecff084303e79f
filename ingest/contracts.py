"""The contracts events are judged by: each source's latest registered version (pure).

:class:`SourceContracts` records the registry's definitions as :mod:`registry.feed` reads
them and keeps, per source, the latest version with its compiled
:class:`core.domain.contracts.ContractChecker`.  A source's new version replaces the older at
once: the door always judges by the contract a new deployment would compile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.domain.contracts import ContractChecker
from core.domain.definitions import Kind, Source, parse_definition
from core.errors import InfrastructureError, InvalidDefinitionError, NotFoundError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceContract:
    source: Source
    version: int
    checker: ContractChecker


class SourceContracts:
    """Every source's latest contract, as read from the registry."""

    def __init__(self) -> None:
        self._latest: dict[str, SourceContract] = {}
        self.loaded = False

    def record(self, kind: str, name: str, version: int, spec: Mapping[str, Any]) -> None:
        if kind != Kind.SOURCE:
            return
        known = self._latest.get(name)
        if known is not None and known.version >= version:
            return
        try:
            source = parse_definition(dict(spec))
        except InvalidDefinitionError as error:  # the registry validated it: cannot be
            logger.error("source %s v%d cannot be read: %s", name, version, error)
            return
        assert isinstance(source, Source), "a source's spec parses to a source"
        self._latest[name] = SourceContract(source, version, ContractChecker(source))

    def mark_loaded(self) -> None:
        self.loaded = True

    def latest(self, name: str) -> SourceContract:
        """Raises NotFoundError for a source the registry does not hold, InfrastructureError
        while the registry has not been read yet (an unknown name is not known to be one)."""
        contract = self._latest.get(name)
        if contract is not None:
            return contract
        if not self.loaded:
            raise InfrastructureError("the registry has not been read yet: retry shortly")
        raise NotFoundError(f"source {name!r} is not registered")
