"""The drift monitor's composition root: a worker wired from the settings."""

from __future__ import annotations

from functools import partial

from core.settings import Settings
from deployer.coordination import PostgresLeaderElection
from monitor.alerts import WebhookAlerts
from monitor.statistics import StatisticsConsumer
from monitor.worker import MONITOR_LOCK_KEY, DriftMonitorWorker
from registry.store.drift import PostgresDriftStore
from registry.store.postgres import PostgresRegistryStore, create_registry_engine


def build(settings: Settings) -> DriftMonitorWorker:
    engine = create_registry_engine(settings.require_database_url())
    monitor = settings.monitor
    return DriftMonitorWorker(
        store=PostgresRegistryStore(engine), drift=PostgresDriftStore(engine),
        election=PostgresLeaderElection(engine, lock_key=MONITOR_LOCK_KEY),
        statistics=partial(StatisticsConsumer, settings.require_kafka_bootstrap()),
        horizon_ms=monitor.horizon_ms,
        alerts=WebhookAlerts(monitor.webhook_url) if monitor.webhook_url else None)
