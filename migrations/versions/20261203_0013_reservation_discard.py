"""storage_reservations.discard: what an unacknowledged upload of a new name left under its key is deleted

An upload of a name that had no file writes straight to the file's key. If it never reached its 2xx (the
process was killed, S3 or PostgreSQL failed with the outcome unknown), its reservation is left; `discard`
tells the expiry job to delete whatever landed under that key instead of adopting it, so nothing the client
was told failed is ever counted. Replacements keep `false`: their key holds the live file, whose row follows S3.

Revision ID: 0013_reservation_discard
Revises: 0012_fair_sharing
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_reservation_discard"
down_revision: str | None = "0012_fair_sharing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("storage_reservations") as batch:
        batch.add_column(sa.Column("discard", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("storage_reservations") as batch:
        batch.drop_column("discard")
