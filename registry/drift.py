"""Registry use cases of drift detection: register a view version's baseline, and report a
view's drift — its baselines, the monitor's latest readings and the open alerts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.domain.definitions import FeatureView, Kind, Source, parse_definition
from core.domain.drift import Baseline, Severity, WindowStatistics, monitored_kind
from core.domain.drift_log import DriftLog
from core.domain.events import (
    BaselineRegistered,
    NewEvent,
    Provenance,
    StreamAppend,
    drift_stream,
)
from core.domain.layout import output_type
from core.errors import (
    ConcurrencyConflictError,
    InfrastructureError,
    InvalidFeatureRequestError,
    Problem,
)
from registry.service import RegistryService
from registry.store.drift import DriftStore

APPEND_ATTEMPTS = 5


class DriftRegistry:
    def __init__(self, service: RegistryService, store: DriftStore) -> None:
        self.service = service
        self.store = store

    def register_baseline(self, view: str, version: int, features: Mapping[str, Any],
                          origin: Mapping[str, Any], provenance: Provenance) -> int:
        """Record ``features`` (name → statistics JSON) as the baseline of ``view@version``,
        replacing the version's earlier one; returns the event's position.  Every feature
        must be one the monitor judges (not a timestamp), with statistics of its kind and at
        least one value; InvalidFeatureRequestError lists every one that is not."""
        kinds = self.monitored_kinds(view, version)
        problems: list[Problem] = []
        for name, body in features.items():
            path = f"features.{name}"
            if name not in kinds:
                known = ", ".join(sorted(kinds)) or "none"
                problems.append(Problem(path, f"{view}@{version} has no monitored feature "
                                              f"{name!r} (monitored: {known})"))
                continue
            try:
                Baseline(WindowStatistics.from_json(body)).describe()  # what status serves
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                problems.append(Problem(path, f"not readable statistics: {error}"))
                continue
            if body["kind"] != kinds[name]:
                problems.append(Problem(path, f"{kinds[name]} statistics are needed, not "
                                              f"{body['kind']}"))
        if not features:
            problems.append(Problem("features", "a baseline needs at least one feature"))
        if problems:
            raise InvalidFeatureRequestError(problems)
        event = BaselineRegistered(view=view, version=version, features=dict(features),
                                   origin=dict(origin))
        stream = drift_stream(view)
        for _ in range(APPEND_ATTEMPTS):
            current = len(self.service.store.read_stream(stream))
            try:
                return self.service.store.append([StreamAppend(
                    stream, current, (NewEvent(event, provenance.to_metadata()),))])[0].position
            except ConcurrencyConflictError:
                continue  # the monitor recorded an alert meanwhile
        raise ConcurrencyConflictError(f"{stream} kept changing; retry the baseline")

    def monitored_kinds(self, view: str, version: int) -> dict[str, str]:
        """Feature name → ``numeric`` or ``categorical`` for the features of ``view@version``
        the monitor judges."""
        definition = parse_definition(dict(self.service.version(Kind.FEATURE_VIEW, view,
                                                                version).spec))
        assert isinstance(definition, FeatureView)
        source = parse_definition(dict(self.service.definition(Kind.SOURCE,
                                                               definition.source).spec))
        assert isinstance(source, Source)
        kinds = {feature.name: monitored_kind(output_type(feature, source))
                 for feature in definition.features}
        return {name: kind.value for name, kind in kinds.items() if kind is not None}

    def status(self, view: str) -> dict[str, Any]:
        """The view's baselines (described), the latest readings and the open alerts."""
        self.service.definition(Kind.FEATURE_VIEW, view)
        log = DriftLog.of(self.service.store.read_stream(drift_stream(view)))
        baselines = [{
            "version": version, "position": registered.position,
            "registered_at": registered.registered_at.isoformat(),
            "origin": registered.baseline.origin,
            "features": {name: Baseline(WindowStatistics.from_json(body)).describe()
                         for name, body in registered.baseline.features.items()},
        } for version, registered in sorted(log.baselines.items())]
        return {"name": view, "baselines": baselines,
                "readings": [r.to_json() for r in self.store.readings(view)],
                "open_alerts": [{"version": alert.version, "feature": alert.feature,
                                 "metric": alert.metric, "value": alert.value,
                                 "alert_at": alert.alert_at,
                                 "window_end_ms": alert.window_end_ms}
                                for alert in log.open_alerts.values()],
                "alerts": [{"type": event.type, "position": event.position,
                            "recorded_at": event.recorded_at.isoformat(), **event.data}
                           for event, _ in log.history[-50:]]}



class DriftMetrics(Collector):
    """The monitor's latest readings as Prometheus gauges at the registry's ``/metrics``
    (whichever monitor leads, the readings are in the database):
    ``fp_feature_drift{view,version,feature,metric}`` and the alerts open per view version,
    ``fp_drift_open_alerts{view,version}``."""

    def __init__(self, store: DriftStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        drift = GaugeMetricFamily("fp_feature_drift", "The drift monitor's latest reading of "
                                  "a feature's metric against its version's baseline",
                                  labels=["view", "version", "feature", "metric"])
        open_alerts = GaugeMetricFamily("fp_drift_open_alerts", "Drift alerts open, per view "
                                        "version", labels=["view", "version"])
        alerts: Counter[tuple[str, str]] = Counter()
        try:
            readings = self.store.readings()
        except InfrastructureError:
            readings = []  # a scrape must not fail with the database: no sample is the signal
        for reading in readings:
            labels = [reading.view, str(reading.version)]
            drift.add_metric([*labels, reading.feature, reading.metric], reading.value)
            alerts[(labels[0], labels[1])] += reading.severity == Severity.ALERT
        for (view, version), count in sorted(alerts.items()):
            open_alerts.add_metric([view, version], count)
        yield drift
        yield open_alerts
