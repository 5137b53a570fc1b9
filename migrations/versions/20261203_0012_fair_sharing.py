"""fair sharing: per-tier request rate and concurrent uploads, shared token buckets, upload slots

Tiers get nullable limits (None: the server's defaults). `rate_buckets` holds each subject's shared token
bucket (a theoretical arrival time) that every server process leases requests from. Reservations say whether
they hold an upload slot and the usage counters count the slots held, so the slot is taken in the same
conditional UPDATE as the quota.
Reservations already open when this runs hold no slot (0) and the counters start at 0, so nothing drifts.

Revision ID: 0012_fair_sharing
Revises: 0011_normalise_emails
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_fair_sharing"
down_revision: str | None = "0011_normalise_emails"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tiers") as batch:
        batch.add_column(sa.Column("requests_per_second", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("request_burst", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_concurrent_uploads", sa.Integer(), nullable=True))
    with op.batch_alter_table("usage_counters") as batch:
        batch.add_column(sa.Column("uploads_open", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("storage_reservations") as batch:
        batch.add_column(sa.Column("uploads", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "rate_buckets",
        sa.Column("subject", sa.String(40), nullable=False),
        sa.Column("tat_us", sa.BigInteger(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_rate_buckets")),
    )
    op.create_index("ix_rate_buckets_tat_us", "rate_buckets", ["tat_us"])


def downgrade() -> None:
    op.drop_index("ix_rate_buckets_tat_us", "rate_buckets")
    op.drop_table("rate_buckets")
    with op.batch_alter_table("storage_reservations") as batch:
        batch.drop_column("uploads")
    with op.batch_alter_table("usage_counters") as batch:
        batch.drop_column("uploads_open")
    with op.batch_alter_table("tiers") as batch:
        batch.drop_column("max_concurrent_uploads")
        batch.drop_column("request_burst")
        batch.drop_column("requests_per_second")
