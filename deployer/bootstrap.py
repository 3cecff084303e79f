"""The deployer's composition root: a worker wired from the settings."""

from __future__ import annotations

from pathlib import Path

from core.settings import AUTO_JARS, ConnectorJars, DeployerSettings, Settings
from deployer.coordination import PostgresCheckpointStore, PostgresLeaderElection
from deployer.faults import arm_crashes
from deployer.green import GreenRunner
from deployer.rollout import RolloutConfig
from deployer.worker import DeployerWorker
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from sinks.flink import FlinkClient
from sinks.kafka_admin import KafkaAdmin
from sinks.online_store import RedisOnlineStore


def build(settings: Settings) -> DeployerWorker:
    """A worker ready to :meth:`~DeployerWorker.run`, its crash points armed as configured."""
    deployer = settings.deployer
    arm_crashes(deployer.crash_at)
    engine = create_registry_engine(settings.require_database_url())
    flink = FlinkClient(settings.require_flink_url(),
                        jars=resolve_connector_jars(deployer.connector_jars))
    versions = RedisOnlineStore(settings.require_redis_url())
    store = PostgresRegistryStore(engine)
    green = GreenRunner(store, flink, versions,
                        KafkaAdmin(settings.require_kafka_bootstrap()),
                        start_policy=deployer.start,
                        monitoring_window_ms=deployer.monitoring_window_ms)
    return DeployerWorker(store=store, checkpoints=PostgresCheckpointStore(engine),
                          election=PostgresLeaderElection(engine), flink=flink,
                          versions=versions, green=green, config=rollout_config(deployer))


def rollout_config(deployer: DeployerSettings) -> RolloutConfig:
    return RolloutConfig(ready_deadline_ms=deployer.ready_timeout_ms,
                         keep_namespaces=deployer.keep_namespaces,
                         purge_grace_ms=deployer.purge_grace_ms)


def resolve_connector_jars(setting: ConnectorJars) -> list[Path]:
    if setting == AUTO_JARS:
        from sinks.flink_jars import ensure_kafka_connector_jars  # downloads on first use

        return ensure_kafka_connector_jars()
    return list(setting)
