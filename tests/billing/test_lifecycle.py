"""The billing life cycle over time (billing/lifecycle.py): renewing from credits, the next period's invoice
issued ahead, scheduled downgrades and cancellations at the period end, trials ending, and the job run
again or by two runners at once.

The billing job runs as the scheduler would (`run_billing`); time moves by putting a period end (or a grace
end) into the past. Every transition is checked in the stored rows, the credit ledger and the audit log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from pockity.billing.lifecycle import Step, due_step
from pockity.kit.periods import period_end
from pockity.kit.time import utcnow
from pockity.models import Invoice, Subscription
from tests.fixtures.billing import (
    GRACE,
    admin_pay,
    current_row,
    grant_credits,
    invoice_rows,
    ledger_consistent,
    ledger_entries,
    minutes_ago,
    paid_starter,
    put_file,
    set_auto_renew,
    sub_row,
    user_row,
)
from tests.fixtures.payments import (
    audits,
    balance,
    end_grace,
    end_period,
    run_billing,
    subscribe_invoice,
    subscription,
)
from tests.fixtures.users import TestUser, make_user

# --- helpers -------------------------------------------------------------------------------------------------


async def _trial(client: httpx.AsyncClient, app: FastAPI, user: TestUser, admin: TestUser) -> tuple[str, Invoice]:
    inv = await subscribe_invoice(client, user, admin, "tier_pro")
    sub = (await subscription(client, user))["current"]
    assert (sub["tierId"], sub["status"]) == ("tier_pro", "TRIALING")
    row = await sub_row(app, sub["id"])
    [invoice] = await invoice_rows(app, user.id)
    assert invoice.id == inv["id"] and (invoice.amount_cents, invoice.status) == (2500, "PENDING")
    assert invoice.period_start == row.current_period_end  # the trial's invoice pays the month after it
    assert row.current_period_end is not None and row.current_period_start is not None
    assert row.current_period_end - row.current_period_start == timedelta(days=14)
    return sub["id"], invoice


# --- which step is due ------------------------------------------------------------------------------------

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
NOTICE = timedelta(days=3)
DAY = timedelta(days=1)


def _at(
    status: str,
    *,
    ends: timedelta | None = None,
    grace: timedelta | None = None,
    current: bool = True,
    scheduled: str | None = None,
    cancel: bool = False,
) -> Subscription:
    """A subscription (not stored) whose period ends `ends` and grace ends `grace` after NOW."""
    return Subscription(
        user_id="u",
        tier_id="t",
        status=status,
        is_current=current,
        current_period_end=NOW + ends if ends is not None else None,
        grace_ends_at=NOW + grace if grace is not None else None,
        scheduled_tier_id=scheduled,
        cancel_at_period_end=cancel,
    )


@pytest.mark.parametrize(
    ("sub", "step"),
    [
        (_at("ACTIVE", ends=-DAY, current=False), None),
        (_at("ACTIVE", ends=None), None),
        (_at("ACTIVE", ends=10 * DAY), None),
        (_at("ACTIVE", ends=2 * DAY), Step.INVOICE_AHEAD),
        (_at("ACTIVE", ends=NOTICE), Step.INVOICE_AHEAD),
        (_at("ACTIVE", ends=2 * DAY, scheduled="cheaper"), None),
        (_at("ACTIVE", ends=2 * DAY, cancel=True), None),
        (_at("TRIALING", ends=2 * DAY), None),
        (_at("ACTIVE", ends=timedelta(0)), Step.RENEW),
        (_at("ACTIVE", ends=-DAY), Step.RENEW),
        (_at("TRIALING", ends=-DAY), Step.RENEW),
        (_at("TRIALING", ends=-DAY, scheduled="cheaper"), Step.RENEW),
        (_at("ACTIVE", ends=-DAY, scheduled="cheaper"), Step.PERIOD_CHANGE),
        (_at("ACTIVE", ends=-DAY, cancel=True), Step.PERIOD_CHANGE),
        (_at("PAST_DUE", ends=-DAY, grace=DAY), None),
        (_at("PAST_DUE", ends=-DAY, grace=None), None),
        (_at("PAST_DUE", ends=-2 * DAY, grace=-DAY), Step.EXPIRE),
        (_at("PAST_DUE", ends=-2 * DAY, grace=timedelta(0)), Step.EXPIRE),
        (_at("PENDING_PAYMENT", ends=-2 * DAY, grace=-DAY), Step.EXPIRE),
        (_at("CANCELLED", ends=-DAY, grace=-DAY), None),
        (_at("EXPIRED", ends=-DAY), None),
    ],
)
def test_the_step_due_follows_from_the_subscription_alone(sub: Subscription, step: Step | None) -> None:
    assert due_step(sub, NOW, NOTICE) is step


# --- 1. renewing from credits ------------------------------------------------------------------------------


async def test_renewal_from_credits_extends_the_period_from_the_old_end(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first_invoice = await paid_starter(pclient, payer, padmin)
    await set_auto_renew(pclient, payer)
    await grant_credits(pclient, padmin, payer, 500)
    assert await run_billing(papp) == 0  # the period is still running
    old_end = minutes_ago()
    await end_period(papp, sub_id, at=old_end)
    assert await run_billing(papp) == 1
    sub = await sub_row(papp, sub_id)
    assert (sub.status, sub.is_current, sub.grace_ends_at) == ("ACTIVE", True, None)
    assert sub.current_period_start == old_end
    assert sub.current_period_end == period_end(old_end, "monthly")
    api = (await subscription(pclient, payer))["current"]
    assert api["id"] == sub_id and datetime.fromisoformat(api["currentPeriodStart"]) == old_end
    first, renewal = await invoice_rows(papp, payer.id)
    assert first.id == first_invoice and first.status == "PAID"
    assert (renewal.kind, renewal.status, renewal.provider, renewal.amount_cents, renewal.tier_id) == (
        "renewal",
        "PAID",
        "credits",
        500,
        "tier_starter",
    )
    assert (renewal.period_start, renewal.period_end) == (old_end, period_end(old_end, "monthly"))
    assert renewal.subscription_id == sub_id and renewal.paid_at is not None
    assert await balance(pclient, payer) == 0
    assert await ledger_entries(papp, payer.id) == [(500, "grant", None), (-500, "renewal", renewal.id)]
    await ledger_consistent(papp, payer.id, 0)
    [renewed] = await audits(papp, "subscription.renewed", sub_id)
    assert (renewed.actor_type, renewed.actor_id) == ("system", "jobs")
    assert renewed.details == {"invoiceId": renewal.id, "amountCents": 500, "from": "credits"}
    paid = await audits(papp, "invoice.paid", renewal.id)
    assert len(paid) == 1 and paid[0].details["provider"] == "credits"
    assert await audits(papp, "subscription.past_due") == []
    assert (await user_row(papp, payer.id)).billing_hold is None


# --- 3. auto-renew off ---------------------------------------------------------------------------------------


async def test_without_auto_renew_the_period_is_invoiced_even_with_credit(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, _ = await paid_starter(pclient, payer, padmin)
    assert (await subscription(pclient, payer))["current"]["autoRenewFromCredits"] is False  # the default
    await grant_credits(pclient, padmin, payer, 5000)
    old_end = minutes_ago()
    await end_period(papp, sub_id, at=old_end)
    assert await run_billing(papp) == 1
    sub = await sub_row(papp, sub_id)
    assert (sub.status, sub.grace_ends_at) == ("PAST_DUE", old_end + GRACE)
    _, renewal = await invoice_rows(papp, payer.id)
    assert (renewal.kind, renewal.status, renewal.period_start, renewal.provider) == (
        "renewal",
        "PENDING",
        old_end,
        None,
    )
    assert await ledger_entries(papp, payer.id) == [(5000, "grant", None)]
    await ledger_consistent(papp, payer.id, 5000)
    assert (await user_row(papp, payer.id)).billing_hold == "past_due"
    assert len(await audits(papp, "subscription.past_due", sub_id)) == 1
    assert await audits(papp, "subscription.renewed") == []
    # Turning auto-renew on is audited, and does not charge by itself.
    await set_auto_renew(pclient, payer)
    [toggle] = await audits(papp, "subscription.auto_renew", sub_id)
    assert toggle.details == {"before": False, "after": True} and toggle.actor_id == payer.id
    assert await run_billing(papp) == 0
    await ledger_consistent(papp, payer.id, 5000)


# --- 5. idempotent and safe with two runners ---------------------------------------------------------------


async def test_running_the_job_again_does_nothing(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, _ = await paid_starter(pclient, payer, padmin)
    await set_auto_renew(pclient, payer)
    await grant_credits(
        pclient, padmin, payer, 1000
    )  # enough for two renewals: only the job's own logic stops a second
    await end_period(papp, sub_id, at=minutes_ago())
    assert await run_billing(papp) == 1
    after_first = (await sub_row(papp, sub_id)).current_period_end
    invoices, entries = await invoice_rows(papp, payer.id), await ledger_entries(papp, payer.id)
    assert await run_billing(papp) == 0
    assert (await sub_row(papp, sub_id)).current_period_end == after_first
    assert [(i.id, i.status) for i in await invoice_rows(papp, payer.id)] == [(i.id, i.status) for i in invoices]
    assert await ledger_entries(papp, payer.id) == entries
    await ledger_consistent(papp, payer.id, 500)
    assert len(await audits(papp, "subscription.renewed")) == 1


async def test_two_runners_at_once_renew_each_subscription_once(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    users = [payer] + [await make_user(pclient, f"due{n}") for n in range(3)]
    ends: dict[str, tuple[str, datetime]] = {}
    for n, user in enumerate(users):
        sub_id, _ = await paid_starter(pclient, user, padmin)
        await set_auto_renew(pclient, user)
        await grant_credits(pclient, padmin, user, 1000)  # enough for two: a double renewal would show
        ends[user.id] = (sub_id, minutes_ago(5 + n))
        await end_period(papp, sub_id, at=ends[user.id][1])
    done = await asyncio.gather(run_billing(papp), run_billing(papp))
    assert sum(done) == len(users), done
    for user in users:
        sub_id, old_end = ends[user.id]
        sub = await sub_row(papp, sub_id)
        assert (sub.status, sub.current_period_start, sub.current_period_end) == (
            "ACTIVE",
            old_end,
            period_end(old_end, "monthly"),
        )
        renewals = [i for i in await invoice_rows(papp, user.id) if i.kind == "renewal"]
        assert [(r.status, r.period_start) for r in renewals] == [("PAID", old_end)]
        debits = [e for e in await ledger_entries(papp, user.id) if e[0] < 0]
        assert debits == [(-500, "renewal", renewals[0].id)]
        assert await balance(pclient, user) == 500
        await ledger_consistent(papp, user.id, 500)
    renewed = await audits(papp, "subscription.renewed")
    assert sorted(e.target_id or "" for e in renewed) == sorted(sub_id for sub_id, _ in ends.values())
    assert list(await asyncio.gather(run_billing(papp), run_billing(papp))) == [0, 0]


# --- 6. trials ---------------------------------------------------------------------------------------------


async def test_a_trial_ending_unpaid_holds_uploads_until_paid(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, invoice = await _trial(pclient, papp, payer, padmin)
    await grant_credits(pclient, padmin, payer, 2500)  # credit, but auto-renew is off
    trial_end = minutes_ago()
    await end_period(papp, sub_id, at=trial_end)
    assert await run_billing(papp) == 1
    sub = await sub_row(papp, sub_id)
    assert (sub.status, sub.is_current, sub.grace_ends_at) == ("PENDING_PAYMENT", True, trial_end + GRACE)
    assert (await user_row(papp, payer.id)).billing_hold == "past_due"
    [still] = await invoice_rows(papp, payer.id)  # the trial's own invoice, not a second one
    assert (still.id, still.status, still.period_start) == (invoice.id, "PENDING", trial_end)
    await ledger_consistent(papp, payer.id, 2500)
    [past_due] = await audits(papp, "subscription.past_due", sub_id)
    assert past_due.details["before"]["status"] == "TRIALING"
    assert past_due.details["after"]["status"] == "PENDING_PAYMENT"
    r = await put_file(pclient, payer, "a.txt", b"x")
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    # Paying it starts the paid period where the trial ended.
    assert (await admin_pay(pclient, padmin, invoice.id)).status_code == 200
    sub = await sub_row(papp, sub_id)
    assert (sub.status, sub.current_period_start, sub.grace_ends_at) == ("ACTIVE", trial_end, None)
    assert sub.current_period_end == period_end(trial_end, "monthly")
    assert (await user_row(papp, payer.id)).billing_hold is None
    assert (await put_file(pclient, payer, "a.txt", b"x")).status_code == 201


@pytest.mark.parametrize("invoice_period", ["trial_end", "legacy_none"])
async def test_a_trial_ending_with_auto_renew_is_paid_from_credits(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, invoice_period: str
) -> None:
    """The trial's invoice carries the period after the trial (or, made before invoices carried their period,
    none): either way it is the one paid, for the month starting at the trial's end."""
    sub_id, invoice = await _trial(pclient, papp, payer, padmin)
    await set_auto_renew(pclient, payer)
    await grant_credits(pclient, padmin, payer, 2500)
    assert await run_billing(papp) == 0  # the trial is still running: nothing is charged early
    await ledger_consistent(papp, payer.id, 2500)
    trial_end = minutes_ago()
    await end_period(papp, sub_id, at=trial_end)
    aligned = {"period_start": trial_end, "period_end": period_end(trial_end, "monthly")}
    async with papp.state.db.sessions() as s, s.begin():
        await s.execute(
            update(Invoice)
            .where(Invoice.id == invoice.id)
            .values(**(aligned if invoice_period == "trial_end" else {"period_start": None, "period_end": None}))
        )
    assert await run_billing(papp) == 1
    sub = await sub_row(papp, sub_id)
    assert (sub.status, sub.current_period_start, sub.grace_ends_at) == ("ACTIVE", trial_end, None)
    assert sub.current_period_end == period_end(trial_end, "monthly")
    [paid] = await invoice_rows(papp, payer.id)
    assert (paid.id, paid.status, paid.provider, paid.period_start) == (invoice.id, "PAID", "credits", trial_end)
    assert await ledger_entries(papp, payer.id) == [(2500, "grant", None), (-2500, "renewal", invoice.id)]
    await ledger_consistent(papp, payer.id, 0)
    assert (await user_row(papp, payer.id)).billing_hold is None
    assert len(await audits(papp, "subscription.renewed", sub_id)) == 1
    assert len(await audits(papp, "invoice.paid", invoice.id)) == 1
    assert await audits(papp, "subscription.past_due") == []


async def test_a_trial_paid_early_is_not_charged_again_at_trial_end(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, invoice = await _trial(pclient, papp, payer, padmin)
    trial_end = (await sub_row(papp, sub_id)).current_period_end
    assert trial_end is not None
    assert (await admin_pay(pclient, padmin, invoice.id)).status_code == 200
    sub = await sub_row(papp, sub_id)
    assert (sub.status, sub.current_period_start) == ("ACTIVE", trial_end)  # paid from the trial's end
    assert sub.current_period_end == period_end(trial_end, "monthly")
    await set_auto_renew(pclient, payer)
    await grant_credits(pclient, padmin, payer, 2500)
    assert await run_billing(papp) == 0
    # The trial's end passes (everything moves 14 days and a minute into the past): still nothing to charge.
    shift = timedelta(days=14, minutes=1)
    assert sub.current_period_start is not None and sub.current_period_end is not None
    async with papp.state.db.sessions() as s, s.begin():
        await s.execute(
            update(Subscription)
            .where(Subscription.id == sub_id)
            .values(
                current_period_start=sub.current_period_start - shift,
                current_period_end=sub.current_period_end - shift,
            )
        )
        await s.execute(
            update(Invoice)
            .where(Invoice.id == invoice.id)
            .values(period_start=sub.current_period_start - shift, period_end=sub.current_period_end - shift)
        )
    assert sub.current_period_start - shift < utcnow()  # the trial is over
    assert await run_billing(papp) == 0
    [only] = await invoice_rows(papp, payer.id)
    assert (only.id, only.status, only.provider) == (invoice.id, "PAID", "manual")
    assert await ledger_entries(papp, payer.id) == [(2500, "grant", None)]
    await ledger_consistent(papp, payer.id, 2500)
    assert (await sub_row(papp, sub_id)).status == "ACTIVE"
    assert await audits(papp, "subscription.renewed") == []
    assert await audits(papp, "subscription.past_due") == []


# --- 8. changes at the period end ----------------------------------------------------------------------------


async def test_a_scheduled_downgrade_starts_and_renews_from_credits_in_one_run(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin, "tier_pro")
    assert (await admin_pay(pclient, padmin, inv["id"])).status_code == 200  # Pro, paid
    pro_id = (await subscription(pclient, payer))["current"]["id"]
    r = await pclient.post("/api/tier-requests", json={"tierId": "tier_starter"}, headers=payer.headers)
    assert r.status_code == 201, r.text
    r = await pclient.patch(
        f"/api/tier-requests/admin/{r.json()['id']}/approve", json={"approved": True}, headers=padmin.headers
    )
    assert r.status_code == 200 and r.json()["effective"] == "period_end" and r.json()["invoiceId"] is None
    assert (await sub_row(papp, pro_id)).scheduled_tier_id == "tier_starter"
    await set_auto_renew(pclient, payer)
    await grant_credits(pclient, padmin, payer, 500)
    assert await run_billing(papp) == 0
    old_end = minutes_ago()
    await end_period(papp, pro_id, at=old_end)
    assert await run_billing(papp) == 1
    pro = await sub_row(papp, pro_id)
    assert (pro.status, pro.is_current) == ("EXPIRED", False)
    starter = await current_row(papp, payer.id)
    assert (starter.tier_id, starter.status, starter.auto_renew_from_credits) == ("tier_starter", "ACTIVE", True)
    assert (starter.current_period_start, starter.current_period_end) == (old_end, period_end(old_end, "monthly"))
    pro_invoice, renewal = await invoice_rows(papp, payer.id)
    assert (pro_invoice.id, pro_invoice.status) == (inv["id"], "PAID")
    assert (renewal.subscription_id, renewal.tier_id, renewal.amount_cents) == (starter.id, "tier_starter", 500)
    assert (renewal.status, renewal.provider, renewal.period_start) == ("PAID", "credits", old_end)
    assert await ledger_entries(papp, payer.id) == [(500, "grant", None), (-500, "renewal", renewal.id)]
    await ledger_consistent(papp, payer.id, 0)
    u = await user_row(papp, payer.id)
    assert (u.tier_id, u.billing_hold) == ("tier_starter", None)
    [change] = await audits(papp, "subscription.period_change", payer.id)
    assert change.details["before"]["id"] == pro_id and change.details["after"]["tierId"] == "tier_starter"
    assert [e.target_id for e in await audits(papp, "subscription.renewed")] == [starter.id]
    assert await run_billing(papp) == 0


async def test_cancel_at_period_end_falls_to_the_default_tier_without_an_invoice(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first_invoice = await paid_starter(pclient, payer, padmin)
    await set_auto_renew(pclient, payer)
    await grant_credits(pclient, padmin, payer, 500)  # credit and auto-renew: a cancellation still wins
    r = await pclient.post("/api/billing/subscription/cancel", headers=payer.headers)
    assert r.status_code == 200 and r.json()["cancelAtPeriodEnd"] is True, r.text
    assert len(await audits(papp, "subscription.cancel_scheduled", sub_id)) == 1
    await end_period(papp, sub_id, at=minutes_ago())
    assert await run_billing(papp) == 1
    old = await sub_row(papp, sub_id)
    assert (old.status, old.is_current) == ("CANCELLED", False)
    new = await current_row(papp, payer.id)
    assert (new.tier_id, new.status, new.current_period_end) == ("tier_free", "ACTIVE", None)
    assert [(i.id, i.status) for i in await invoice_rows(papp, payer.id)] == [(first_invoice, "PAID")]
    assert await ledger_entries(papp, payer.id) == [(500, "grant", None)]
    await ledger_consistent(papp, payer.id, 500)
    u = await user_row(papp, payer.id)
    assert (u.tier_id, u.billing_hold) == ("tier_free", None)
    [change] = await audits(papp, "subscription.period_change", payer.id)
    assert change.details["after"]["tierId"] == "tier_free"
    assert await audits(papp, "subscription.renewed") == []
    assert await run_billing(papp) == 0


# --- the next period's invoice, ahead of the period end --------------------------------------------------------


async def test_the_next_invoice_is_issued_ahead_and_paying_it_early_extends_the_period(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first = await paid_starter(pclient, payer, padmin)
    far = utcnow() + timedelta(days=10)
    await end_period(papp, sub_id, far)
    assert await run_billing(papp) == 0  # not within the notice (3 days) yet: nothing issued
    assert [i.id for i in await invoice_rows(papp, payer.id)] == [first]
    soon = utcnow() + timedelta(days=2)
    await end_period(papp, sub_id, soon)
    assert await run_billing(papp) == 1
    assert await run_billing(papp) == 0  # issued once
    ahead = [i for i in await invoice_rows(papp, payer.id) if i.id != first]
    assert [(i.kind, i.status, i.amount_cents, i.period_start) for i in ahead] == [("renewal", "PENDING", 500, soon)]
    (issued,) = await audits(papp, "invoice.issued", ahead[0].id)
    assert issued.details["subscriptionId"] == sub_id
    sub = await sub_row(papp, sub_id)
    assert sub.status == "ACTIVE" and (await user_row(papp, payer.id)).billing_hold is None  # still in good standing
    # Paying ahead extends the period at once; at the old end nothing more happens.
    await grant_credits(pclient, padmin, payer, 500)
    r = await pclient.post(f"/api/billing/invoices/{ahead[0].id}/pay-with-credits", headers=payer.headers)
    assert r.status_code == 200 and r.json()["status"] == "PAID", r.text
    sub = await sub_row(papp, sub_id)
    assert (sub.current_period_start, sub.current_period_end) == (soon, period_end(soon, "monthly"))
    assert await run_billing(papp) == 0
    assert len(await invoice_rows(papp, payer.id)) == 2 and await balance(pclient, payer) == 0


async def test_an_invoice_issued_ahead_is_paid_from_credits_only_at_the_period_end(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first = await paid_starter(pclient, payer, padmin)
    await set_auto_renew(pclient, payer)
    await grant_credits(pclient, padmin, payer, 500)
    old_end = utcnow() + timedelta(days=1)
    await end_period(papp, sub_id, old_end)
    assert await run_billing(papp) == 1
    (ahead,) = [i for i in await invoice_rows(papp, payer.id) if i.id != first]
    assert ahead.status == "PENDING" and await balance(pclient, payer) == 500  # not charged early
    await end_period(papp, sub_id, utcnow() - timedelta(seconds=1))
    async with papp.state.db.sessions() as s, s.begin():  # the invoice follows the moved period end
        await s.execute(
            update(Invoice).where(Invoice.id == ahead.id).values(period_start=utcnow() - timedelta(seconds=1))
        )
    async with papp.state.db.sessions() as s:
        moved = (await s.get(Invoice, ahead.id)).period_start  # type: ignore[union-attr]
    await end_period(papp, sub_id, moved)
    assert await run_billing(papp) == 1
    invoices = await invoice_rows(papp, payer.id)
    assert [(i.id, i.status, i.provider) for i in invoices] == [
        (first, "PAID", "manual"),
        (ahead.id, "PAID", "credits"),
    ]
    assert await balance(pclient, payer) == 0 and (await sub_row(papp, sub_id)).status == "ACTIVE"
    await ledger_consistent(papp, payer.id, 0)


async def test_cancelling_voids_an_invoice_issued_ahead(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    sub_id, first = await paid_starter(pclient, payer, padmin)
    await end_period(papp, sub_id, utcnow() + timedelta(days=1))
    assert await run_billing(papp) == 1
    (ahead,) = [i for i in await invoice_rows(papp, payer.id) if i.id != first]
    r = await pclient.post("/api/billing/subscription/cancel", headers=payer.headers)
    assert r.status_code == 200, r.text
    statuses = {i.id: i.status for i in await invoice_rows(papp, payer.id)}
    assert statuses == {first: "PAID", ahead.id: "VOID"}
    assert await run_billing(papp) == 0  # a cancelled subscription is not invoiced again


async def test_the_user_is_told_about_invoices_renewals_past_due_and_expiry(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser, other_payer: TestUser
) -> None:
    sub_id, _ = await paid_starter(pclient, payer, padmin)
    await end_period(papp, sub_id, utcnow() + timedelta(days=1))
    await run_billing(papp)  # issued ahead
    await end_period(papp, sub_id)
    async with papp.state.db.sessions() as s, s.begin():  # the period end arrives for the issued invoice too
        sub = await s.get(Subscription, sub_id)
        assert sub is not None
        await s.execute(
            update(Invoice)
            .where(Invoice.subscription_id == sub_id, Invoice.status == "PENDING")
            .values(period_start=sub.current_period_end)
        )
    await run_billing(papp)  # no credits, no auto-renew: PAST_DUE
    await end_grace(papp, sub_id)
    await run_billing(papp)  # expired

    r = await pclient.get("/api/notifications", headers=payer.headers)
    assert r.status_code == 200, r.text
    kinds = [n["kind"] for n in r.json()["items"]]
    assert sorted(k for k in kinds if k.startswith("billing.")) == [
        "billing.expired",
        "billing.invoice",
        "billing.past_due",
        "billing.payment_received",  # the receipt of the first period's payment
    ]
    past_due = next(n for n in r.json()["items"] if n["kind"] == "billing.past_due")
    assert "5.00 USD" in past_due["body"] and past_due["data"]["subscriptionId"] == sub_id
    # Nobody else sees them.
    r = await pclient.get("/api/notifications", headers=other_payer.headers)
    assert [n for n in r.json()["items"] if n["kind"].startswith("billing.")] == []
