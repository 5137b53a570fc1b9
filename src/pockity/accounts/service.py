"""The account life cycle: proving an email address, resetting a forgotten password, changing the address.

Each goes through a single-use, expiring token sent by email (models.AccountToken): only its SHA-256 is kept,
and the link is derived from the token's id with a server key when the mail job sends the message
(mail.links.action_token), so nothing in the database is a usable link. Using a token is one conditional
UPDATE, so it works once, whatever runs at the same time."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.accounts import repository
from pockity.audit.service import Actor, record
from pockity.auth import service as auth
from pockity.errors import Conflict, Forbidden, TooManyRequests, ValidationFailed
from pockity.kit.ids import new_id
from pockity.kit.passwords import verify_password
from pockity.kit.time import utcnow
from pockity.mail import service as mail
from pockity.mail.links import action_token, action_token_id
from pockity.models import AccountToken, AccountTokenPurpose, User
from pockity.users import service as users
from pockity.users.schemas import normalise_email

RESEND_WINDOW = timedelta(hours=1)
RESENDS_PER_WINDOW = 3  # verification emails a user may ask for per hour
RESETS_PER_ADDRESS = 3  # reset emails per address per hour
RESETS_PER_CLIENT = 20  # reset requests per client address per hour


@dataclass(frozen=True)
class AccountPolicy:
    action_key: bytes  # signs the links (mail.links.action_key of JWT_SECRET)
    email_token_minutes: int
    reset_minutes: int
    bcrypt_rounds: int
    verification_required: bool


class InvalidLink(Forbidden):
    code, message = "invalid_link", "This link is not valid, was already used or has expired. Ask for a new one."


class EmailChangeSame(Conflict):
    code, message = "email_unchanged", "That is already your email address."


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(policy: AccountPolicy) -> tuple[str, str]:
    """A new token's id and the hash of the secret its link carries."""
    token_id = new_id()
    return token_id, _hash(action_token(policy.action_key, token_id))


def _add_emailed_token(
    session: AsyncSession, user_id: str, purpose: str, email: str, policy: AccountPolicy, now: datetime
) -> str:
    """A new token of `purpose` for a link sent to `email`, valid EMAIL_TOKEN_MINUTES; its id."""
    token_id, token_hash = _new_token(policy)
    repository.add_token(
        session,
        AccountToken(
            id=token_id,
            user_id=user_id,
            purpose=purpose,
            email=email,
            token_hash=token_hash,
            created_at=now,
            expires_at=now + timedelta(minutes=policy.email_token_minutes),
        ),
    )
    return token_id


def _action(path: str, token_id: str) -> dict[str, str]:
    return {"path": path, "token_id": token_id}


async def send_verification(session: AsyncSession, user: User, policy: AccountPolicy) -> None:
    """Email a link that proves the user's address (in the caller's unit of work; sent after it commits)."""
    token_id = _add_emailed_token(session, user.id, AccountTokenPurpose.VERIFY_EMAIL, user.email, policy, utcnow())
    mail.enqueue(
        session,
        kind="auth.verify_email",
        recipient=user.email,
        user_id=user.id,
        context={
            "title": "Verify your email address",
            "body": f"Confirm that {user.email} is yours to finish setting up your account.",
            "button": "Verify my address",
            "footnote": f"The link works once, for {policy.email_token_minutes // 60 or 1} hours. "
            "If you did not sign up, ignore this email.",
            "action": _action("/verify-email", token_id),
        },
    )


async def resend_verification(session: AsyncSession, user_id: str, policy: AccountPolicy, actor: Actor) -> None:
    """Send a new verification link (earlier ones stop working); at most a few per hour."""
    user = await users.get_user(session, user_id)
    if user.email_verified_at is not None:
        raise Conflict("Your email address is already verified.", code="email_already_verified")
    if await auth.count_attempt(session, "verify_resend", user.id, RESEND_WINDOW) > RESENDS_PER_WINDOW:
        raise TooManyRequests(
            "Too many verification emails; try again in an hour.",
            retry_after=int(RESEND_WINDOW.total_seconds()),
            code="verification_throttled",
        )
    await repository.retire_tokens(session, user.id, AccountTokenPurpose.VERIFY_EMAIL, utcnow())
    await send_verification(session, user, policy)
    record(session, actor, "user.verification_sent", target_type="user", target_id=user.id)


async def _use(session: AsyncSession, token: str, policy: AccountPolicy, *purposes: str) -> tuple[User, str, str]:
    """The user, purpose and address of a valid link's token, now used; InvalidLink for any other."""
    token_id = action_token_id(policy.action_key, token)
    found = None
    if token_id is not None:
        found = await repository.use_token(session, token_id, _hash(token), purposes, utcnow())
    if found is None:
        raise InvalidLink()
    user = await users.get_user(session, found.user_id)
    if not user.is_active:
        raise InvalidLink()
    return user, found.purpose, found.email


async def confirm_email(session: AsyncSession, token: str, policy: AccountPolicy, actor: Actor) -> User:
    """Follow a verification or email-change link: the address is proven (and, for a change, becomes the
    account's address; the old one was told when the change was asked for)."""
    user, purpose, email = await _use(
        session, token, policy, AccountTokenPurpose.VERIFY_EMAIL, AccountTokenPurpose.CHANGE_EMAIL
    )
    now = utcnow()
    actor = actor.as_user(user.id) if actor.id is None else actor
    if purpose == AccountTokenPurpose.VERIFY_EMAIL:
        if email != user.email:
            raise InvalidLink()  # sent to an address the account no longer has
        if user.email_verified_at is None:
            user.email_verified_at = now
            record(session, actor, "user.email_verified", target_type="user", target_id=user.id)
        return user
    before, user.email, user.email_verified_at = user.email, email, now
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise users.EmailTaken() from None
    await repository.retire_tokens(session, user.id, AccountTokenPurpose.RESET_PASSWORD, now)
    record(
        session,
        actor,
        "user.email_changed",
        target_type="user",
        target_id=user.id,
        details={"before": before, "after": email},
    )
    return user


async def request_email_change(
    session: AsyncSession, user_id: str, *, new_email: str, password: str, policy: AccountPolicy, actor: Actor
) -> None:
    """Send a confirmation link to the new address (the change takes effect when it is followed) and a
    notice to the current one. The current password is required."""
    try:
        address = normalise_email(validate_email(new_email.strip(), check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise ValidationFailed(f"Not a valid email address: {exc}", code="invalid_email") from None
    user = await users.get_user(session, user_id)
    if not await anyio.to_thread.run_sync(verify_password, password, user.password_hash):
        raise users.WrongPassword()
    if address == user.email:
        raise EmailChangeSame()
    if await users.email_in_use(session, address):
        raise users.EmailTaken()
    now = utcnow()
    await repository.retire_tokens(session, user.id, AccountTokenPurpose.CHANGE_EMAIL, now)
    token_id = _add_emailed_token(session, user.id, AccountTokenPurpose.CHANGE_EMAIL, address, policy, now)
    mail.enqueue(
        session,
        kind="auth.confirm_email_change",
        recipient=address,
        user_id=user.id,
        context={
            "title": "Confirm your new email address",
            "body": f"Use {address} for your account from now on.",
            "button": "Confirm the new address",
            "footnote": "Until you follow the link, your account keeps its current address. "
            "If you did not ask for this, ignore this email.",
            "action": _action("/confirm-email", token_id),
        },
    )
    mail.enqueue(
        session,
        kind="auth.email_change_requested",
        recipient=user.email,
        user_id=user.id,
        context={
            "title": "Your email address is being changed",
            "body": f"Someone signed in to your account asked to change its address to {address}. "
            "It changes only if the link sent there is followed. If this was not you, change your password now.",
        },
    )
    record(
        session, actor, "user.email_change_requested", target_type="user", target_id=user.id, details={"to": address}
    )


async def request_password_reset(session: AsyncSession, email: str, policy: AccountPolicy, actor: Actor) -> None:
    """Email a reset link to the account with this address, if there is one. The answer and the work are the
    same whether or not it exists: both throttles count, and the token and message are written by statements
    that write no row for an unknown address."""
    address = normalise_email(email)
    per_address = await auth.count_attempt(session, "reset_email", address, RESEND_WINDOW)
    per_client = await auth.count_attempt(session, "reset_client", actor.ip or "unknown", RESEND_WINDOW)
    if per_address > RESETS_PER_ADDRESS or per_client > RESETS_PER_CLIENT:
        raise TooManyRequests(
            "Too many password reset requests; try again in an hour.",
            retry_after=int(RESEND_WINDOW.total_seconds()),
            code="reset_throttled",
        )
    token_id, token_hash = _new_token(policy)
    now = utcnow()
    await repository.add_token_for_active_account(
        session,
        token_id,
        address,
        AccountTokenPurpose.RESET_PASSWORD,
        token_hash,
        now,
        now + timedelta(minutes=policy.reset_minutes),
    )
    await mail.enqueue_if_account(
        session,
        kind="auth.password_reset",
        email=address,
        context={
            "title": "Reset your password",
            "body": "Someone (hopefully you) asked to reset the password of your account. "
            "Choose a new one with the link below.",
            "button": "Choose a new password",
            "footnote": f"The link works once, for {policy.reset_minutes} minutes. Setting a new password signs "
            "you out everywhere. If you did not ask for this, ignore this email: your password stays as it is.",
            "action": _action("/reset-password", token_id),
        },
        now=now,
    )


async def reset_password(
    session: AsyncSession, token: str, new_password: str, policy: AccountPolicy, actor: Actor
) -> User:
    """Set a new password with a reset link's token (single use, within its hour). Every session and token
    of the account ends; the link also proves the address."""
    users.check_password_rule(new_password)  # before the token is used: a refused password keeps the link good
    user, _, email = await _use(session, token, policy, AccountTokenPurpose.RESET_PASSWORD)
    if email != user.email:
        raise InvalidLink()  # the account's address changed since the link was sent
    now = utcnow()
    await users.set_password(session, user, new_password, policy.bcrypt_rounds)
    await repository.retire_tokens(session, user.id, AccountTokenPurpose.RESET_PASSWORD, now)
    if user.email_verified_at is None:
        user.email_verified_at = now
    record(session, actor.as_user(user.id), "user.password_reset", target_type="user", target_id=user.id)
    return user
