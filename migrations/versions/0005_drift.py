"""Drift monitoring: the jobs' statistics per monitoring window, and the latest readings.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fp_drift_windows",
        sa.Column("view", sa.Text, nullable=False),
        sa.Column("namespace", sa.Text, nullable=False),
        sa.Column("feature", sa.Text, nullable=False),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False),
        sa.Column("parts", JSONB, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("view", "namespace", "window_end", "feature",
                                name="fp_drift_windows_pkey"),
    )
    op.create_index("fp_drift_windows_window_end", "fp_drift_windows", ["window_end"])
    op.create_table(
        "fp_drift_readings",
        sa.Column("view", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("feature", sa.Text, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("severity", sa.Text, nullable=False),
        sa.Column("alert_at", sa.Float, nullable=False),
        sa.Column("namespace", sa.Text, nullable=False),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("horizon_start", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("view", "version", "feature", "metric",
                                name="fp_drift_readings_pkey"),
    )


def downgrade() -> None:
    op.drop_table("fp_drift_readings")
    op.drop_index("fp_drift_windows_window_end", table_name="fp_drift_windows")
    op.drop_table("fp_drift_windows")
