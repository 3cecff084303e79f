"""What the UI keeps of the event log in memory, so that no page reads the whole log.

The overview shows the deployment state of every feature view and the event log page filters
every event: read from the store on each request, that is one stream per view or the whole
log.  :class:`EventIndex` instead folds the log once and then, on each page request, only the
events appended since (``read_events(after=last)``, a cheap query that usually returns
nothing), so that every page shows what the log holds at the moment it is rendered.  It keeps
each view's deployments (the same fold as the registry API's, :func:`deployment_after`), its
rollback requests and purged namespaces, and a summary row of every event (no specs).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.domain.deployments import Deployment, deployment_after
from core.domain.events import (
    DEPLOYMENT_STREAM_PREFIX,
    DeploymentEvent,
    NamespacePurged,
    RecordedEvent,
    RollbackRequested,
)
from registry.store.base import RegistryStore
from registry.ui.model import EventRow, event_row

PAGE = 10_000


@dataclass
class ViewHistory:
    deployments: dict[int, Deployment] = field(default_factory=dict)
    rollbacks: list[RecordedEvent] = field(default_factory=list)
    purged: set[str] = field(default_factory=set)

    def newest_first(self) -> list[Deployment]:
        return sorted(self.deployments.values(), key=lambda d: d.number, reverse=True)


class EventIndex:
    def __init__(self, store: RegistryStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._position = 0
        self._views: dict[str, ViewHistory] = {}
        self._rows: list[EventRow] = []
        self.types: set[str] = set()
        """Every event type in the log, and every actor: the event log page's choices."""
        self.actors: set[str] = set()

    @property
    def position(self) -> int:
        """The last event folded: equal positions mean the same registry state."""
        return self._position

    def refresh(self) -> None:
        """Fold every event appended since the last refresh."""
        with self._lock:
            while True:
                page = self._store.read_events(self._position, PAGE)
                for event in page:
                    self._fold(event)
                if page:
                    self._position = page[-1].position
                if len(page) < PAGE:
                    return

    def _fold(self, event: RecordedEvent) -> None:
        row = event_row(event)
        self._rows.append(row)
        self.types.add(row.type)
        if row.actor:
            self.actors.add(row.actor)
        if not event.stream.startswith(DEPLOYMENT_STREAM_PREFIX):
            return
        history = self._views.setdefault(event.stream.removeprefix(DEPLOYMENT_STREAM_PREFIX),
                                         ViewHistory())
        payload = event.payload
        if isinstance(payload, DeploymentEvent):
            after = deployment_after(history.deployments.get(payload.deployment), event)
            if after is not None:
                history.deployments[after.number] = after
        elif isinstance(payload, RollbackRequested):
            history.rollbacks.append(event)
        elif isinstance(payload, NamespacePurged):
            history.purged.add(payload.namespace)

    def history(self, view: str) -> ViewHistory:
        return self._views.get(view, ViewHistory())

    def newest_deployments(self) -> dict[str, Deployment]:
        """Each view's newest deployment."""
        return {view: max(history.deployments.values(), key=lambda d: d.number)
                for view, history in self._views.items() if history.deployments}

    def rows(self) -> Sequence[EventRow]:
        """Every event's summary, in position order (the list only grows)."""
        return self._rows
