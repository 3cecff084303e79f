"""Wiring of a deployer worker from the environment (docs/reference.md, "Configuration")."""

from __future__ import annotations

import os
from pathlib import Path

import redis

from core.domain.durations import parse_duration
from core.errors import ConfigurationError
from core.settings import Settings
from deployer.green import WINDOW, GreenRunner
from deployer.online_store import VersionMapStore
from deployer.rollout import RolloutConfig
from deployer.worker import DeployerWorker
from registry.store.postgres import PostgresRegistryStore, create_registry_engine
from sinks.flink import FlinkClient
from sinks.kafka_admin import KafkaAdmin


def _duration_ms(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return parse_duration(value)
    except ValueError as error:
        raise ConfigurationError(f"{name}: {error}") from None


def rollout_config() -> RolloutConfig:
    keep = os.environ.get("FP_KEEP_NAMESPACES", "3")
    if not keep.isdigit() or int(keep) < 1:
        raise ConfigurationError(f"FP_KEEP_NAMESPACES must be a whole number >= 1, got {keep!r}")
    return RolloutConfig(ready_deadline_ms=_duration_ms("FP_READY_TIMEOUT", "10m"),
                         keep_namespaces=int(keep),
                         purge_grace_ms=_duration_ms("FP_PURGE_GRACE", "10m"))


def connector_jars() -> list[Path]:
    """Jars shipped with each job: the Kafka connector, unless the cluster has it
    (FP_FLINK_CONNECTOR_JARS=none, as in the docker-compose image)."""
    setting = os.environ.get("FP_FLINK_CONNECTOR_JARS", "auto")
    if setting == "none":
        return []
    if setting == "auto":
        from sinks.flink_jars import ensure_kafka_connector_jars

        return ensure_kafka_connector_jars()
    return [Path(p) for p in setting.split(os.pathsep) if p]


def build_worker(settings: Settings) -> DeployerWorker:
    engine = create_registry_engine(settings.require_database_url())
    flink = FlinkClient(settings.require("flink_url"), jars=connector_jars())
    versions = VersionMapStore(redis.Redis.from_url(settings.require("redis_url")))
    start = os.environ.get("FP_DEPLOYER_START", WINDOW)
    green = GreenRunner(PostgresRegistryStore(engine), flink, versions,
                        KafkaAdmin(settings.require("kafka_bootstrap")), start_policy=start)
    return DeployerWorker(engine, flink, versions, green, rollout_config())
