"""direct (presigned) uploads on reservations; reconciliation reports

Revision ID: 0005_direct_uploads_reconcile
Revises: 0004_billing
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_direct_uploads_reconcile"
down_revision: str | None = "0004_billing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("storage_reservations") as batch:
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="stream"))
        batch.add_column(sa.Column("declared_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("content_type", sa.String(255), nullable=True))
    op.create_table(
        "reconciliation_reports",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("scope_user_id", sa.String(26), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("objects_seen", sa.BigInteger(), nullable=False),
        sa.Column("adopted", sa.BigInteger(), nullable=False),
        sa.Column("removed", sa.BigInteger(), nullable=False),
        sa.Column("corrected", sa.BigInteger(), nullable=False),
        sa.Column("drift", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_reports")),
    )
    op.create_index("ix_reconciliation_reports_started_at", "reconciliation_reports", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_reconciliation_reports_started_at", table_name="reconciliation_reports")
    op.drop_table("reconciliation_reports")
    with op.batch_alter_table("storage_reservations") as batch:
        batch.drop_column("content_type")
        batch.drop_column("declared_size")
        batch.drop_column("kind")
