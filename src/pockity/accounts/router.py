"""Account life cycle routes under /api/auth: email verification and change, password reset, two-factor
sign-in. The links in emails open console pages, which call the same services."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from pockity.accounts import service, two_factor
from pockity.accounts.schemas import (
    AcceptedOut,
    AccountOut,
    AccountUpdateIn,
    CodeIn,
    EmailChangeIn,
    PasswordResetIn,
    PasswordResetRequestIn,
    RecoveryCodesOut,
    SecondStepIn,
    TokenIn,
    TwoFactorDisableIn,
    TwoFactorSetupOut,
    TwoFactorStatusOut,
)
from pockity.auth import service as auth
from pockity.auth.dependencies import JwtPrincipal, request_actor
from pockity.auth.router import request_device
from pockity.auth.schemas import LoginOut, TwoFactorChallengeOut
from pockity.db import DatabaseDep, SessionDep
from pockity.openapi import CONFLICT
from pockity.users import service as users
from pockity.users.schemas import UserOut

router = APIRouter(prefix="/api/auth", tags=["accounts"], responses=CONFLICT)
Responses = dict[int | str, dict[str, Any]]
_INVALID_LINK: Responses = {403: {"description": "invalid_link: unknown, used or expired"}}
_THROTTLED: Responses = {429: {"description": "Too many requests; see Retry-After"}}
_BAD_CODE: Responses = {401: {"description": "invalid_code"}}
RESET_ANSWER = "If an account has this address, a link to choose a new password is on its way."


@router.patch("/me", response_model=AccountOut)
async def update_account(
    body: AccountUpdateIn, request: Request, principal: JwtPrincipal, session: SessionDep
) -> object:
    """Change your name, or whether a sign-in from a device your account has not used before is emailed to
    you (`notifyNewSignIn`, off by default)."""
    actor = request_actor(request, principal)
    user = await users.get_user(session, principal.user_id)
    if body.name is not None:
        user = await users.rename(session, principal.user_id, body.name, actor)
    if body.notify_new_sign_in is not None:
        user = await users.set_new_sign_in_mail(session, principal.user_id, body.notify_new_sign_in, actor)
    return AccountOut.model_validate(user)


@router.post("/verify-email", response_model=UserOut, responses=_INVALID_LINK)
async def verify_email(body: TokenIn, request: Request, session: SessionDep) -> object:
    """Follow a verification or email-change link (its token): the address is proven, or becomes the
    account's address. Works once."""
    return await service.confirm_email(session, body.token, request.app.state.account_policy, request_actor(request))


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
    responses={409: {"description": "email_already_verified"}, **_THROTTLED},
)
async def resend_verification(request: Request, principal: JwtPrincipal, session: SessionDep) -> object:
    """Send a new verification link (a few per hour); earlier links stop working."""
    policy = request.app.state.account_policy
    await service.resend_verification(session, principal.user_id, policy, request_actor(request, principal))
    return AcceptedOut(message="A new verification link is on its way.")


@router.post("/email", status_code=status.HTTP_202_ACCEPTED, response_model=AcceptedOut)
async def change_email(body: EmailChangeIn, request: Request, principal: JwtPrincipal, session: SessionDep) -> object:
    """Ask to change your address (the current password is needed): it changes when the link sent to the new
    address is followed; the current address is told."""
    await service.request_email_change(
        session,
        principal.user_id,
        new_email=body.new_email,
        password=body.password,
        policy=request.app.state.account_policy,
        actor=request_actor(request, principal),
    )
    return AcceptedOut(message="Follow the link sent to the new address to finish the change.")


@router.post("/password-reset", status_code=status.HTTP_202_ACCEPTED, response_model=AcceptedOut, responses=_THROTTLED)
async def request_password_reset(body: PasswordResetRequestIn, request: Request, session: SessionDep) -> object:
    """Email a reset link valid for an hour. The answer is the same whether or not the address has an
    account; requests are throttled per address and per client."""
    await service.request_password_reset(session, body.email, request.app.state.account_policy, request_actor(request))
    return AcceptedOut(message=RESET_ANSWER)


@router.post(
    "/password-reset/confirm",
    response_model=LoginOut | TwoFactorChallengeOut,
    responses=_INVALID_LINK,
)
async def reset_password(body: PasswordResetIn, request: Request, session: SessionDep) -> object:
    """Set a new password with a reset link's token; every earlier session ends and the answer signs you in
    (or, with two-factor sign-in, gives the challenge for the code)."""
    policy = request.app.state.account_policy
    actor = request_actor(request)
    user = await service.reset_password(session, body.token, body.new_password, policy, actor)
    login_policy = request.app.state.login_policy
    if user.totp_enabled_at is not None:
        challenge, expires_at = auth.issue_challenge(user, login_policy)
        return TwoFactorChallengeOut(challenge=challenge, expires_at=expires_at)
    token, expires_at = await auth.start_session(
        session, user, login_policy, request_device(request), actor.as_user(user.id)
    )
    return LoginOut(token=token, expires_at=expires_at, user=UserOut.model_validate(user))


@router.post("/login/2fa", response_model=LoginOut, responses={**_BAD_CODE, **_THROTTLED})
async def login_second_step(body: SecondStepIn, request: Request, db: DatabaseDep) -> object:
    """The second step of a login with two-factor sign-in: the challenge and a code from the app (or a
    recovery code, which then stops working)."""
    state = request.app.state
    user, token, expires_at = await two_factor.second_step(
        db,
        state.login_policy,
        state.keyring,
        challenge=body.challenge,
        code=body.code,
        device=request_device(request),
        actor=request_actor(request),
    )
    request.state.user_id = user.id
    return LoginOut(token=token, expires_at=expires_at, user=UserOut.model_validate(user))


@router.get("/2fa", response_model=TwoFactorStatusOut)
async def two_factor_status(principal: JwtPrincipal, session: SessionDep) -> object:
    return TwoFactorStatusOut(
        enabled=principal.two_factor, recovery_codes_left=await two_factor.codes_left(session, principal.user_id)
    )


@router.post("/2fa/setup", response_model=TwoFactorSetupOut, responses={409: {"description": "two_factor_enabled"}})
async def two_factor_setup(request: Request, principal: JwtPrincipal, session: SessionDep) -> object:
    """A new secret for an authenticator app (as text and as an otpauth:// URI for a QR code). Nothing
    changes at sign-in until POST /api/auth/2fa/enable confirms a code from the app."""
    state = request.app.state
    setup = await two_factor.begin_setup(session, principal.user_id, state.keyring, state.settings.product_name)
    return TwoFactorSetupOut(secret=setup.secret, otpauth_uri=setup.uri)


@router.post("/2fa/enable", response_model=RecoveryCodesOut, responses=_BAD_CODE)
async def two_factor_enable(body: CodeIn, request: Request, principal: JwtPrincipal, session: SessionDep) -> object:
    """Turn two-factor sign-in on with a first code from the app; the answer holds ten recovery codes, shown
    only this once."""
    codes = await two_factor.enable(
        session, principal.user_id, body.code, request.app.state.keyring, request_actor(request, principal)
    )
    return RecoveryCodesOut(recovery_codes=codes)


@router.post("/2fa/disable", status_code=status.HTTP_204_NO_CONTENT, responses=_BAD_CODE)
async def two_factor_disable(
    body: TwoFactorDisableIn, request: Request, principal: JwtPrincipal, session: SessionDep
) -> None:
    """Turn two-factor sign-in off: the password and a code (or a recovery code). Refused for admins when
    REQUIRE_ADMIN_2FA is on."""
    state = request.app.state
    await two_factor.disable(
        session,
        principal.user_id,
        password=body.password,
        code=body.code,
        keyring=state.keyring,
        admins_must_use_it=state.settings.require_admin_2fa,
        actor=request_actor(request, principal),
    )


@router.post("/2fa/recovery-codes", response_model=RecoveryCodesOut, responses=_BAD_CODE)
async def two_factor_new_codes(body: CodeIn, request: Request, principal: JwtPrincipal, session: SessionDep) -> object:
    """Replace the recovery codes (a current code from the app is needed)."""
    codes = await two_factor.new_recovery_codes(
        session, principal.user_id, body.code, request.app.state.keyring, request_actor(request, principal)
    )
    return RecoveryCodesOut(recovery_codes=codes)
