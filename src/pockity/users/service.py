"""Accounts: creation, lookup, admin changes."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from pockity.audit.service import Actor, record
from pockity.auth import service as auth
from pockity.billing import service as billing
from pockity.errors import Conflict, Forbidden, NotFound, ValidationFailed
from pockity.kit.pagination import keyset_page
from pockity.kit.passwords import hash_password, verify_password
from pockity.kit.time import utcnow
from pockity.mail import service as mail
from pockity.models import Role, User
from pockity.users import repository
from pockity.users.schemas import NAME_MAX, PASSWORD_MAX, PASSWORD_MIN, UserUpdateIn, normalise_email, normalise_search


class EmailTaken(Conflict):
    code, message = "email_taken", "An account with this email already exists."


class UserNotFound(NotFound):
    code, message = "user_not_found", "User not found."


class WrongPassword(Forbidden):
    code, message = "wrong_password", "The current password is not correct."


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    name: str,
    bcrypt_rounds: int,
    role: Role = Role.USER,
    verified: bool = False,
) -> User:
    """Create an account; the email must not be taken (checked by the unique index, race-safe). `verified`:
    the address needs no emailed proof (an admin made by the operator)."""
    password_hash = await anyio.to_thread.run_sync(hash_password, password, bcrypt_rounds)
    user = User(
        email=normalise_email(email),
        name=name.strip(),
        password_hash=password_hash,
        role=role.value,
        email_verified_at=utcnow() if verified else None,
    )
    repository.add(session, user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise EmailTaken() from None
    # New accounts start on the default tier (if one is configured) as an ACTIVE subscription.
    await billing.start_default(session, user.id)
    await session.refresh(user)
    return user


async def register(
    session: AsyncSession, *, email: str, password: str, name: str, bcrypt_rounds: int, actor: Actor
) -> User:
    """Self-service sign-up."""
    user = await create_user(session, email=email, password=password, name=name, bcrypt_rounds=bcrypt_rounds)
    record(
        session,
        actor.as_user(user.id),
        "user.registered",
        target_type="user",
        target_id=user.id,
    )
    return user


async def ensure_admin(
    session: AsyncSession, *, email: str, password: str, bcrypt_rounds: int, actor: Actor
) -> tuple[User, str]:
    """Create an admin, or promote the existing account with that email (idempotent).

    Returns the user and what happened: "created", "promoted" or "unchanged".
    """
    if len(password) < PASSWORD_MIN:
        raise ValidationFailed(f"The admin password must have at least {PASSWORD_MIN} characters.")
    try:
        validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed(f"Not a valid email address: {exc}", code="invalid_email") from None
    existing = await repository.get_by_email(session, normalise_email(email))
    if existing is None:
        user = await create_user(
            session,
            email=email,
            password=password,
            name="Administrator",
            bcrypt_rounds=bcrypt_rounds,
            role=Role.ADMIN,
            verified=True,
        )
        outcome = "created"
    elif existing.role != Role.ADMIN.value or not existing.is_active:
        existing.role, existing.is_active = Role.ADMIN.value, True
        user, outcome = existing, "promoted"
    else:
        return existing, "unchanged"
    record(session, actor, f"user.admin_{outcome}", target_type="user", target_id=user.id)
    return user, outcome


async def email_in_use(session: AsyncSession, email: str) -> bool:
    return await repository.get_by_email(session, normalise_email(email)) is not None


async def get_user(session: AsyncSession, user_id: str) -> User:
    """One user by id."""
    user = await repository.get(session, user_id)
    if user is None:
        raise UserNotFound()
    return user


async def list_users(
    session: AsyncSession, *, cursor: str | None, limit: int, query: str | None
) -> tuple[Sequence[User], str | None]:
    """Users in id (creation) order, optionally those whose email or name contains `query`."""
    rows = await repository.list_page(
        session,
        after_id=cursor,
        limit=limit + 1,
        query=query,
        email_query=normalise_search(query) if query else None,
    )
    return keyset_page(rows, limit)


async def update_user(session: AsyncSession, user_id: str, changes: UserUpdateIn, actor: Actor) -> User:
    """Admin change of role, active flag or name; an admin cannot lock themselves out."""
    user = await get_user(session, user_id)
    fields = changes.model_dump(exclude_unset=True, exclude_none=True)
    if "disabled" in fields:
        fields["is_active"] = not fields.pop("disabled")
    if user.id == actor.id and (fields.get("is_active") is False or fields.get("role") == Role.USER):
        raise Conflict("You cannot disable or demote your own account.", code="cannot_modify_self")
    before = {k: getattr(user, k) for k in fields}
    for key, value in fields.items():
        setattr(user, key, value.value if isinstance(value, Role) else value)
    if before.get("is_active") is True and user.is_active is False:
        await auth.end_all_sessions(session, user.id)  # enabling again does not bring them back
    record(
        session,
        actor,
        "user.updated",
        target_type="user",
        target_id=user.id,
        details={"before": before, "after": {k: getattr(user, k) for k in fields}},
    )
    return user


async def rename(session: AsyncSession, user_id: str, name: str, actor: Actor) -> User:
    """The user changes their own display name (1 to 200 characters after trimming), audited."""
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise ValidationFailed(f"The name must have 1 to {NAME_MAX} characters.")
    user = await get_user(session, user_id)
    before, user.name = user.name, name
    record(
        session,
        actor,
        "user.renamed",
        target_type="user",
        target_id=user.id,
        details={"before": {"name": before}, "after": {"name": name}},
    )
    return user


async def set_new_sign_in_mail(session: AsyncSession, user_id: str, on: bool, actor: Actor) -> User:
    """The user chooses whether a sign-in from a device the account has not used before is emailed."""
    user = await get_user(session, user_id)
    user.notify_new_sign_in = on
    record(session, actor, "user.sign_in_mail_changed", target_type="user", target_id=user.id, details={"on": on})
    return user


async def change_password(
    session: AsyncSession, user_id: str, *, current: str, new: str, bcrypt_rounds: int, actor: Actor
) -> User:
    """The user sets a new password; the current one must be given (checked with bcrypt in a thread), audited.

    Every session ends and tokens issued before the change stop working once it commits (they also carry a
    stamp of the old password, auth.service.password_stamp); the caller opens a new session if it wants one.
    The owner is emailed."""
    check_password_rule(new)
    user = await get_user(session, user_id)
    if not await anyio.to_thread.run_sync(verify_password, current, user.password_hash):
        raise WrongPassword()
    await set_password(session, user, new, bcrypt_rounds)
    record(session, actor, "user.password_changed", target_type="user", target_id=user.id)
    return user


def check_password_rule(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValidationFailed(f"The new password must have {PASSWORD_MIN} to {PASSWORD_MAX} characters.")


async def set_password(session: AsyncSession, user: User, password: str, bcrypt_rounds: int) -> None:
    """Store a new password (a change or a reset): every session of the user ends, and they get a notice."""
    user.password_hash = await anyio.to_thread.run_sync(hash_password, password, bcrypt_rounds)
    await auth.end_all_sessions(session, user.id)
    at = utcnow()
    mail.enqueue(
        session,
        kind="auth.password_changed",
        user_id=user.id,
        context={
            "title": "Your password was changed",
            "body": f"The password of your account was changed at {at:%Y-%m-%d %H:%M} UTC and every session was "
            "signed out. If this was not you, reset your password now and check your API keys.",
            "at": at.isoformat(),
        },
    )


async def count_users(session: AsyncSession) -> int:
    """Admin: every account, disabled ones included."""
    return await repository.count_all(session)
