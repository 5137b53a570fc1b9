"""SQL for payments, the provider event inbox and crypto rates. State changes that must
happen once are conditional UPDATEs or inserts guarded by a unique key."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.db import dialect_insert
from pockity.kit.ids import new_id
from pockity.kit.time import utcnow
from pockity.models import CryptoRate, Payment, PaymentEvent, PaymentStatus

# --- the inbox -------------------------------------------------------------------------------------------


async def store_event(session: AsyncSession, provider: str, event_id: str, event_type: str, payload: str) -> None:
    """Insert the event unless (provider, event id) is already stored."""
    stmt = dialect_insert(session)(PaymentEvent).values(
        id=new_id(),
        provider=provider,
        event_id=event_id,
        event_type=event_type,
        payload=payload,
        received_at=utcnow(),
        attempts=0,
    )
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["provider", "event_id"]))


async def lock_event(session: AsyncSession, provider: str, event_id: str) -> PaymentEvent | None:
    """The stored event, row-locked so one delivery at a time processes it."""
    stmt = (
        select(PaymentEvent)
        .where(PaymentEvent.provider == provider, PaymentEvent.event_id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).first()


async def record_event_error(session: AsyncSession, event_row_id: str, error: str) -> None:
    await session.execute(
        update(PaymentEvent)
        .where(PaymentEvent.id == event_row_id)
        .values(error=error[:4000], attempts=PaymentEvent.attempts + 1)
    )


async def list_events(
    session: AsyncSession, *, provider: str | None, unprocessed: bool, after_id: str | None, limit: int
) -> Sequence[PaymentEvent]:
    stmt = select(PaymentEvent).order_by(PaymentEvent.id.desc()).limit(limit)
    if provider:
        stmt = stmt.where(PaymentEvent.provider == provider)
    if unprocessed:
        stmt = stmt.where(PaymentEvent.processed_at.is_(None))
    if after_id:
        stmt = stmt.where(PaymentEvent.id < after_id)
    return (await session.scalars(stmt)).all()


# --- payments --------------------------------------------------------------------------------------------


def _owned_payments(user_id: str) -> Select[Payment]:
    return select(Payment).where(Payment.user_id == user_id)


def add(session: AsyncSession, row: Payment) -> None:
    session.add(row)


async def get_payment(session: AsyncSession, payment_id: str, *, lock: bool = False) -> Payment | None:
    stmt = select(Payment).where(Payment.id == payment_id).execution_options(populate_existing=True)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def payment_by_provider_id(session: AsyncSession, provider: str, provider_payment_id: str) -> Payment | None:
    stmt = (
        select(Payment)
        .where(Payment.provider == provider, Payment.provider_payment_id == provider_payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).first()


async def payment_by_checkout(session: AsyncSession, provider: str, checkout_ref: str) -> Payment | None:
    stmt = (
        select(Payment)
        .where(Payment.provider == provider, Payment.checkout_ref == checkout_ref)
        .order_by(Payment.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).first()


async def received_for_invoice(session: AsyncSession, invoice_id: str) -> int:
    """What confirmed payments for an invoice brought in, in all."""
    stmt = select(func.coalesce(func.sum(Payment.received_cents), 0)).where(
        Payment.invoice_id == invoice_id, Payment.status == "CONFIRMED"
    )
    return int(await session.scalar(stmt) or 0)


async def tx_hash_exists(session: AsyncSession, tx_hash: str) -> bool:
    return (await session.scalar(select(Payment.id).where(Payment.tx_hash == tx_hash))) is not None


async def transition_payment(
    session: AsyncSession, payment_id: str, from_statuses: Sequence[str], **values: object
) -> bool:
    """Change a payment's status exactly once (confirming twice, or confirming a rejected one, does nothing)."""
    stmt = (
        update(Payment)
        .where(Payment.id == payment_id, Payment.status.in_(from_statuses))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def list_own_payments(session: AsyncSession, user_id: str, limit: int) -> Sequence[Payment]:
    return (await session.scalars(_owned_payments(user_id).order_by(Payment.id.desc()).limit(limit))).all()


async def list_payments(
    session: AsyncSession,
    *,
    status: str | None,
    provider: str | None,
    user_id: str | None,
    after_id: str | None,
    limit: int,
) -> Sequence[Payment]:
    stmt = select(Payment).order_by(Payment.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Payment.status == status)
    if provider:
        stmt = stmt.where(Payment.provider == provider)
    if user_id:
        stmt = stmt.where(Payment.user_id == user_id)
    if after_id:
        stmt = stmt.where(Payment.id < after_id)
    return (await session.scalars(stmt)).all()


# --- crypto rates ----------------------------------------------------------------------------------------


async def rates(session: AsyncSession) -> Sequence[CryptoRate]:
    return (await session.scalars(select(CryptoRate).order_by(CryptoRate.asset))).all()


async def upsert_rate(
    session: AsyncSession,
    asset: str,
    currency: str,
    rate: str,
    set_by: str | None,
    set_at: datetime,
    expires_at: datetime,
) -> None:
    values = {
        "asset": asset,
        "currency": currency,
        "rate": rate,
        "set_by": set_by,
        "set_at": set_at,
        "expires_at": expires_at,
    }
    stmt = dialect_insert(session)(CryptoRate).values(**values)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["asset"], set_={k: v for k, v in values.items() if k != "asset"})
    )


async def received_between(session: AsyncSession, start: datetime, end: datetime) -> dict[str, int]:
    """Money received (net of what was refunded of it) by payments confirmed in [start, end), per currency."""
    received = func.coalesce(func.sum(Payment.received_cents - Payment.refunded_cents), 0)
    stmt = (
        select(Payment.currency, received)
        .where(
            Payment.status.in_([PaymentStatus.CONFIRMED.value, PaymentStatus.REFUNDED.value]),
            Payment.resolved_at >= start,
            Payment.resolved_at < end,
        )
        .group_by(Payment.currency)
        .order_by(Payment.currency)
    )
    return {currency: int(cents or 0) for currency, cents in (await session.execute(stmt)).all()}
