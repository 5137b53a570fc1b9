"""SQL for the credit ledger: append-only entries (unique idempotency key) and the running total per user and
currency. A debit is one conditional UPDATE; an entry is an insert that does nothing when its key is used."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.db import dialect_insert
from pockity.kit.ids import new_id
from pockity.kit.time import utcnow
from pockity.models import CreditAccount, CreditEntry


async def insert_entry(session: AsyncSession, entry: CreditEntry) -> bool:
    """Append a ledger line unless its idempotency key is already used; True when it was appended."""
    values = {c.key: getattr(entry, c.key) for c in CreditEntry.__table__.columns}
    values["id"] = values["id"] or new_id()
    values["created_at"] = values["created_at"] or utcnow()
    stmt = (
        dialect_insert(session)(CreditEntry).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
    )
    return (await session.execute(stmt)).rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def add_to_account(session: AsyncSession, user_id: str, currency: str, amount: int) -> None:
    """Add (or, negative, take) an amount unconditionally: one upsert."""
    stmt = dialect_insert(session)(CreditAccount).values(user_id=user_id, currency=currency, balance_cents=amount)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id", "currency"],
        set_={"balance_cents": CreditAccount.balance_cents + stmt.excluded.balance_cents},
    )
    await session.execute(stmt)


async def take_from_account(session: AsyncSession, user_id: str, currency: str, amount: int) -> bool:
    """Take `amount` only if the balance covers it: the check and the change are one statement."""
    stmt = (
        update(CreditAccount)
        .where(
            CreditAccount.user_id == user_id,
            CreditAccount.currency == currency,
            CreditAccount.balance_cents >= amount,
        )
        .values(balance_cents=CreditAccount.balance_cents - amount)
    )
    return (await session.execute(stmt)).rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def ledger_balances(session: AsyncSession, user_id: str) -> dict[str, int]:
    stmt = (
        select(CreditEntry.currency, func.coalesce(func.sum(CreditEntry.amount_cents), 0))
        .where(CreditEntry.user_id == user_id)
        .group_by(CreditEntry.currency)
    )
    return {currency: int(total) for currency, total in (await session.execute(stmt)).all()}


async def ledger_balance(session: AsyncSession, user_id: str, currency: str) -> int:
    stmt = select(func.coalesce(func.sum(CreditEntry.amount_cents), 0)).where(
        CreditEntry.user_id == user_id, CreditEntry.currency == currency
    )
    return int(await session.scalar(stmt) or 0)


async def list_entries(session: AsyncSession, user_id: str, after_id: str | None, limit: int) -> Sequence[CreditEntry]:
    stmt = select(CreditEntry).where(CreditEntry.user_id == user_id).order_by(CreditEntry.id.desc()).limit(limit)
    if after_id:
        stmt = stmt.where(CreditEntry.id < after_id)
    return (await session.scalars(stmt)).all()
