"""Git webhooks: the commit last applied per repository and branch, and the retention's index.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fp_webhook_applied_commits",
        sa.Column("repository", sa.Text, nullable=False),
        sa.Column("ref", sa.Text, nullable=False),
        sa.Column("commit", sa.Text, nullable=False),
        sa.Column("delivery_id", sa.Text, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repository", "ref", name="fp_webhook_applied_commits_pkey"),
    )
    op.create_index("fp_webhook_deliveries_payload_kept", "fp_webhook_deliveries",
                    ["finished_at"], postgresql_where=sa.text("octet_length(payload) > 0"))


def downgrade() -> None:
    op.drop_index("fp_webhook_deliveries_payload_kept", table_name="fp_webhook_deliveries")
    op.drop_table("fp_webhook_applied_commits")
