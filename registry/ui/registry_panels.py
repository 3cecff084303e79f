"""The registry's own backfill and drift panels: the reads behind them.

Both read what the registry process holds anyway — its event log and the drift monitor's
tables in its database — and hand it to :mod:`registry.ui.panel_model`, which decides what the
panels show.  A page costs, for backfills, one stream read; for drift, three stream reads
(drift, deployments, and the definitions :meth:`DriftRegistry.monitored_kinds` parses per
version shown), the view's readings, and one window query per version with a baseline (plus
one for the newest windows when a version has none judged yet).
"""

from __future__ import annotations

from core.domain.definitions import Kind
from core.domain.drift_log import DriftLog
from core.domain.events import backfill_stream, deployment_stream, drift_stream
from core.errors import FeaturePlatformError, InfrastructureError
from registry.drift import DriftRegistry
from registry.store.base import RegistryStore
from registry.ui.panel_model import (
    LiveWindows,
    backfill_coverage,
    drift_report,
    drift_versions,
    live_horizon,
    namespaces_by_version,
)
from registry.ui.panels import Coverage, DriftReport, NotAvailable


class EventLogBackfills:
    """Backfill coverage from the view's ``backfill:{view}`` stream."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def coverage(self, view: str) -> Coverage | NotAvailable:
        return backfill_coverage(self.store.read_stream(backfill_stream(view)))


class MonitoredDrift:
    """Drift from the view's ``drift:{view}`` stream and the monitor's windows and readings.

    ``horizon_ms`` is the monitor's horizon (``FP_DRIFT_HORIZON``), used only for a version
    the monitor has not judged yet: a judged one's live values are merged over the horizon
    its newest reading records."""

    def __init__(self, registry: DriftRegistry, horizon_ms: int) -> None:
        self.registry = registry
        self.horizon_ms = horizon_ms

    def drift(self, view: str) -> DriftReport | NotAvailable:
        service, windows = self.registry.service, self.registry.store
        active = service.definition(Kind.FEATURE_VIEW, view).active_version
        log = DriftLog.of(service.store.read_stream(drift_stream(view)))
        versions = drift_versions(log, active)
        namespaces = namespaces_by_version(service.store.read_stream(deployment_stream(view)))
        live: dict[int, LiveWindows] = {}
        try:
            readings = windows.readings(view)
            newest: dict[tuple[str, str], int] | None = None
            for version in versions:
                namespace = namespaces.get(version)
                if namespace is None or version not in log.baselines:
                    continue
                judged = [r for r in readings
                          if (r.version, r.namespace) == (version, namespace)]
                if not judged and newest is None:
                    newest = windows.newest_window_ends()
                horizon = live_horizon(judged, (newest or {}).get((view, namespace)),
                                       self.horizon_ms)
                if horizon is not None:
                    live[version] = LiveWindows(*horizon, windows.windows(view, namespace,
                                                                          *horizon))
        except InfrastructureError as error:
            return NotAvailable(str(error))
        return drift_report(log, versions=versions, active=active,
                            monitored={version: self._monitored(view, version)
                                       for version in versions},
                            namespaces=namespaces, readings=readings, live=live)

    def _monitored(self, view: str, version: int) -> list[str]:
        try:
            return list(self.registry.monitored_kinds(view, version))
        except FeaturePlatformError:  # its source is no longer registered: show the baseline's
            return []
