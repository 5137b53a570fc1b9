"""storage: objects, usage counters, reservations, job schedule; users get a tier

Revision ID: 0003_storage
Revises: 0002_api_keys_and_tiers
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_storage"
down_revision: str | None = "0002_api_keys_and_tiers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
NAME = sa.String(1024).with_variant(sa.String(1024, collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("tier_id", sa.String(26), nullable=True))
        batch.create_foreign_key(op.f("fk_users_tier_id_tiers"), "tiers", ["tier_id"], ["id"], ondelete="RESTRICT")
    # Existing accounts start on the default tier, as new ones do.
    op.execute("UPDATE users SET tier_id = (SELECT id FROM tiers WHERE is_default LIMIT 1)")
    op.create_table(
        "storage_objects",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(128), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("api_key_id", sa.String(26), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_storage_objects_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_objects")),
        sa.UniqueConstraint("user_id", "name", name="uq_storage_objects_user_id_name"),
    )
    op.create_table(
        "usage_counters",
        sa.Column("scope", sa.String(40), nullable=False),
        sa.Column("bytes_used", sa.BigInteger(), nullable=False),
        sa.Column("object_count", sa.BigInteger(), nullable=False),
        sa.Column("bytes_reserved", sa.BigInteger(), nullable=False),
        sa.Column("objects_reserved", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_usage_counters")),
    )
    op.create_table(
        "storage_reservations",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("api_key_id", sa.String(26), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("objects", sa.Integer(), nullable=False),
        sa.Column("key_bytes", sa.BigInteger(), nullable=False),
        sa.Column("key_objects", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_storage_reservations_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_reservations")),
        sa.UniqueConstraint("user_id", "name", name="uq_storage_reservations_user_id_name"),
    )
    op.create_index("ix_storage_reservations_expires_at", "storage_reservations", ["expires_at"])
    op.create_table(
        "job_runs",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("next_run_at", TS, nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.Column("locked_by", sa.String(64), nullable=True),
        sa.Column("last_started_at", TS, nullable=True),
        sa.Column("last_finished_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_runs")),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
    op.drop_index("ix_storage_reservations_expires_at", table_name="storage_reservations")
    op.drop_table("storage_reservations")
    op.drop_table("usage_counters")
    op.drop_table("storage_objects")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("fk_users_tier_id_tiers"), type_="foreignkey")
        batch.drop_column("tier_id")
