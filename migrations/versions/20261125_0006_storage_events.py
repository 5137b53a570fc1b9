"""S3 event notifications, stored once each

Revision ID: 0006_storage_events
Revises: 0005_direct_uploads_reconcile
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_storage_events"
down_revision: str | None = "0005_direct_uploads_reconcile"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "storage_events",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("event_name", sa.String(64), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=True),
        sa.Column("object_key", sa.Text(), nullable=True),
        sa.Column("user_id", sa.String(26), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_events")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_storage_events_dedupe_key")),
    )
    op.create_index("ix_storage_events_received_at", "storage_events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_storage_events_received_at", table_name="storage_events")
    op.drop_table("storage_events")
