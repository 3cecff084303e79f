"""Git webhook inbox: one row per received delivery.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fp_webhook_deliveries",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("delivery_id", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("repository", sa.Text),
        sa.Column("ref", sa.Text),
        sa.Column("commit", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("changes", JSONB),
        sa.Column("missing_from_repository", JSONB),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("delivery_id", "provider", name="fp_webhook_deliveries_delivery_key"),
        sa.CheckConstraint("status IN ('queued', 'applied', 'skipped', 'failed')",
                           name="fp_webhook_deliveries_status_check"),
    )
    op.create_index("fp_webhook_deliveries_queued", "fp_webhook_deliveries", ["id"],
                    postgresql_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    op.drop_index("fp_webhook_deliveries_queued", table_name="fp_webhook_deliveries")
    op.drop_table("fp_webhook_deliveries")
