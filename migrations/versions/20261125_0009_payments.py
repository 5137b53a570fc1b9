"""payments: provider event inbox, payments, credit ledger, crypto rates; renewal and grace columns

Revision ID: 0009_payments
Revises: 0008_direct_multipart
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_payments"
down_revision: str | None = "0008_direct_multipart"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)
LIVE_INVOICE = "period_start IS NOT NULL AND status IN ('PENDING', 'FAILED', 'PAID')"


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete="CASCADE"
    )


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("billing_hold", sa.String(20), nullable=True))
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("auto_renew_from_credits", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("grace_ends_at", TS, nullable=True))
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="subscription"))
        batch.add_column(sa.Column("period_start", TS, nullable=True))
        batch.add_column(sa.Column("period_end", TS, nullable=True))
        batch.add_column(sa.Column("refunded_cents", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_index(
        "uq_invoices_subscription_period",
        "invoices",
        ["subscription_id", "period_start"],
        unique=True,
        postgresql_where=sa.text(LIVE_INVOICE),
        sqlite_where=sa.text(LIVE_INVOICE),
    )
    op.create_table(
        "payment_events",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("processed_at", TS, nullable=True),
        sa.Column("outcome", sa.String(40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_events")),
        sa.UniqueConstraint("provider", "event_id", name="uq_payment_events_provider_event_id"),
    )
    op.create_index("ix_payment_events_received_at", "payment_events", ["received_at"])
    op.create_table(
        "payments",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("invoice_id", sa.String(26), nullable=True),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("received_cents", sa.BigInteger(), nullable=True),
        sa.Column("credited_cents", sa.BigInteger(), nullable=False),
        sa.Column("refunded_cents", sa.BigInteger(), nullable=False),
        sa.Column("checkout_ref", sa.String(255), nullable=True),
        sa.Column("provider_payment_id", sa.String(255), nullable=True),
        sa.Column("asset", sa.String(8), nullable=True),
        sa.Column("asset_amount", sa.String(40), nullable=True),
        sa.Column("rate", sa.String(40), nullable=True),
        sa.Column("tx_hash", sa.String(128), nullable=True),
        sa.Column("from_address", sa.String(128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(26), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        _user_fk("payments"),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_payments_invoice_id_invoices"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("provider", "provider_payment_id", name="uq_payments_provider_payment_id"),
        sa.UniqueConstraint("tx_hash", name="uq_payments_tx_hash"),
    )
    op.create_index("ix_payments_user_id_id", "payments", ["user_id", "id"])
    op.create_index("ix_payments_status_id", "payments", ["status", "id"])
    op.create_index("ix_payments_invoice_id", "payments", ["invoice_id"])
    op.create_index("ix_payments_checkout_ref", "payments", ["provider", "checkout_ref"])
    op.create_table(
        "credit_entries",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(255), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(26), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        _user_fk("credit_entries"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_entries")),
        sa.UniqueConstraint("idempotency_key", name="uq_credit_entries_idempotency_key"),
    )
    op.create_index("ix_credit_entries_user_id_id", "credit_entries", ["user_id", "id"])
    op.create_table(
        "credit_accounts",
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance_cents", sa.BigInteger(), nullable=False),
        _user_fk("credit_accounts"),
        sa.PrimaryKeyConstraint("user_id", "currency", name=op.f("pk_credit_accounts")),
    )
    op.create_table(
        "crypto_rates",
        sa.Column("asset", sa.String(8), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rate", sa.String(40), nullable=False),
        sa.Column("set_by", sa.String(26), nullable=True),
        sa.Column("set_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("asset", name=op.f("pk_crypto_rates")),
    )


def downgrade() -> None:
    op.drop_table("crypto_rates")
    op.drop_table("credit_accounts")
    op.drop_index("ix_credit_entries_user_id_id", table_name="credit_entries")
    op.drop_table("credit_entries")
    for name in (
        "ix_payments_checkout_ref",
        "ix_payments_invoice_id",
        "ix_payments_status_id",
        "ix_payments_user_id_id",
    ):
        op.drop_index(name, table_name="payments")
    op.drop_table("payments")
    op.drop_index("ix_payment_events_received_at", table_name="payment_events")
    op.drop_table("payment_events")
    op.drop_index("uq_invoices_subscription_period", table_name="invoices")
    with op.batch_alter_table("invoices") as batch:
        for column in ("refunded_cents", "period_end", "period_start", "kind"):
            batch.drop_column(column)
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("grace_ends_at")
        batch.drop_column("auto_renew_from_credits")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("billing_hold")
