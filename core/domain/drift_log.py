"""A feature view's ``drift:{view}`` stream folded: the baseline of each version, and the
alerts open now.  The registry serves it and a monitor that starts recovers from it the
alerts an earlier leader opened, so that one alert per feature and metric stays one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from core.domain.events import (
    BaselineRegistered,
    DriftDetected,
    DriftEvent,
    DriftResolved,
    RecordedEvent,
)

AlertKey = tuple[int, str, str]
"""(version, feature, metric)."""


@dataclass(frozen=True)
class RegisteredBaseline:
    position: int
    registered_at: datetime
    baseline: BaselineRegistered


@dataclass
class DriftLog:
    baselines: dict[int, RegisteredBaseline] = field(default_factory=dict)
    """Version → its newest baseline (a new one replaces the one before)."""
    open_alerts: dict[AlertKey, DriftDetected] = field(default_factory=dict)
    history: list[tuple[RecordedEvent, DriftEvent]] = field(default_factory=list)
    """Every alert opened or resolved, oldest first."""

    @classmethod
    def of(cls, events: Iterable[RecordedEvent]) -> DriftLog:
        log = cls()
        for event in events:
            log.add(event)
        return log

    def add(self, event: RecordedEvent) -> None:
        payload = event.payload
        if isinstance(payload, BaselineRegistered):
            self.baselines[payload.version] = RegisteredBaseline(event.position,
                                                                 event.recorded_at, payload)
        elif isinstance(payload, DriftDetected | DriftResolved):
            key = (payload.version, payload.feature, payload.metric)
            if isinstance(payload, DriftDetected):
                self.open_alerts[key] = payload
            else:
                self.open_alerts.pop(key, None)
            self.history.append((event, payload))
