"""The credit ledger: append-only entries whose sum is the balance. Billing (renewals from credits) and payments
(over- and partial payments, paying from the balance, refunds) both change it here, so neither imports the other
to reach it.

Every change is an entry with an idempotency key (the same grant or debit never happens twice) plus the same
amount on `credit_accounts` in the same transaction. A debit is one conditional UPDATE (`balance >= amount`),
so two debits racing for the last credits cannot both succeed, in one process or several.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.credits import repository as repo
from pockity.errors import PockityError, ValidationFailed
from pockity.kit.ids import new_id
from pockity.kit.pagination import keyset_page
from pockity.models import CreditEntry


class InsufficientCredits(PockityError):
    status, code, message = 402, "insufficient_credits", "The credit balance does not cover this amount."


@dataclass(frozen=True)
class CreditsView:
    """A user's balance in one currency, every currency's balance, and a page of ledger entries."""

    balance_cents: int
    currency: str
    balances: dict[str, int]
    entries: Sequence[CreditEntry]
    next_cursor: str | None


async def grant(
    session: AsyncSession,
    user_id: str,
    amount_cents: int,
    currency: str,
    *,
    reason: str,
    key: str,
    reference: str | None = None,
    note: str | None = None,
    created_by: str | None = None,
) -> bool:
    """Add credit once per `key`; False when that key was already used (nothing changes)."""
    if amount_cents <= 0:
        raise ValidationFailed("A credit must be a positive amount.", code="invalid_amount")
    return await _append(session, _entry(user_id, amount_cents, currency, reason, key, reference, note, created_by))


async def take_back(
    session: AsyncSession,
    user_id: str,
    amount_cents: int,
    currency: str,
    *,
    reason: str,
    key: str,
    reference: str | None = None,
    note: str | None = None,
) -> bool:
    """Remove credit that turned out not to be the user's (a refunded payment), even past zero: a negative
    balance is a debt that blocks paying with credits until it is covered."""
    if amount_cents <= 0:
        return False
    return await _append(session, _entry(user_id, -amount_cents, currency, reason, key, reference, note, None))


async def debit(
    session: AsyncSession,
    user_id: str,
    amount_cents: int,
    currency: str,
    *,
    reason: str,
    key: str,
    reference: str | None = None,
    note: str | None = None,
) -> bool:
    """Spend credit if the balance covers it. True when the debit for `key` has happened (now or before)."""
    if amount_cents <= 0:
        raise ValidationFailed("A debit must be a positive amount.", code="invalid_amount")
    if not await repo.take_from_account(session, user_id, currency, amount_cents):
        return False
    entry = _entry(user_id, -amount_cents, currency, reason, key, reference, note, None)
    if not await repo.insert_entry(session, entry):
        await repo.add_to_account(session, user_id, currency, amount_cents)  # this debit was already made
    return True


def _entry(
    user_id: str,
    amount: int,
    currency: str,
    reason: str,
    key: str,
    reference: str | None,
    note: str | None,
    created_by: str | None,
) -> CreditEntry:
    return CreditEntry(
        user_id=user_id,
        amount_cents=amount,
        currency=currency,
        reason=reason,
        reference=reference,
        idempotency_key=key,
        note=note,
        created_by=created_by,
    )


async def _append(session: AsyncSession, entry: CreditEntry) -> bool:
    if not await repo.insert_entry(session, entry):
        return False
    await repo.add_to_account(session, entry.user_id, entry.currency, entry.amount_cents)
    return True


def grant_key(user_id: str, idempotency_key: str | None) -> str:
    """The ledger key of an admin grant: the client's idempotency key makes a retried request grant once;
    without one, every request is a new grant."""
    return f"grant:{user_id}:{idempotency_key or new_id()}"


async def admin_grant(
    session: AsyncSession,
    user_id: str,
    amount_cents: int,
    currency: str,
    reason: str,
    actor: Actor,
    *,
    idempotency_key: str | None,
) -> None:
    """Grant credit with a reason, audited; a retried request (same idempotency key) grants nothing more."""
    if not await grant(
        session,
        user_id,
        amount_cents,
        currency,
        reason="grant",
        key=grant_key(user_id, idempotency_key),
        note=reason,
        created_by=actor.id if actor.type == "user" else None,
    ):
        return  # granted before, not again — and not audited again
    record(
        session,
        actor,
        "credits.granted",
        target_type="user",
        target_id=user_id,
        details={"amountCents": amount_cents, "currency": currency, "reason": reason},
    )


async def balance(session: AsyncSession, user_id: str, currency: str) -> int:
    """The user's balance in `currency` (the sum of the ledger)."""
    return await repo.ledger_balance(session, user_id, currency)


async def balances(session: AsyncSession, user_id: str) -> dict[str, int]:
    """The user's balance in every currency they have entries in."""
    return await repo.ledger_balances(session, user_id)


async def view(
    session: AsyncSession, user_id: str, currency: str, *, cursor: str | None = None, limit: int = 50
) -> CreditsView:
    """A user's balance in `currency`, every currency's balance, and a page of entries (newest first)."""
    totals = await balances(session, user_id)
    entries, next_cursor = keyset_page(await repo.list_entries(session, user_id, cursor, limit + 1), limit)
    return CreditsView(totals.get(currency, 0), currency, totals, entries, next_cursor)
