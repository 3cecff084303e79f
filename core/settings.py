"""Configuration from the environment (docs/reference.md, "Configuration").

Command-line flags override it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from core.errors import ConfigurationError

DEFAULT_REGISTRY_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    redis_url: str | None
    kafka_bootstrap: str | None
    flink_url: str | None
    registry_url: str
    api_tokens: tuple[str, ...]
    webhook_secret: str | None
    git_branch: str
    features_path: str
    warehouse: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("FP_DATABASE_URL") or None,
            redis_url=env.get("FP_REDIS_URL") or None,
            kafka_bootstrap=env.get("FP_KAFKA_BOOTSTRAP") or None,
            flink_url=env.get("FP_FLINK_URL") or None,
            registry_url=(env.get("FP_REGISTRY_URL") or DEFAULT_REGISTRY_URL).rstrip("/"),
            api_tokens=tuple(t.strip() for t in env.get("FP_API_TOKENS", "").split(",")
                             if t.strip()),
            webhook_secret=env.get("FP_WEBHOOK_SECRET") or None,
            git_branch=env.get("FP_GIT_BRANCH") or "main",
            features_path=env.get("FP_FEATURES_PATH") or "features",
            warehouse=env.get("FP_WAREHOUSE") or None,
        )

    def with_value(self, name: str, value: str) -> Settings:
        """A copy with one setting (a field name, e.g. ``redis_url``) replaced."""
        return replace(self, **{name: value})  # type: ignore[arg-type]

    def require(self, name: str) -> str:
        """The setting ``name`` (a field of this class), or a ConfigurationError naming it."""
        value = getattr(self, name)
        if not value:
            raise ConfigurationError(f"FP_{name.upper()} is not set (or run `fp up`, which "
                                     "starts the services it finds missing)")
        return str(value)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigurationError(
                "FP_DATABASE_URL is not set: point it at the registry's PostgreSQL, e.g. "
                "postgresql+psycopg://user@127.0.0.1:5432/fp (or run `fp up`, which starts one)")
        if not self.database_url.startswith("postgresql"):
            raise ConfigurationError(
                f"FP_DATABASE_URL must be a PostgreSQL SQLAlchemy URL "
                f"(postgresql+psycopg://...), got scheme {self.database_url.split(':')[0]!r}")
        return self.database_url
