from __future__ import annotations

from fastapi import APIRouter, Request, status

from pockity.auth import service
from pockity.auth.dependencies import CurrentPrincipal, JwtPrincipal, request_actor
from pockity.auth.schemas import LoginIn, LoginOut, MeKeyOut, MeOut, PasswordChangeIn
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
    settings = request.app.state.settings
    return await users_service.register(
        session,
        email=body.email,
        password=body.password,
        name=body.name,
        bcrypt_rounds=settings.bcrypt_rounds,
        actor=request_actor(request),
    )


@router.post("/login", response_model=LoginOut, responses=_LOGIN_RESPONSES)  # type: ignore[arg-type]
async def login(body: LoginIn, request: Request, db: DatabaseDep) -> object:
    result = await service.login(
        db,
        request.app.state.login_policy,
        email=body.email,
        password=body.password,
        actor=request_actor(request),
    )
    request.state.user_id = result.user.id
    return LoginOut(token=result.token, expires_at=result.expires_at, user=UserOut.model_validate(result.user))


@router.post("/password", response_model=LoginOut, responses={403: {"description": "wrong_password"}})
async def change_password(
    body: PasswordChangeIn, request: Request, principal: JwtPrincipal, session: SessionDep
) -> object:
    """Set a new password (the current one is required). Every token issued before stops working at once, in
    every process; the answer carries a new token for the caller. API keys are not affected."""
    policy = request.app.state.login_policy
    user = await users_service.change_password(
        session,
        principal.user_id,
        current=body.current_password,
        new=body.new_password,
        bcrypt_rounds=policy.bcrypt_rounds,
        actor=request_actor(request, principal),
    )
    token, expires_at = service.issue_session_token(user, policy)
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
