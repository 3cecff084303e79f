"""The registry's definitions as its readers follow them (the serving and the ingest APIs):
every registered definition version, read from the registry's event log (``GET /v1/events``),
and every later one.

The log holds each version's full canonical spec in its ``DefinitionRegistered`` event, so one
mechanism serves both the first load and every later change: page from position 0, then poll
``after=<last position>`` — a cheap query that usually returns nothing.  The registry
guarantees a reader paging with ``after`` never misses an event that commits later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from core.domain.definitions import Kind
from core.domain.events import EventType
from core.errors import InfrastructureError

logger = logging.getLogger(__name__)

EVENTS_PAGE = 1000
_KINDS = {kind.value for kind in Kind}


class DefinitionRecorder(Protocol):
    """What a reader keeps of the definitions it follows."""

    def record(self, kind: str, name: str, version: int, spec: Mapping[str, Any]) -> None:
        """One registered version; it may have been recorded before (a version never
        changes)."""

    def mark_loaded(self) -> None:
        """Every version registered so far has been recorded."""


class RegistryEvents:
    def __init__(self, registry_url: str, history: DefinitionRecorder, *,
                 http: httpx.AsyncClient | None = None, timeout: float = 10.0,
                 token: str | None = None,
                 meanwhile: str = "using the definitions already read") -> None:
        """``token``: the bearer secret sent with every read, for a registry whose event log
        needs a read token (``FP_READ_TOKENS``); ``meanwhile``: what the reader does while
        the registry cannot be read, for the log."""
        self.registry_url = registry_url.rstrip("/")
        self.history = history
        self.position = 0
        self.meanwhile = meanwhile
        self.error: str | None = None
        self._http = http or httpx.AsyncClient(base_url=self.registry_url, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def close(self) -> None:
        await self._http.aclose()

    async def catch_up(self) -> int:
        """Read every event after the last one seen; how many definition versions were new.

        Raises InfrastructureError when the registry cannot be read; what was read before
        stays recorded, and the next call resumes from there.  :attr:`error` says why the
        last call failed (None once one succeeds); the first failure of a run is logged.
        """
        try:
            recorded = await self._read_new_events()
        except InfrastructureError as error:
            if self.error is None:
                logger.warning("%s; %s", error, self.meanwhile)
            self.error = str(error)
            raise
        self.error = None
        return recorded

    async def _read_new_events(self) -> int:
        recorded = 0
        while True:
            page = await self._page(self.position)
            for event in page["events"]:
                if self._record(event):
                    recorded += 1
                self.position = max(self.position, int(event["position"]))
            if len(page["events"]) < EVENTS_PAGE:
                break
        self.history.mark_loaded()
        return recorded

    async def _page(self, after: int) -> dict[str, Any]:
        try:
            response = await self._http.get("/v1/events", headers=self._headers,
                                             params={"after": after, "limit": EVENTS_PAGE})
            response.raise_for_status()
            page: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise InfrastructureError(f"cannot read the registry's events at "
                                      f"{self.registry_url}: {error}") from error
        return page

    def _record(self, event: dict[str, Any]) -> bool:
        if event.get("type") != EventType.DEFINITION_REGISTERED:
            return False  # deployment events: the online store's version maps say what serves
        data = event.get("data") or {}
        kind, name, version, spec = (data.get("kind"), data.get("name"), data.get("version"),
                                     data.get("spec"))
        if kind not in _KINDS or not isinstance(name, str) or not isinstance(version, int) \
                or not isinstance(spec, dict):
            logger.warning("skipping registry event %s: not a definition version",
                           event.get("position"))
            return False
        self.history.record(kind, name, version, spec)
        return True
