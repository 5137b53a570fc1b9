"""The billing life cycle: what happens to a current subscription as time passes, one step at a time.

`due_step` says which step is due from the subscription alone; `run_lifecycle` takes the row lock and runs
that step. The steps: issue the next period's invoice `notice` ahead of the period end; at the period end
apply a scheduled downgrade or cancellation, or renew (a paid-ahead invoice, credits, or else PAST_DUE with
a grace period); once the grace is over, expire to the default tier. A refund of the running period's
invoice also enters PAST_DUE (`invoice_refunded`), through the same `enter_past_due`.

Its own module because these steps only run from the job (and a refund), under the subscription's row lock,
while service.py holds the user's own requests; both change subscriptions through current.make_current.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.billing import invoices
from pockity.billing import repository as repo
from pockity.billing.current import LIVE, UNPAID, make_current, snapshot
from pockity.credits import service as credits
from pockity.kit.money import amount
from pockity.kit.periods import period_end
from pockity.kit.time import utcnow
from pockity.models import Invoice, InvoiceStatus, Subscription, SubscriptionStatus, Tier
from pockity.notifications import service as notifications
from pockity.tiers import repository as tiers

HOLD_PAST_DUE = "past_due"


class Step(enum.Enum):
    INVOICE_AHEAD = "invoice_ahead"  # the period ends within the notice: issue the next period's invoice
    PERIOD_CHANGE = "period_change"  # the period ended with a downgrade or cancellation scheduled
    RENEW = "renew"  # the period (or trial) ended: pay the next one, or enter PAST_DUE
    EXPIRE = "expire"  # PAST_DUE or unpaid after a trial, and the grace period is over


@dataclass(frozen=True)
class _Run:
    session: AsyncSession
    actor: Actor
    grace: timedelta
    notice: timedelta
    now: datetime


def due_step(sub: Subscription, now: datetime, notice: timedelta) -> Step | None:
    """The step due for `sub` at `now`, or None when nothing is."""
    if not sub.is_current:
        return None
    if sub.status in UNPAID:
        return Step.EXPIRE if sub.grace_ends_at is not None and sub.grace_ends_at <= now else None
    if sub.status not in LIVE or sub.current_period_end is None:
        return None
    scheduled = bool(sub.scheduled_tier_id or sub.cancel_at_period_end)
    active = sub.status == SubscriptionStatus.ACTIVE.value
    if sub.current_period_end > now:
        ahead = active and not scheduled and sub.current_period_end <= now + notice
        return Step.INVOICE_AHEAD if ahead else None
    return Step.PERIOD_CHANGE if active and scheduled else Step.RENEW


async def run_lifecycle(
    session: AsyncSession,
    subscription_id: str,
    actor: Actor,
    *,
    grace: timedelta,
    notice: timedelta = timedelta(0),
) -> str | None:
    """Do what is due for one subscription under its row lock, so two runners do it once; what was done
    ("invoiced", "period_change", "renewed", "past_due", "expired") or None."""
    run = _Run(session, actor, grace, notice, utcnow())
    # Another runner working on this subscription has it locked: skip it (that runner does it, once).
    sub = await repo.lock_subscription(session, subscription_id, skip_locked=True)
    step = due_step(sub, run.now, notice) if sub is not None else None
    if sub is None or step is None:
        return None
    return await _STEPS[step](run, sub)


async def _invoice_ahead(run: _Run, sub: Subscription) -> str | None:
    """Issue the next period's invoice: the user can pay it before the period ends (paying it early extends
    the period at once). Credits are only used at the period end."""
    assert sub.current_period_end is not None
    tier = await tiers.get(run.session, sub.tier_id)
    if tier is None or tier.price_cents == 0:
        return None
    if await repo.live_invoice_for_period(run.session, sub.id, sub.current_period_end) is not None:
        return None
    invoice = await _invoice_for_next_period(run.session, sub, tier, run.grace)
    notifications.notify(
        run.session,
        sub.user_id,
        "billing.invoice",
        "Your next invoice",
        f"Invoice {invoice.id} ({_money(invoice)}) is for the period starting {sub.current_period_end:%Y-%m-%d}"
        + (
            "; it will be paid from your credits if they cover it."
            if sub.auto_renew_from_credits
            else "; pay it before then to keep uploading without a pause."
        ),
        {"invoiceId": invoice.id, "subscriptionId": sub.id},
    )
    record(
        run.session,
        run.actor,
        "invoice.issued",
        target_type="invoice",
        target_id=invoice.id,
        details={
            "subscriptionId": sub.id,
            "amountCents": invoice.amount_cents,
            "periodStart": sub.current_period_end.isoformat(),
            "autoRenewFromCredits": sub.auto_renew_from_credits,
        },
    )
    return "invoiced"


async def _change_period(run: _Run, sub: Subscription) -> str:
    """Apply the scheduled change; a paid target tier's first period is due at once, so it renews now."""
    new = await apply_period_end(run.session, sub, run.actor)
    if new is not None and due_step(new, utcnow(), run.notice) is Step.RENEW:
        await _renew(run, new)
    return "period_change"


async def _renew(run: _Run, sub: Subscription) -> str | None:
    """The period ended: a paid-ahead invoice continues it, else credits pay it, else it is PAST_DUE."""
    tier = await tiers.get(run.session, sub.tier_id)
    if tier is None or tier.price_cents == 0:
        sub.current_period_end = None  # a free tier has no periods to renew
        return None
    invoice = await _invoice_for_next_period(run.session, sub, tier, run.grace)
    if invoice.status == InvoiceStatus.PAID.value:  # paid ahead: the period simply continues
        await invoices.start_paid_period(run.session, sub, invoice, run.now)
        return "renewed"
    if sub.auto_renew_from_credits and await _pay_from_credits(run, sub, invoice):
        return "renewed"
    assert sub.current_period_end is not None
    grace_ends_at = sub.current_period_end + run.grace
    await enter_past_due(
        run.session,
        sub,
        invoice,
        run.actor,
        # A trial that ended unpaid was never paid for: it waits for payment rather than being past due.
        status=SubscriptionStatus.PAST_DUE
        if sub.status == SubscriptionStatus.ACTIVE.value
        else SubscriptionStatus.PENDING_PAYMENT,
        grace_ends_at=grace_ends_at,
        title="Payment due: uploads are paused",
        body=f"Invoice {invoice.id} ({_money(invoice)}) is unpaid. Your files stay readable; uploads resume once it "
        f"is paid. Unpaid after {grace_ends_at:%Y-%m-%d}, the subscription ends and your account returns to the "
        "free tier (nothing is deleted).",
        audit={"graceEndsAt": grace_ends_at.isoformat()},
    )
    return "past_due"


async def _pay_from_credits(run: _Run, sub: Subscription, invoice: Invoice) -> bool:
    """Renew from the credit balance if it covers the invoice (one conditional debit); False if it does not."""
    if not await credits.debit(
        run.session,
        sub.user_id,
        invoice.amount_cents,
        invoice.currency,
        reason="renewal",
        key=f"invoice:{invoice.id}",
        reference=invoice.id,
    ):
        return False
    await invoices.pay_invoice(run.session, invoice.id, run.actor, provider="credits", note="auto-renewed from credits")
    notifications.notify(
        run.session,
        sub.user_id,
        "billing.renewed",
        "Subscription renewed from credits",
        f"{_money(invoice)} was taken from your credit balance for the next period.",
        {"invoiceId": invoice.id, "subscriptionId": sub.id},
    )
    record(
        run.session,
        run.actor,
        "subscription.renewed",
        target_type="subscription",
        target_id=sub.id,
        details={"invoiceId": invoice.id, "amountCents": invoice.amount_cents, "from": "credits"},
    )
    return True


async def _expire(run: _Run, sub: Subscription) -> str:
    """Grace is over: open invoices are voided (a late payment becomes credit) and the user falls back to the
    default tier, or to no storage. Nothing stored is deleted."""
    await invoices.void_open(run.session, sub.id, "subscription expired unpaid")
    before = snapshot(sub)
    default = await tiers.default_tier_id(run.session)
    new = await _replace(run.session, sub, default, SubscriptionStatus.EXPIRED, start=None)
    notifications.notify(
        run.session,
        sub.user_id,
        "billing.expired",
        "Subscription ended",
        "The grace period ended unpaid, so the subscription has ended"
        + (" and your account is on the free tier." if new else ".")
        + " Your files are kept; request a tier to get more room again.",
        {"subscriptionId": sub.id},
    )
    record(
        run.session,
        run.actor,
        "subscription.expired",
        target_type="subscription",
        target_id=sub.id,
        details={"before": before, "after": snapshot(new)},
    )
    return "expired"


_STEPS: dict[Step, Callable[[_Run, Subscription], Awaitable[str | None]]] = {
    Step.INVOICE_AHEAD: _invoice_ahead,
    Step.PERIOD_CHANGE: _change_period,
    Step.RENEW: _renew,
    Step.EXPIRE: _expire,
}


# --- shared by the steps and refunds -----------------------------------------------------------------------


async def enter_past_due(
    session: AsyncSession,
    sub: Subscription,
    invoice: Invoice,
    actor: Actor,
    *,
    status: SubscriptionStatus,
    grace_ends_at: datetime,
    title: str,
    body: str,
    audit: dict[str, object],
) -> None:
    """`invoice` is unpaid: the subscription waits for it in `status` until `grace_ends_at`, uploads stop
    meanwhile (the user's billing hold), the user is told (`title`, `body`) and it is audited."""
    before = snapshot(sub)
    sub.status, sub.grace_ends_at = status.value, grace_ends_at
    await session.flush()
    await repo.set_billing_hold(session, sub.user_id, HOLD_PAST_DUE)
    notifications.notify(
        session,
        sub.user_id,
        "billing.past_due",
        title,
        body,
        {"invoiceId": invoice.id, "subscriptionId": sub.id, "graceEndsAt": grace_ends_at.isoformat()},
    )
    record(
        session,
        actor,
        "subscription.past_due",
        target_type="subscription",
        target_id=sub.id,
        details={"before": before, "after": snapshot(sub), "invoiceId": invoice.id, **audit},
    )


async def invoice_refunded(session: AsyncSession, invoice: Invoice, actor: Actor, *, grace: timedelta) -> None:
    """A refunded invoice that paid the period running now leaves that period unpaid: the subscription goes
    PAST_DUE with a grace period and the period is invoiced again. A refund of a past period changes nothing."""
    if invoice.subscription_id is None or invoice.period_end is None:
        return
    sub = await repo.lock_subscription(session, invoice.subscription_id)
    if (
        sub is None
        or not sub.is_current
        or sub.status != SubscriptionStatus.ACTIVE.value
        or sub.current_period_end != invoice.period_end
    ):
        return
    tier = await tiers.get(session, sub.tier_id)
    if tier is None:
        return
    reissued = await invoices.reissue(session, invoice, tier.id, utcnow() + grace)
    await enter_past_due(
        session,
        sub,
        reissued,
        actor,
        status=SubscriptionStatus.PAST_DUE,
        grace_ends_at=utcnow() + grace,
        title="Payment refunded: uploads are paused",
        body=f"The payment for the current period was refunded. Invoice {reissued.id} is open for it; your files "
        "stay readable and uploads resume once it is paid.",
        audit={"reason": "refund"},
    )


async def apply_period_end(session: AsyncSession, sub: Subscription, actor: Actor) -> Subscription | None:
    """At the end of a period: a scheduled downgrade starts, a cancelled subscription falls to the default tier.
    A paid target tier starts with a period that is already due, so the renewal step bills it at once."""
    target = sub.scheduled_tier_id if not sub.cancel_at_period_end else await tiers.default_tier_id(session)
    ended = SubscriptionStatus.CANCELLED if sub.cancel_at_period_end else SubscriptionStatus.EXPIRED
    new = await _replace(session, sub, target, ended, start=sub.current_period_end)
    record(
        session,
        actor,
        "subscription.period_change",
        target_type="user",
        target_id=sub.user_id,
        details={"before": snapshot(sub), "after": snapshot(new)},
    )
    return new


async def _replace(
    session: AsyncSession, sub: Subscription, tier_id: str | None, ended: SubscriptionStatus, *, start: datetime | None
) -> Subscription | None:
    """End `sub` and make a new ACTIVE subscription on `tier_id` current (none: no storage; data is kept)."""
    now = utcnow()
    await invoices.void_next_period(session, sub, f"subscription {ended.value.lower()}")
    tier = await tiers.get(session, tier_id) if tier_id else None
    if tier is None:
        sub.is_current, sub.status, sub.ended_at = False, ended.value, now
        await session.flush()
        await repo.set_user_tier(session, sub.user_id, None)
        return None
    new = Subscription(
        user_id=sub.user_id,
        tier_id=tier.id,
        status=SubscriptionStatus.ACTIVE.value,
        provider=sub.provider,
        cancel_at_period_end=False,
        auto_renew_from_credits=sub.auto_renew_from_credits,
    )
    if tier.price_cents > 0:
        new.current_period_start = new.current_period_end = start or now
    repo.add(session, new)
    await make_current(session, sub.user_id, new, ended_status=ended)
    return new


async def _invoice_for_next_period(session: AsyncSession, sub: Subscription, tier: Tier, grace: timedelta) -> Invoice:
    """The invoice for the period starting at the current period's end: the trial's own invoice, one issued
    before, or a new renewal invoice (at most one live invoice per period, by a unique index)."""
    assert sub.current_period_end is not None
    existing = await repo.live_invoice_for_period(session, sub.id, sub.current_period_end)
    if existing is not None:
        return existing
    if sub.status == SubscriptionStatus.TRIALING.value:  # a trial invoice from before invoices carried their period
        for invoice in await invoices.open_of(session, sub.id):
            invoice.period_start = sub.current_period_end
            invoice.period_end = period_end(sub.current_period_end, tier.billing_period)
            await session.flush()  # pay_invoice re-reads the invoice (populate_existing): keep the period
            return invoice
    return await invoices.issue(
        session, invoices.new_invoice(sub, tier, grace, kind="renewal", period_start=sub.current_period_end)
    )


def _money(invoice: Invoice) -> str:
    return amount(invoice.amount_cents, invoice.currency)
