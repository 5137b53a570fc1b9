from __future__ import annotations

from fastapi import APIRouter, Request, status

from pockity.accounts import service as accounts
from pockity.auth import service
from pockity.auth.dependencies import CurrentPrincipal, JwtPrincipal, client_ip, request_actor
from pockity.auth.schemas import (
    LoginIn,
    LoginOut,
    MeKeyOut,
    MeOut,
    PasswordChangeIn,
    SessionOut,
    SignedOutOut,
    TwoFactorChallengeOut,
)
from pockity.db import DatabaseDep, SessionDep
from pockity.users import service as users_service
from pockity.users.schemas import RegisterIn, UserOut

router = APIRouter(prefix="/api/auth", tags=["auth"])
_LOGIN_RESPONSES = {
    401: {"description": "Invalid email or password"},
    429: {"description": "Too many failed logins; see Retry-After"},
}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses={409: {"description": "email_taken"}},
)
async def register(body: RegisterIn, request: Request, session: SessionDep) -> object:
    """Create an account; a link to verify the address is emailed."""
    settings = request.app.state.settings
    user = await users_service.register(
        session,
        email=body.email,
        password=body.password,
        name=body.name,
        bcrypt_rounds=settings.bcrypt_rounds,
        actor=request_actor(request),
    )
    await accounts.send_verification(session, user, request.app.state.account_policy)
    return user


def request_device(request: Request) -> service.Device:
    return service.Device.of(client_ip(request), request.headers.get("user-agent"))


@router.post(
    "/login",
    response_model=LoginOut | TwoFactorChallengeOut,
    responses=_LOGIN_RESPONSES,  # type: ignore[arg-type]
)
async def login(body: LoginIn, request: Request, db: DatabaseDep) -> object:
    """Sign in: a token of a new session. An account with two-factor sign-in answers with a challenge
    instead: send it with a code to POST /api/auth/login/2fa within five minutes."""
    result = await service.login(
        db,
        request.app.state.login_policy,
        email=body.email,
        password=body.password,
        actor=request_actor(request),
        device=request_device(request),
    )
    request.state.user_id = result.user.id
    if result.challenge is not None:
        return TwoFactorChallengeOut(challenge=result.challenge, expires_at=result.expires_at)
    return LoginOut(token=result.token, expires_at=result.expires_at, user=UserOut.model_validate(result.user))


@router.post("/logout", response_model=SignedOutOut)
async def logout(request: Request, principal: JwtPrincipal, session: SessionDep) -> object:
    """End the session of this token (it stops working at once, in every process)."""
    assert principal.session_id is not None
    await service.sign_out(session, principal.user_id, principal.session_id, request_actor(request, principal))
    return SignedOutOut(sessions=1)


@router.get("/sessions", response_model=list[SessionOut])
async def list_sessions(principal: JwtPrincipal, session: SessionDep) -> object:
    """Your open sessions (signed in and not signed out or expired), the most recently used first."""
    rows = await service.list_sessions(session, principal.user_id)
    return [SessionOut.of(row, current=row.id == principal.session_id) for row in rows]


@router.delete(
    "/sessions/{session_id}", response_model=SignedOutOut, responses={404: {"description": "session_not_found"}}
)
async def sign_out_session(session_id: str, request: Request, principal: JwtPrincipal, session: SessionDep) -> object:
    """Sign out one of your sessions (another device); its token stops working at once."""
    await service.sign_out(session, principal.user_id, session_id, request_actor(request, principal))
    return SignedOutOut(sessions=1)


@router.delete("/sessions", response_model=SignedOutOut)
async def sign_out_everywhere(
    request: Request, principal: JwtPrincipal, session: SessionDep, include_current: bool = False
) -> object:
    """Sign out every other session (and this one too with `include_current=true`)."""
    keep = None if include_current else principal.session_id
    count = await service.sign_out_all(session, principal.user_id, request_actor(request, principal), keep=keep)
    return SignedOutOut(sessions=count)


@router.post("/password", response_model=LoginOut, responses={403: {"description": "wrong_password"}})
async def change_password(
    body: PasswordChangeIn, request: Request, principal: JwtPrincipal, session: SessionDep
) -> object:
    """Set a new password (the current one is required). Every token issued before stops working at once, in
    every process; the answer carries a new token for the caller. API keys are not affected."""
    policy = request.app.state.login_policy
    actor = request_actor(request, principal)
    user = await users_service.change_password(
        session,
        principal.user_id,
        current=body.current_password,
        new=body.new_password,
        bcrypt_rounds=policy.bcrypt_rounds,
        actor=actor,
    )
    token, expires_at = await service.start_session(session, user, policy, request_device(request), actor)
    return LoginOut(token=token, expires_at=expires_at, user=UserOut.model_validate(user))


@router.get("/me", response_model=MeOut)
async def me(principal: CurrentPrincipal) -> object:
    key = principal.key
    return MeOut(
        id=principal.user_id,
        email=principal.email,
        name=principal.name,
        role=principal.role,
        is_active=principal.is_active,
        created_at=principal.created_at,
        email_verified=principal.email_verified,
        two_factor_enabled=principal.two_factor,
        auth_method="api_key" if key else "jwt",
        api_key=MeKeyOut(
            id=key.id,
            access_key_id=key.access_key_id,
            name=key.name,
            scopes=sorted(key.scopes),
            prefix=key.prefix,
            tier_id=key.tier_id,
        )
        if key
        else None,
    )
