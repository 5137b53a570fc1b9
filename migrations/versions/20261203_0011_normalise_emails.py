"""normalise stored emails (NFKC, then lower case) so look-alikes cannot hold a second account

Rows written before the rule may hold a full-width or otherwise compatibility-encoded address that is now
the same account as another row. Such collisions are refused, not merged: an operator must decide which
account keeps the address (rename the other, e.g. `UPDATE users SET email = 'old+1@…' WHERE id = …`) and run
the migration again. Nothing is changed unless every row can be normalised.

Revision ID: 0011_normalise_emails
Revises: 0010_upload_holds
Create Date: 2026-12-03
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision: str = "0011_normalise_emails"
down_revision: str | None = "0010_upload_holds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def normalise(value: str) -> str:
    """A frozen copy of pockity.users.schemas.normalise_email as of this migration."""
    value = unicodedata.normalize("NFKC", value).strip()
    try:
        value = validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        pass
    return unicodedata.normalize("NFKC", value.lower())


class EmailCollision(RuntimeError):
    pass


def upgrade() -> None:
    bind = op.get_bind()
    users = sa.table("users", sa.column("id", sa.String), sa.column("email", sa.String))
    by_target: dict[str, list[tuple[str, str]]] = {}
    for user_id, email in bind.execute(sa.select(users.c.id, users.c.email).order_by(users.c.id)):
        by_target.setdefault(normalise(email), []).append((user_id, email))
    clashes = {target: rows for target, rows in by_target.items() if len(rows) > 1}
    if clashes:
        lines = [
            f"  {target!r}: " + ", ".join(f"{user_id} ({email!r})" for user_id, email in rows)
            for target, rows in sorted(clashes.items())
        ]
        raise EmailCollision(
            f"Cannot normalise emails: {len(clashes)} address(es) are held by more than one account. Decide "
            "which account keeps each address, give the others a different email, then migrate again:\n"
            + "\n".join(lines)
        )
    # No update can hit the unique index: normalise() is idempotent, so a row's target is never another
    # row's current value unless both have the same target, which was refused above.
    for target, [(user_id, email)] in by_target.items():
        if target != email:
            bind.execute(sa.update(users).where(users.c.id == user_id).values(email=target))


def downgrade() -> None:
    # The previous spellings are not kept; the normalised ones are valid under the old rule too.
    pass
