"""Every ``FP_*`` environment variable the platform reads, parsed and checked in one place.

:data:`VARIABLES` is the single list of them — name, meaning, default and parser — and the
configuration tables of README.md and docs/reference.md are checked against it
(tests/unit/test_settings.py).  :meth:`Settings.from_env` reads them all at start, so a bad
value stops a process at once with the variable's name and the form it accepts, not deep
inside a component later.  Command-line flags override the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar
from urllib.parse import urlsplit

from core.domain.durations import parse_duration
from core.errors import ConfigurationError

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

DeployerStart = Literal["window", "earliest"]
"""Where a new job starts reading its source: replay the longest window, or the whole topic."""

AUTO_JARS: Literal["auto"] = "auto"
ConnectorJars = Literal["auto"] | tuple[Path, ...]
"""The jars shipped with each Flink job: ``auto`` (the Kafka connector, downloaded once and
cached) or exactly these (none when the cluster carries the connector itself)."""

WebhookPython = Literal["off", "sandboxed"]
"""Python definitions in pushed repositories: refused, or run in the loader's sandbox."""


@dataclass(frozen=True)
class Variable(Generic[T_co]):
    """One environment variable: what it means, its default, and how its text is read."""

    name: str
    meaning: str
    default: str
    """As written in the environment; empty when the variable is unset by default."""
    parse: Callable[[str], T_co]
    """Reads the variable's text (the default when unset or empty); raises ValueError
    saying what is wrong and the form accepted."""

    def read(self, env: Mapping[str, str]) -> T_co:
        text = env.get(self.name) or self.default
        try:
            return self.parse(text)
        except ValueError as error:
            raise ConfigurationError(f"{self.name}: {error}") from None


# --------------------------------------------------------------------------- parsers

def _optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """``parse``, except that an empty text (unset) reads as None."""
    return lambda text: parse(text) if text else None


def _url(schemes: tuple[str, ...], example: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        parts = urlsplit(text)
        if parts.scheme not in schemes or not (parts.netloc or parts.path):
            raise ValueError(f"{text!r} is not a {' or '.join(schemes)} URL: use e.g. {example}")
        return text.rstrip("/")
    return parse


def _postgres_url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgresql+")):
        raise ValueError(f"{text!r} is not a PostgreSQL SQLAlchemy URL: use e.g. "
                         "postgresql+psycopg://user@127.0.0.1:5432/fp")
    return text


_HOST_PORT = re.compile(r"[^\s:,/]+:[0-9]{1,5}")


def _bootstrap(text: str) -> str:
    if not all(_HOST_PORT.fullmatch(server) for server in text.split(",")):
        raise ValueError(f"{text!r} is not a list of Kafka brokers: use HOST:PORT[,HOST:PORT...], "
                         "e.g. 127.0.0.1:9092")
    return text


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a whole number >= 1: use e.g. 3")
    return int(text)


def _choice(options: Mapping[str, T], noun: str) -> Callable[[str], T]:
    """A parser of one of ``options``' names into its value."""
    def parse(text: str) -> T:
        if text not in options:
            raise ValueError(f"{text!r} is not {noun}: use {' or '.join(options)}")
        return options[text]

    return parse


_START_POLICIES: dict[str, DeployerStart] = {"window": "window", "earliest": "earliest"}
_deployer_start = _choice(_START_POLICIES, "a start policy")


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` per ``period_ms`` from one caller, in bursts of up to ``requests``."""

    requests: int
    period_ms: int


def _rate_limit(text: str) -> RateLimit:
    count, _, period = text.partition("/")
    if not count.isdigit() or int(count) < 1 or not period:
        raise ValueError(f"{text!r} is not a rate limit: use COUNT/DURATION, e.g. 60/1m")
    return RateLimit(int(count), parse_duration(period))


_true_or_false = _choice({"true": True, "false": False}, "a boolean")
_WEBHOOK_PYTHON: dict[str, WebhookPython] = {"off": "off", "sandboxed": "sandboxed"}
_webhook_python = _choice(_WEBHOOK_PYTHON, "a choice")


def _connector_jars(text: str) -> ConnectorJars:
    if text == AUTO_JARS:
        return AUTO_JARS
    if text == "none":
        return ()
    return tuple(Path(path) for path in text.split(os.pathsep) if path)


# --------------------------------------------------------------------------- the variables

_NOT_SET_HINT = "(or run `fp up`, which starts the services it finds missing)"

DATABASE_URL = Variable(
    "FP_DATABASE_URL", "the registry's PostgreSQL as a SQLAlchemy URL "
    "(`postgresql+psycopg://user@host:5432/fp`); it also holds the Iceberg catalog", "",
    _optional(_postgres_url))
REDIS_URL = Variable(
    "FP_REDIS_URL", "the online store's Redis (`redis://host:6379/0`)", "",
    _optional(_url(("redis", "rediss", "unix"), "redis://127.0.0.1:6379/0")))
KAFKA_BOOTSTRAP = Variable(
    "FP_KAFKA_BOOTSTRAP", "the Kafka brokers (`host:port[,host:port…]`)", "",
    _optional(_bootstrap))
FLINK_URL = Variable(
    "FP_FLINK_URL", "the Flink session cluster's REST API", "",
    _optional(_url(("http", "https"), "http://127.0.0.1:8081")))
WAREHOUSE = Variable(
    "FP_WAREHOUSE", "the Iceberg warehouse of the archive: a local path or "
    "`s3://bucket/prefix`; needed by `fp archiver run`", "",
    _optional(str))
REGISTRY_URL = Variable(
    "FP_REGISTRY_URL", "the registry API that `fp plan`/`apply`/`status` and the serving API "
    "talk to",
    "http://127.0.0.1:8000", _url(("http", "https"), "http://127.0.0.1:8000"))
API_TOKENS = Variable(
    "FP_API_TOKENS", "comma-separated tokens the registry accepts for writes, each `name:secret` "
    "(the name is recorded as the actor) or a bare secret (named `token-N`); none: writes only "
    "on loopback or with `FP_OPEN_WRITES`", "", _names)
API_TOKEN = Variable(
    "FP_API_TOKEN", "the token `fp plan`/`apply`/`status` send (`name:secret` or the secret); "
    "unset: the first of `FP_API_TOKENS`", "",
    _optional(str))
READ_TOKENS = Variable(
    "FP_READ_TOKENS", "comma-separated tokens (`name:secret` or a secret) for the event log, "
    "webhook deliveries and `/metrics`; set: those need a read or write token", "", _names)
OPEN_WRITES = Variable(
    "FP_OPEN_WRITES", "`true`: a registry without `FP_API_TOKENS` accepts anyone's writes even "
    "on a non-loopback address", "false", _true_or_false)
APPLY_RATE_LIMIT = Variable(
    "FP_APPLY_RATE_LIMIT", "applies and rollbacks one caller may make (`COUNT/DURATION`)",
    "60/1m", _rate_limit)
WEBHOOK_RATE_LIMIT = Variable(
    "FP_WEBHOOK_RATE_LIMIT", "webhook requests one client address may make (`COUNT/DURATION`)",
    "60/1m", _rate_limit)
WEBHOOK_SECRET = Variable(
    "FP_WEBHOOK_SECRET", "the git webhooks' shared secret; unset: every webhook request is "
    "refused", "",
    _optional(str))
GITHUB_WEBHOOK_SECRET = Variable(
    "FP_GITHUB_WEBHOOK_SECRET", "GitHub webhooks' secret; unset: `FP_WEBHOOK_SECRET`", "",
    _optional(str))
GITLAB_WEBHOOK_SECRET = Variable(
    "FP_GITLAB_WEBHOOK_SECRET", "GitLab webhooks' secret token; unset: `FP_WEBHOOK_SECRET`", "",
    _optional(str))
GIT_REPOSITORIES = Variable(
    "FP_GIT_REPOSITORIES", "comma-separated repositories whose pushes the webhooks apply: full "
    "names (`org/repo`) or exact URLs (any scheme, e.g. a local `file://` mirror); unset: any "
    "https or ssh repository", "", _names)
WEBHOOK_RETENTION = Variable(
    "FP_WEBHOOK_RETENTION", "how long finished webhook deliveries keep their payload, and "
    "unused clones of pushed repositories are kept (a duration)", "7d", parse_duration)
GIT_BRANCH = Variable(
    "FP_GIT_BRANCH", "the branch whose pushes the webhooks apply", "main", str)
FEATURES_PATH = Variable(
    "FP_FEATURES_PATH", "the folder of the pushed repository holding the definitions",
    "features", str)
WEBHOOK_PYTHON = Variable(
    "FP_WEBHOOK_PYTHON", "Python files in pushed repositories: `sandboxed` (run in the "
    "loader's bubblewrap sandbox; refused when it is unavailable) or `off` (refused)",
    "sandboxed", _webhook_python)
DEPLOYER_START = Variable(
    "FP_DEPLOYER_START", "where a new version's job starts reading its source: `window` "
    "(far enough back to fill its longest window) or `earliest` (the whole topic)", "window",
    _deployer_start)
READY_TIMEOUT = Variable(
    "FP_READY_TIMEOUT", "a new version's job not ready this long after it could be submitted "
    "fails (a duration; waiting for a missing source topic does not count)", "10m",
    parse_duration)
KEEP_NAMESPACES = Variable(
    "FP_KEEP_NAMESPACES", "namespaces kept in a view's version map for pinned reads (a whole "
    "number ≥ 1)", "3",
    _at_least_one)
PURGE_GRACE = Variable(
    "FP_PURGE_GRACE", "how long a namespace that left the version map keeps its data (a "
    "duration)", "10m",
    parse_duration)
FLINK_CONNECTOR_JARS = Variable(
    "FP_FLINK_CONNECTOR_JARS", "jars shipped with each job: `auto` (the Kafka connector, "
    "downloaded once), `none` (the cluster has it) or jar paths separated by `:`", "auto",
    _connector_jars)
DEPLOYER_CRASH_AT = Variable(
    "FP_DEPLOYER_CRASH_AT", "recovery tests only: comma-separated rollout steps (`submitted`, "
    "`switched`, an event type) after which the deployer exits at once", "",
    lambda text: frozenset(_names(text)))

SERVING_URL = Variable(
    "FP_SERVING_URL", "the serving API whose answers the registry's UI shows as live values; "
    "unset: the UI says so instead", "",
    _optional(_url(("http", "https"), "http://127.0.0.1:8001")))

INGEST_URL = Variable(
    "FP_INGEST_URL", "the ingest API that `fp ingest push` and the demo send events to",
    "http://127.0.0.1:8002", _url(("http", "https"), "http://127.0.0.1:8002"))
INGEST_DELIVERY_TIMEOUT = Variable(
    "FP_INGEST_DELIVERY_TIMEOUT", "how long the ingest API waits for the broker to acknowledge "
    "a request's events before it answers 503 (a duration)", "10s", parse_duration)
INGEST_IDEMPOTENCY_WINDOW = Variable(
    "FP_INGEST_IDEMPOTENCY_WINDOW", "how long the ingest API remembers a request's "
    "`Idempotency-Key` and answer (a duration)", "24h", parse_duration)

DRIFT_WINDOW = Variable(
    "FP_DRIFT_WINDOW", "the drift statistics' monitoring window: each job counts the feature "
    "values it emits per window this long (a duration; applies to jobs submitted from then "
    "on)", "5m", parse_duration)
DRIFT_HORIZON = Variable(
    "FP_DRIFT_HORIZON", "how much of the newest monitoring windows the drift monitor merges "
    "and judges against a baseline (a duration)", "1h", parse_duration)
DRIFT_WEBHOOK_URL = Variable(
    "FP_DRIFT_WEBHOOK_URL", "where the drift monitor POSTs each alert it opens or resolves as "
    "JSON; unset: nowhere", "", _optional(_url(("http", "https"), "https://hooks.example/fp")))
BACKFILL_STAGING = Variable(
    "FP_BACKFILL_STAGING", "the folder where backfills hand archive slices to Flink and read "
    "its results back; Flink's TaskManagers must reach the same path (one machine: any folder, "
    "else a shared mount); unset: `fp-backfill` in the system's temporary folder", "",
    _optional(Path))

DEFAULT_APPLY_RATE_LIMIT = _rate_limit(APPLY_RATE_LIMIT.default)
DEFAULT_WEBHOOK_RATE_LIMIT = _rate_limit(WEBHOOK_RATE_LIMIT.default)

VARIABLES: tuple[Variable[object], ...] = (
    DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP, FLINK_URL, WAREHOUSE, REGISTRY_URL, API_TOKENS,
    API_TOKEN, READ_TOKENS, OPEN_WRITES, APPLY_RATE_LIMIT, WEBHOOK_RATE_LIMIT,
    WEBHOOK_SECRET, GITHUB_WEBHOOK_SECRET, GITLAB_WEBHOOK_SECRET, GIT_REPOSITORIES,
    WEBHOOK_RETENTION, GIT_BRANCH, FEATURES_PATH, WEBHOOK_PYTHON, DEPLOYER_START, READY_TIMEOUT,
    KEEP_NAMESPACES, PURGE_GRACE, FLINK_CONNECTOR_JARS, DEPLOYER_CRASH_AT, SERVING_URL,
    INGEST_URL, INGEST_DELIVERY_TIMEOUT, INGEST_IDEMPOTENCY_WINDOW, DRIFT_WINDOW, DRIFT_HORIZON,
    DRIFT_WEBHOOK_URL, BACKFILL_STAGING)


# --------------------------------------------------------------------------- the settings

@dataclass(frozen=True)
class RegistrySettings:
    url: str
    api_tokens: tuple[str, ...]
    """Accepted by the registry server for writes."""
    client_token: str | None
    """Sent by `fp` (FP_API_TOKEN, else the first accepted token)."""
    read_tokens: tuple[str, ...] = ()
    """Accepted, besides the write tokens, by the protected reads; none: reads are open."""
    open_writes: bool = False
    """Writes without tokens were asked for, on any address."""
    apply_rate_limit: RateLimit = DEFAULT_APPLY_RATE_LIMIT
    webhook_rate_limit: RateLimit = DEFAULT_WEBHOOK_RATE_LIMIT


DEFAULT_WEBHOOK_RETENTION_MS = parse_duration(WEBHOOK_RETENTION.default)


@dataclass(frozen=True)
class WebhookSettings:
    secret: str | None
    branch: str
    features_path: str
    python: WebhookPython
    github_secret: str | None = None
    """Each provider's own secret; None: ``secret``."""
    gitlab_secret: str | None = None
    repositories: tuple[str, ...] = ()
    """FP_GIT_REPOSITORIES; none: any https or ssh repository."""
    retention_ms: int = DEFAULT_WEBHOOK_RETENTION_MS


DEFAULT_DRIFT_WINDOW_MS = parse_duration(DRIFT_WINDOW.default)
DEFAULT_DRIFT_HORIZON_MS = parse_duration(DRIFT_HORIZON.default)


@dataclass(frozen=True)
class DeployerSettings:
    start: DeployerStart
    ready_timeout_ms: int
    keep_namespaces: int
    purge_grace_ms: int
    connector_jars: ConnectorJars
    crash_at: frozenset[str]
    monitoring_window_ms: int = DEFAULT_DRIFT_WINDOW_MS
    """The window of the drift statistics the jobs it submits count."""


@dataclass(frozen=True)
class MonitorSettings:
    horizon_ms: int = DEFAULT_DRIFT_HORIZON_MS
    webhook_url: str | None = None


DEFAULT_INGEST_DELIVERY_TIMEOUT_MS = parse_duration(INGEST_DELIVERY_TIMEOUT.default)
DEFAULT_IDEMPOTENCY_WINDOW_MS = parse_duration(INGEST_IDEMPOTENCY_WINDOW.default)


@dataclass(frozen=True)
class IngestSettings:
    url: str = INGEST_URL.default
    """Where clients (`fp ingest push`, the demo) find the ingest API."""
    delivery_timeout_ms: int = DEFAULT_INGEST_DELIVERY_TIMEOUT_MS
    idempotency_window_ms: int = DEFAULT_IDEMPOTENCY_WINDOW_MS


@dataclass(frozen=True)
class BackfillSettings:
    staging: Path | None = None
    """FP_BACKFILL_STAGING; None: the system's temporary folder."""


@dataclass(frozen=True)
class Settings:
    """The services' addresses, shared by several components, then each component's own.

    Replace a value with :func:`dataclasses.replace`, as `fp up` does for the services it
    starts."""

    database_url: str | None
    redis_url: str | None
    kafka_bootstrap: str | None
    flink_url: str | None
    warehouse: str | None
    registry: RegistrySettings
    webhooks: WebhookSettings
    deployer: DeployerSettings
    ingest: IngestSettings = IngestSettings()
    serving_url: str | None = None
    """Where the registry's UI reads live values (FP_SERVING_URL)."""
    monitor: MonitorSettings = MonitorSettings()
    backfill: BackfillSettings = BackfillSettings()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Raises ConfigurationError naming the first variable whose value is malformed."""
        env = os.environ if env is None else env
        api_tokens = API_TOKENS.read(env)
        return cls(
            database_url=DATABASE_URL.read(env),
            redis_url=REDIS_URL.read(env),
            kafka_bootstrap=KAFKA_BOOTSTRAP.read(env),
            flink_url=FLINK_URL.read(env),
            warehouse=WAREHOUSE.read(env),
            registry=RegistrySettings(
                url=REGISTRY_URL.read(env), api_tokens=api_tokens,
                client_token=API_TOKEN.read(env) or next(iter(api_tokens), None),
                read_tokens=READ_TOKENS.read(env), open_writes=OPEN_WRITES.read(env),
                apply_rate_limit=APPLY_RATE_LIMIT.read(env),
                webhook_rate_limit=WEBHOOK_RATE_LIMIT.read(env)),
            webhooks=WebhookSettings(secret=WEBHOOK_SECRET.read(env),
                                     branch=GIT_BRANCH.read(env),
                                     features_path=FEATURES_PATH.read(env),
                                     python=WEBHOOK_PYTHON.read(env),
                                     github_secret=GITHUB_WEBHOOK_SECRET.read(env),
                                     gitlab_secret=GITLAB_WEBHOOK_SECRET.read(env),
                                     repositories=GIT_REPOSITORIES.read(env),
                                     retention_ms=WEBHOOK_RETENTION.read(env)),
            deployer=DeployerSettings(
                start=DEPLOYER_START.read(env), ready_timeout_ms=READY_TIMEOUT.read(env),
                keep_namespaces=KEEP_NAMESPACES.read(env), purge_grace_ms=PURGE_GRACE.read(env),
                connector_jars=FLINK_CONNECTOR_JARS.read(env),
                crash_at=DEPLOYER_CRASH_AT.read(env),
                monitoring_window_ms=DRIFT_WINDOW.read(env)),
            ingest=IngestSettings(
                url=INGEST_URL.read(env), delivery_timeout_ms=INGEST_DELIVERY_TIMEOUT.read(env),
                idempotency_window_ms=INGEST_IDEMPOTENCY_WINDOW.read(env)),
            serving_url=SERVING_URL.read(env),
            monitor=MonitorSettings(horizon_ms=DRIFT_HORIZON.read(env),
                                    webhook_url=DRIFT_WEBHOOK_URL.read(env)),
            backfill=BackfillSettings(staging=BACKFILL_STAGING.read(env)),
        )

    def services_env(self) -> dict[str, str]:
        """The services' addresses as environment variables, for child processes."""
        values = {DATABASE_URL.name: self.database_url, REDIS_URL.name: self.redis_url,
                  KAFKA_BOOTSTRAP.name: self.kafka_bootstrap, FLINK_URL.name: self.flink_url,
                  WAREHOUSE.name: self.warehouse, REGISTRY_URL.name: self.registry.url,
                  INGEST_URL.name: self.ingest.url, SERVING_URL.name: self.serving_url}
        return {name: value for name, value in values.items() if value}

    def require_database_url(self) -> str:
        return _required(self.database_url, DATABASE_URL, "point it at the registry's "
                         "PostgreSQL, e.g. postgresql+psycopg://user@127.0.0.1:5432/fp "
                         "(or run `fp up`, which starts one)")

    def require_redis_url(self) -> str:
        return _required(self.redis_url, REDIS_URL, _NOT_SET_HINT)

    def require_kafka_bootstrap(self) -> str:
        return _required(self.kafka_bootstrap, KAFKA_BOOTSTRAP, _NOT_SET_HINT)

    def require_flink_url(self) -> str:
        return _required(self.flink_url, FLINK_URL, _NOT_SET_HINT)

    def require_warehouse(self) -> str:
        return _required(self.warehouse, WAREHOUSE, _NOT_SET_HINT)


def _required(value: str | None, variable: Variable[str | None], hint: str) -> str:
    if value is None:
        raise ConfigurationError(f"{variable.name} is not set: {hint}")
    return value
