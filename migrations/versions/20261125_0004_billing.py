"""tiers for sale, tier requests, subscriptions, invoices

Revision ID: 0004_billing
Revises: 0003_storage
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004_billing"
down_revision: str | None = "0003_storage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
GIB = 1024**3
MIB = 1024**2
SEED = [
    # id, name, description, storage GiB, objects, max object MiB, price cents, period, trial days, public
    (
        "tier_starter",
        "Starter",
        "50 GB and 50,000 files for small projects.",
        50,
        50_000,
        5 * 1024,
        500,
        "monthly",
        0,
        True,
    ),
    ("tier_pro", "Pro", "500 GB and 500,000 files, 14 days free.", 500, 500_000, None, 2500, "monthly", 14, True),
    ("tier_business", "Business", "5 TB, by agreement.", 5 * 1024, 5_000_000, None, 240_000, "yearly", 0, False),
]


def upgrade() -> None:
    op.create_index(
        "uq_tiers_one_default",
        "tiers",
        ["is_default"],
        unique=True,
        postgresql_where=sa.text("is_default"),
        sqlite_where=sa.text("is_default = 1"),
    )
    op.create_table(
        "tier_requests",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("tier_id", sa.String(26), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.String(26), nullable=True),
        sa.Column("subscription_id", sa.String(26), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tier_requests_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tier_id"], ["tiers.id"], name=op.f("fk_tier_requests_tier_id_tiers"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_requests")),
    )
    op.create_index("ix_tier_requests_user_id_created_at", "tier_requests", ["user_id", "created_at"])
    op.create_index(
        "uq_tier_requests_one_pending",
        "tier_requests",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'PENDING'"),
        sqlite_where=sa.text("status = 'PENDING'"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("tier_id", sa.String(26), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("provider", sa.String(20), nullable=True),
        sa.Column("current_period_start", TS, nullable=True),
        sa.Column("current_period_end", TS, nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("scheduled_tier_id", sa.String(26), nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_subscriptions_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tier_id"], ["tiers.id"], name=op.f("fk_subscriptions_tier_id_tiers"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["scheduled_tier_id"],
            ["tiers.id"],
            name=op.f("fk_subscriptions_scheduled_tier_id_tiers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    op.create_index("ix_subscriptions_user_id", "subscriptions", ["user_id"])
    op.create_index(
        "uq_subscriptions_one_current",
        "subscriptions",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("is_current"),
        sqlite_where=sa.text("is_current = 1"),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("subscription_id", sa.String(26), nullable=True),
        sa.Column("tier_id", sa.String(26), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("paid_at", TS, nullable=True),
        sa.Column("provider", sa.String(20), nullable=True),
        sa.Column("provider_ref", sa.String(255), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_invoices_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_invoices_subscription_id_subscriptions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(["tier_id"], ["tiers.id"], name=op.f("fk_invoices_tier_id_tiers"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
    )
    op.create_index("ix_invoices_user_id_created_at", "invoices", ["user_id", "created_at"])
    op.create_index("ix_invoices_status", "invoices", ["status"])

    now = datetime.now(UTC)
    tiers = sa.table(
        "tiers",
        *(
            sa.column(c)
            for c in (
                "id",
                "name",
                "description",
                "storage_bytes",
                "max_objects",
                "max_object_size_bytes",
                "price_cents",
                "currency",
                "billing_period",
                "trial_days",
                "is_public",
                "is_default",
                "is_archived",
                "created_at",
                "updated_at",
            )
        ),
    )
    op.bulk_insert(
        tiers,
        [
            {
                "id": tid,
                "name": name,
                "description": desc,
                "storage_bytes": gib * GIB,
                "max_objects": objects,
                "max_object_size_bytes": mib * MIB if mib else None,
                "price_cents": price,
                "currency": "USD",
                "billing_period": period,
                "trial_days": trial,
                "is_public": public,
                "is_default": False,
                "is_archived": False,
                "created_at": now,
                "updated_at": now,
            }
            for tid, name, desc, gib, objects, mib, price, period, trial, public in SEED
        ],
    )
    # Every existing account gets the subscription its current tier implies (the quota follows it from now on).
    op.execute(
        sa.text(
            "INSERT INTO subscriptions (id, user_id, tier_id, status, is_current, provider, cancel_at_period_end, "
            "created_at, updated_at) SELECT 'sub_' || id, id, tier_id, 'ACTIVE', :t, 'manual', :f, :now, :now "
            "FROM users WHERE tier_id IS NOT NULL"
        ).bindparams(t=True, f=False, now=now)
    )


def downgrade() -> None:
    op.drop_table("invoices")
    op.drop_index("uq_subscriptions_one_current", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("uq_tier_requests_one_pending", table_name="tier_requests")
    op.drop_table("tier_requests")
    op.execute("DELETE FROM tiers WHERE id IN ('tier_starter', 'tier_pro', 'tier_business')")
    op.drop_index("uq_tiers_one_default", table_name="tiers")
