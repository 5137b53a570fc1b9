"""SQL for subscriptions and invoices. Tenant queries start from an owner-scoped statement;
state changes that must happen once are conditional UPDATEs (status = expected)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.models import Invoice, InvoiceStatus, Subscription, SubscriptionStatus, User

LIVE_INVOICE_STATES = [InvoiceStatus.PENDING.value, InvoiceStatus.FAILED.value, InvoiceStatus.PAID.value]


def _owned_invoices(user_id: str) -> Select[Invoice]:
    return select(Invoice).where(Invoice.user_id == user_id)


def _owned_subscriptions(user_id: str) -> Select[Subscription]:
    return select(Subscription).where(Subscription.user_id == user_id)


def add(session: AsyncSession, row: Subscription | Invoice) -> None:
    session.add(row)


# --- subscriptions ---------------------------------------------------------------------------------------


async def current_subscription(session: AsyncSession, user_id: str, *, lock: bool = False) -> Subscription | None:
    stmt = _owned_subscriptions(user_id).where(Subscription.is_current.is_(True))
    if lock:
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def pending_subscriptions(session: AsyncSession, user_id: str) -> Sequence[Subscription]:
    stmt = _owned_subscriptions(user_id).where(
        Subscription.status == SubscriptionStatus.PENDING_PAYMENT.value, Subscription.is_current.is_(False)
    )
    return (await session.scalars(stmt.order_by(Subscription.id.desc()))).all()


async def get_subscription(session: AsyncSession, subscription_id: str) -> Subscription | None:
    return await session.get(Subscription, subscription_id, populate_existing=True)


async def list_subscriptions(
    session: AsyncSession, *, status: str | None, user_id: str | None, after_id: str | None, limit: int
) -> Sequence[Subscription]:
    stmt = select(Subscription).order_by(Subscription.id).limit(limit)
    if status:
        stmt = stmt.where(Subscription.status == status)
    if user_id:
        stmt = stmt.where(Subscription.user_id == user_id)
    if after_id:
        stmt = stmt.where(Subscription.id > after_id)
    return (await session.scalars(stmt)).all()


async def due_period_changes(session: AsyncSession, now: datetime, limit: int) -> Sequence[Subscription]:
    """Current subscriptions whose period has ended with a scheduled downgrade or a cancellation."""
    stmt = (
        select(Subscription)
        .where(
            Subscription.is_current.is_(True),
            Subscription.current_period_end <= now,
            (Subscription.scheduled_tier_id.is_not(None)) | (Subscription.cancel_at_period_end.is_(True)),
        )
        .order_by(Subscription.current_period_end)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def lock_subscription(
    session: AsyncSession, subscription_id: str, *, skip_locked: bool = False
) -> Subscription | None:
    """The subscription, re-read and row-locked: concurrent changes queue here. With `skip_locked`, None when
    another transaction holds it (a second life-cycle runner moves on instead of waiting for the first)."""
    stmt = (
        select(Subscription)
        .where(Subscription.id == subscription_id)
        .with_for_update(skip_locked=skip_locked)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).first()


async def due_lifecycle(session: AsyncSession, now: datetime, notice: timedelta, limit: int) -> Sequence[str]:
    """Current subscriptions with something due: a period (or trial) that has ended, a grace period over, or a
    paid period ending within `notice` whose next invoice has not been issued yet."""
    live_states = [SubscriptionStatus.ACTIVE.value, SubscriptionStatus.TRIALING.value]
    ended = Subscription.status.in_(live_states) & (Subscription.current_period_end <= now)
    overdue = (
        Subscription.status.in_([SubscriptionStatus.PAST_DUE.value, SubscriptionStatus.PENDING_PAYMENT.value])
    ) & (Subscription.grace_ends_at <= now)
    next_invoiced = (
        select(Invoice.id)
        .where(
            Invoice.subscription_id == Subscription.id,
            Invoice.period_start == Subscription.current_period_end,
            Invoice.status.in_(LIVE_INVOICE_STATES),
        )
        .exists()
    )
    ending_soon = (
        (Subscription.status == SubscriptionStatus.ACTIVE.value)
        & (Subscription.current_period_end <= now + notice)
        & Subscription.scheduled_tier_id.is_(None)
        & Subscription.cancel_at_period_end.is_(False)
        & ~next_invoiced
    )
    stmt = (
        select(Subscription.id)
        .where(Subscription.is_current.is_(True), ended | overdue | ending_soon)
        .order_by(Subscription.id)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def set_user_tier(session: AsyncSession, user_id: str, tier_id: str | None) -> None:
    """The quota follows the current subscription: its tier is copied onto the user (read on every upload).
    A newly current subscription is in good standing, so any billing hold is lifted with it."""
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(tier_id=tier_id, billing_hold=None)
        .execution_options(synchronize_session="fetch")
    )


async def set_billing_hold(session: AsyncSession, user_id: str, hold: str | None) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(billing_hold=hold).execution_options(synchronize_session="fetch")
    )


# --- invoices ----------------------------------------------------------------------------------------------


async def list_own_invoices(session: AsyncSession, user_id: str) -> Sequence[Invoice]:
    return (await session.scalars(_owned_invoices(user_id).order_by(Invoice.id.desc()))).all()


async def get_own_invoice(session: AsyncSession, user_id: str, invoice_id: str) -> Invoice | None:
    return (await session.scalars(_owned_invoices(user_id).where(Invoice.id == invoice_id))).first()


async def get_invoice(session: AsyncSession, invoice_id: str) -> Invoice | None:
    return await session.get(Invoice, invoice_id, populate_existing=True)


async def invoices_of_subscription(session: AsyncSession, subscription_id: str, *statuses: str) -> Sequence[Invoice]:
    stmt = select(Invoice).where(Invoice.subscription_id == subscription_id, Invoice.status.in_(statuses))
    return (await session.scalars(stmt.order_by(Invoice.id))).all()


async def live_invoice_for_period(
    session: AsyncSession, subscription_id: str, period_start: datetime
) -> Invoice | None:
    stmt = select(Invoice).where(
        Invoice.subscription_id == subscription_id,
        Invoice.period_start == period_start,
        Invoice.status.in_(LIVE_INVOICE_STATES),
    )
    return (await session.scalars(stmt.execution_options(populate_existing=True))).first()


async def list_invoices(
    session: AsyncSession, *, status: str | None, user_id: str | None, after_id: str | None, limit: int
) -> Sequence[Invoice]:
    stmt = select(Invoice).order_by(Invoice.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Invoice.status == status)
    if user_id:
        stmt = stmt.where(Invoice.user_id == user_id)
    if after_id:
        stmt = stmt.where(Invoice.id < after_id)
    return (await session.scalars(stmt)).all()


async def transition_invoice(
    session: AsyncSession, invoice_id: str, from_statuses: Sequence[str], **values: object
) -> bool:
    """Change an invoice's status exactly once (paying twice, or paying a void invoice, changes nothing)."""
    stmt = (
        update(Invoice)
        .where(Invoice.id == invoice_id, Invoice.status.in_(from_statuses))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def count_invoices(session: AsyncSession, statuses: Sequence[str]) -> int:
    stmt = select(func.count()).select_from(Invoice).where(Invoice.status.in_(statuses))
    return int((await session.execute(stmt)).scalar_one())
