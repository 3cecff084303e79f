"""The registry's tables (SQLAlchemy Core); Alembic migrations create exactly these."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

events = Table(
    "fp_events",
    metadata,
    Column("position", BigInteger, Identity(always=True), primary_key=True),
    Column("stream", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("stream", "version", name="fp_events_stream_version_key"),
)

# Projections: current state derived from the events, written in the same transaction.
definitions = Table(
    "fp_definitions",
    metadata,
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("latest_version", Integer, nullable=False),
    Column("active_version", Integer),
    Column("spec", JSONB, nullable=False),
    Column("spec_hash", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("kind", "name", name="fp_definitions_pkey"),
)

definition_versions = Table(
    "fp_definition_versions",
    metadata,
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("spec_hash", Text, nullable=False),
    Column("change_class", Text),
    Column("provenance", JSONB, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False),
    PrimaryKeyConstraint("kind", "name", "version", name="fp_definition_versions_pkey"),
)

# The git webhook inbox (registry/webhooks): one row per delivery, stored before it is answered.
webhook_deliveries = Table(
    "fp_webhook_deliveries",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("provider", Text, nullable=False),
    Column("delivery_id", Text, nullable=False),
    Column("event", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("repository", Text),
    Column("ref", Text),
    Column("commit", Text),
    Column("reason", Text),
    Column("error", Text),
    Column("changes", JSONB),
    Column("missing_from_repository", JSONB),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    # delivery_id first: the same index answers GET /v1/webhooks/deliveries/{delivery_id}.
    UniqueConstraint("delivery_id", "provider", name="fp_webhook_deliveries_delivery_key"),
    CheckConstraint("status IN ('queued', 'applied', 'skipped', 'failed')",
                    name="fp_webhook_deliveries_status_check"),
    Index("fp_webhook_deliveries_queued", "id", postgresql_where=text("status = 'queued'")),
    # The retention's search: finished deliveries still holding a payload.
    Index("fp_webhook_deliveries_payload_kept", "finished_at",
          postgresql_where=text("octet_length(payload) > 0")),
)

# The commit last applied from each repository and branch: a push of it or of one of its
# ancestors (a replay, a delivery out of order) is skipped rather than applied again.
webhook_applied_commits = Table(
    "fp_webhook_applied_commits",
    metadata,
    Column("repository", Text, nullable=False),
    Column("ref", Text, nullable=False),
    Column("commit", Text, nullable=False),
    Column("delivery_id", Text, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("repository", "ref", name="fp_webhook_applied_commits_pkey"),
)

deployer_checkpoints = Table(
    "fp_deployer_checkpoints",
    metadata,
    Column("name", Text, primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("state", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Drift monitoring (monitor/): each job's statistics rows of one monitoring window and feature,
# merged by their part key (a replayed row replaces itself), and the latest reading of each
# view version's feature and metric.
drift_windows = Table(
    "fp_drift_windows",
    metadata,
    Column("view", Text, nullable=False),
    Column("namespace", Text, nullable=False),
    Column("feature", Text, nullable=False),
    Column("window_end", BigInteger, nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("parts", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("view", "namespace", "window_end", "feature",
                         name="fp_drift_windows_pkey"),
    Index("fp_drift_windows_window_end", "window_end"),
)

drift_readings = Table(
    "fp_drift_readings",
    metadata,
    Column("view", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("feature", Text, nullable=False),
    Column("metric", Text, nullable=False),
    Column("value", Float, nullable=False),
    Column("severity", Text, nullable=False),
    Column("alert_at", Float, nullable=False),
    Column("namespace", Text, nullable=False),
    Column("window_end", BigInteger, nullable=False),
    Column("horizon_start", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("view", "version", "feature", "metric", name="fp_drift_readings_pkey"),
)
