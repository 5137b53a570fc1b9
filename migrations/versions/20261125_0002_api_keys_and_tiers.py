"""api keys, and the tier table they can be linked to (with a default free tier)

Revision ID: 0002_api_keys_and_tiers
Revises: 0001_foundation
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002_api_keys_and_tiers"
down_revision: str | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
GIB = 1024**3


def upgrade() -> None:
    tiers = op.create_table(
        "tiers",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("storage_bytes", sa.BigInteger(), nullable=False),
        sa.Column("max_objects", sa.BigInteger(), nullable=False),
        sa.Column("max_object_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("price_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("billing_period", sa.String(16), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("is_archived", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tiers")),
        sa.UniqueConstraint("name", name=op.f("uq_tiers_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("access_key_id", sa.String(20), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sa.String(16), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(1024), nullable=True),
        sa.Column("tier_id", sa.String(26), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("last_used_ip", sa.String(64), nullable=True),
        sa.Column("request_count", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["tier_id"], ["tiers.id"], name=op.f("fk_api_keys_tier_id_tiers"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("access_key_id", name=op.f("uq_api_keys_access_key_id")),
    )
    op.create_index("ix_api_keys_user_id_created_at", "api_keys", ["user_id", "created_at"])
    now = datetime.now(UTC)
    op.bulk_insert(
        tiers,
        [
            {
                "id": "tier_free",
                "name": "Free",
                "description": "1 GB and 1,000 objects, free.",
                "storage_bytes": GIB,
                "max_objects": 1000,
                "max_object_size_bytes": None,
                "price_cents": 0,
                "currency": "USD",
                "billing_period": "monthly",
                "trial_days": 0,
                "is_public": True,
                "is_default": True,
                "is_archived": False,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_api_keys_user_id_created_at", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("tiers")
