"""upload holds: a reservation without a name keeps a direct-upload form's bytes reserved until it expires

Revision ID: 0010_upload_holds
Revises: 0009_payments
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_upload_holds"
down_revision: str | None = "0009_payments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = sa.String(1024).with_variant(sa.String(1024, collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("storage_reservations") as batch:
        batch.alter_column("name", existing_type=_NAME, nullable=True)
    # Signed part URLs name the backend's upload id; the local backend's part route looks it up.
    op.create_index("ix_storage_reservations_backend_upload_id", "storage_reservations", ["backend_upload_id"])


def downgrade() -> None:
    op.drop_index("ix_storage_reservations_backend_upload_id", "storage_reservations")
    op.execute("DELETE FROM storage_reservations WHERE name IS NULL")
    with op.batch_alter_table("storage_reservations") as batch:
        batch.alter_column("name", existing_type=_NAME, nullable=False)
