"""The settings: every FP_* variable read and checked in one place, and documented as read."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from core.settings import (
    VARIABLES,
    BackfillSettings,
    DeployerSettings,
    IngestSettings,
    MonitorSettings,
    RateLimit,
    RegistrySettings,
    Settings,
    WebhookSettings,
)
from fp.cli import main

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("core", "fp", "registry", "deployer", "sinks", "serving", "offline", "ingest",
                    "monitor", "migrations")

DEFAULTS = Settings(
    database_url=None, redis_url=None, kafka_bootstrap=None, flink_url=None, warehouse=None,
    registry=RegistrySettings(url="http://127.0.0.1:8000", api_tokens=(), client_token=None),
    webhooks=WebhookSettings(secret=None, branch="main", features_path="features",
                             python="sandboxed"),
    deployer=DeployerSettings(start="window", ready_timeout_ms=600_000, keep_namespaces=3,
                              purge_grace_ms=600_000, connector_jars="auto",
                              crash_at=frozenset()))

EVERY_VARIABLE = {
    "FP_DATABASE_URL": "postgresql+psycopg://fp@db:5432/fp",
    "FP_REDIS_URL": "redis://cache:6379/1",
    "FP_KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092",
    "FP_FLINK_URL": "http://flink:8081/",
    "FP_WAREHOUSE": "s3://lake/fp",
    "FP_REGISTRY_URL": "https://registry.example:8443/",
    "FP_API_TOKENS": " alpha, beta ,,",
    "FP_API_TOKEN": "gamma",
    "FP_READ_TOKENS": "dashboards:peek",
    "FP_OPEN_WRITES": "true",
    "FP_APPLY_RATE_LIMIT": "10/1s",
    "FP_WEBHOOK_RATE_LIMIT": "5/1h",
    "FP_WEBHOOK_SECRET": "hush",
    "FP_GITHUB_WEBHOOK_SECRET": "hub",
    "FP_GITLAB_WEBHOOK_SECRET": "lab",
    "FP_GIT_REPOSITORIES": "acme/features, file:///srv/mirror.git",
    "FP_WEBHOOK_RETENTION": "2d",
    "FP_GIT_BRANCH": "release",
    "FP_FEATURES_PATH": "repo/features",
    "FP_WEBHOOK_PYTHON": "off",
    "FP_DEPLOYER_START": "earliest",
    "FP_READY_TIMEOUT": "2m",
    "FP_KEEP_NAMESPACES": "5",
    "FP_PURGE_GRACE": "30s",
    "FP_FLINK_CONNECTOR_JARS": "/jars/a.jar:/jars/b.jar",
    "FP_DEPLOYER_CRASH_AT": "submitted,DeploymentReady",
    "FP_SERVING_URL": "https://serving.example:8001/",
    "FP_INGEST_URL": "https://ingest.example/",
    "FP_INGEST_DELIVERY_TIMEOUT": "3s",
    "FP_INGEST_IDEMPOTENCY_WINDOW": "1h",
    "FP_DRIFT_WINDOW": "30s",
    "FP_DRIFT_HORIZON": "10m",
    "FP_DRIFT_WEBHOOK_URL": "https://hooks.example/drift",
    "FP_BACKFILL_STAGING": "/shared/fp-backfill",
}


def test_defaults_when_nothing_is_set() -> None:
    assert Settings.from_env({}) == DEFAULTS


def test_an_empty_value_counts_as_unset() -> None:
    assert Settings.from_env({variable.name: "" for variable in VARIABLES}) == DEFAULTS


def test_every_variable_is_read() -> None:
    assert set(EVERY_VARIABLE) == {variable.name for variable in VARIABLES}
    assert Settings.from_env(EVERY_VARIABLE) == Settings(
        database_url="postgresql+psycopg://fp@db:5432/fp", redis_url="redis://cache:6379/1",
        kafka_bootstrap="kafka-1:9092,kafka-2:9092", flink_url="http://flink:8081",
        warehouse="s3://lake/fp",
        registry=RegistrySettings(url="https://registry.example:8443",
                                  api_tokens=("alpha", "beta"), client_token="gamma",
                                  read_tokens=("dashboards:peek",), open_writes=True,
                                  apply_rate_limit=RateLimit(10, 1_000),
                                  webhook_rate_limit=RateLimit(5, 3_600_000)),
        webhooks=WebhookSettings(secret="hush", branch="release",
                                 features_path="repo/features", python="off",
                                 github_secret="hub", gitlab_secret="lab",
                                 repositories=("acme/features", "file:///srv/mirror.git"),
                                 retention_ms=172_800_000),
        deployer=DeployerSettings(
            start="earliest", ready_timeout_ms=120_000, keep_namespaces=5,
            purge_grace_ms=30_000, connector_jars=(Path("/jars/a.jar"), Path("/jars/b.jar")),
            crash_at=frozenset({"submitted", "DeploymentReady"}), monitoring_window_ms=30_000),
        ingest=IngestSettings(url="https://ingest.example", delivery_timeout_ms=3_000,
                              idempotency_window_ms=3_600_000),
        serving_url="https://serving.example:8001",
        monitor=MonitorSettings(horizon_ms=600_000, webhook_url="https://hooks.example/drift"),
        backfill=BackfillSettings(staging=Path("/shared/fp-backfill")))


def test_the_client_token_defaults_to_the_first_accepted_token() -> None:
    settings = Settings.from_env({"FP_API_TOKENS": "alpha,beta"})
    assert settings.registry.client_token == "alpha"


def test_connector_jars_none_ships_no_jar() -> None:
    assert Settings.from_env({"FP_FLINK_CONNECTOR_JARS": "none"}).deployer.connector_jars == ()


@pytest.mark.parametrize(("name", "value", "accepted_form"), [
    ("FP_DATABASE_URL", "mysql://db/fp", "use e.g. postgresql+psycopg://"),
    ("FP_REDIS_URL", "cache:6379", "use e.g. redis://127.0.0.1:6379/0"),
    ("FP_KAFKA_BOOTSTRAP", "kafka", "use HOST:PORT[,HOST:PORT...]"),
    ("FP_KAFKA_BOOTSTRAP", "kafka:9092,", "use HOST:PORT[,HOST:PORT...]"),
    ("FP_FLINK_URL", "flink:8081", "use e.g. http://127.0.0.1:8081"),
    ("FP_REGISTRY_URL", "127.0.0.1:8000", "use e.g. http://127.0.0.1:8000"),
    ("FP_SERVING_URL", "serving:8001", "use e.g. http://127.0.0.1:8001"),
    ("FP_DEPLOYER_START", "latest", "use window or earliest"),
    ("FP_WEBHOOK_PYTHON", "on", "use off or sandboxed"),
    ("FP_READY_TIMEOUT", "10x", "e.g. '30s', '5m', '1h'"),
    ("FP_WEBHOOK_RETENTION", "a week", "e.g. '30s', '5m', '1h'"),
    ("FP_PURGE_GRACE", "10", "e.g. '30s', '5m', '1h'"),
    ("FP_KEEP_NAMESPACES", "0", "whole number >= 1"),
    ("FP_KEEP_NAMESPACES", "three", "whole number >= 1"),
    ("FP_OPEN_WRITES", "yes", "use true or false"),
    ("FP_APPLY_RATE_LIMIT", "60", "use COUNT/DURATION, e.g. 60/1m"),
    ("FP_WEBHOOK_RATE_LIMIT", "0/1m", "use COUNT/DURATION, e.g. 60/1m"),
])
def test_a_malformed_value_is_refused_naming_the_variable_and_the_accepted_form(
        name: str, value: str, accepted_form: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({name: value})
    message = str(refused.value)
    assert message.startswith(f"{name}: {value!r} is not ")
    assert accepted_form in message


def test_a_malformed_value_stops_any_command_before_it_starts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FP_READY_TIMEOUT", "10x")
    assert main(["status"]) == 1
    assert capsys.readouterr().err.startswith("error: FP_READY_TIMEOUT: '10x' is not a duration")


@pytest.mark.parametrize(("require", "name"), [
    (Settings.require_database_url, "FP_DATABASE_URL"),
    (Settings.require_redis_url, "FP_REDIS_URL"),
    (Settings.require_kafka_bootstrap, "FP_KAFKA_BOOTSTRAP"),
    (Settings.require_flink_url, "FP_FLINK_URL"),
    (Settings.require_warehouse, "FP_WAREHOUSE"),
])
def test_a_missing_required_value_names_the_variable(require: Callable[[Settings], str],
                                                     name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{name} is not set: .*fp up"):
        require(DEFAULTS)


def test_settings_are_frozen_at_every_level() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.redis_url = "redis://elsewhere"  # type: ignore[misc]
    for section in (settings.registry, settings.webhooks, settings.deployer, settings.ingest,
                    settings.monitor):
        field = dataclasses.fields(section)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(section, field, None)


def test_replacing_a_value_gives_a_new_settings() -> None:
    started = dataclasses.replace(DEFAULTS, redis_url="redis://127.0.0.1:6390/0")
    assert started.redis_url == "redis://127.0.0.1:6390/0"
    assert DEFAULTS.redis_url is None
    assert started.services_env() == {"FP_REDIS_URL": "redis://127.0.0.1:6390/0",
                                      "FP_REGISTRY_URL": "http://127.0.0.1:8000",
                                      "FP_INGEST_URL": "http://127.0.0.1:8002"}


def test_every_fp_variable_named_in_the_product_is_in_the_settings_table() -> None:
    declared = {variable.name for variable in VARIABLES}
    sources = [path for package in PRODUCT_PACKAGES for path in (ROOT / package).rglob("*.py")]
    sources += [ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    named = {name for path in sources
             for name in re.findall(r"\bFP_[A-Z][A-Z_]*[A-Z]\b", path.read_text())}
    assert named <= declared, f"read outside core/settings.py's table: {named - declared}"


# --------------------------------------------------------------------------- the docs

def documented_variables(markdown: str, heading: str) -> dict[str, str | None]:
    """The ``| variable | meaning | default |`` table under ``heading``: each variable with
    its default (the cell's leading `code`; None when the cell starts otherwise, e.g. unset)."""
    section = markdown.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    table = {}
    for row in re.findall(r"^\| `(FP_[A-Z_]+)` \|.*\|(.*)\|$", section, re.M):
        name, default_cell = row
        default = re.match(r"\s*`([^`]*)`", default_cell)
        table[name] = default.group(1) if default else None
    return table


DOCUMENTED = [pytest.param(ROOT / "README.md", "### Configuration", id="README.md"),
              pytest.param(ROOT / "docs" / "reference.md", "## Configuration",
                           id="docs/reference.md")]


@pytest.mark.parametrize(("document", "heading"), DOCUMENTED)
def test_the_documented_variables_and_defaults_are_the_settings_table(document: Path,
                                                                      heading: str) -> None:
    if not document.exists():
        pytest.skip(f"{document.name} is not written yet")
    documented = documented_variables(document.read_text(), heading)
    assert documented == {variable.name: variable.default or None for variable in VARIABLES}
