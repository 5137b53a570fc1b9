"""direct multipart uploads: the backend's upload id on the reservation

Revision ID: 0008_direct_multipart
Revises: 0007_usage_history
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_direct_multipart"
down_revision: str | None = "0007_usage_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("storage_reservations") as batch:
        batch.add_column(sa.Column("backend_upload_id", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("storage_reservations") as batch:
        batch.drop_column("backend_upload_id")
