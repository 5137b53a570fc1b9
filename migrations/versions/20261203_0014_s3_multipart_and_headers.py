"""S3 multipart uploads and stored object headers

- storage_objects.headers: the response headers an S3 client stored with the object (`x-amz-meta-*`,
  Content-Encoding, Content-Disposition, Content-Language, Cache-Control, Expires), returned on GET and HEAD.
- storage_objects.part_sizes: a multipart object's part layout as runs of [size, count], so GetObject and
  HeadObject can answer `partNumber`.
- storage_reservations.target and .headers: an S3 multipart upload in progress is a reservation of kind
  `parts` that holds its parts' bytes; it names no file (it locks nothing: S3 lets several uploads of one key
  run at once), so the key it will complete to is `target`, and the headers given at creation wait here.

Revision ID: 0014_s3_multipart_and_headers
Revises: 0013_reservation_discard
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_s3_multipart_and_headers"
down_revision: str | None = "0013_reservation_discard"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = sa.String(1024).with_variant(sa.String(1024, collation="C"), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("storage_objects") as batch:
        batch.add_column(sa.Column("headers", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("part_sizes", sa.JSON(), nullable=True))
    with op.batch_alter_table("storage_reservations") as batch:
        batch.add_column(sa.Column("target", _NAME, nullable=True))
        batch.add_column(sa.Column("headers", sa.JSON(), nullable=True))
        batch.create_index("ix_storage_reservations_user_id_target", ["user_id", "target"])


def downgrade() -> None:
    with op.batch_alter_table("storage_reservations") as batch:
        batch.drop_index("ix_storage_reservations_user_id_target")
        batch.drop_column("headers")
        batch.drop_column("target")
    with op.batch_alter_table("storage_objects") as batch:
        batch.drop_column("part_sizes")
        batch.drop_column("headers")
