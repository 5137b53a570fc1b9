"""Signed tokens with absurd time claims (exp/iat/nbf beyond year 9999 or time_t, floats, NaN, strings) are a
401, never a 500 or a dropped connection. Forging one needs the secret, but no input may crash a request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from pockity.kit import jwt
from tests.fixtures.app import TEST_JWT_SECRET
from tests.fixtures.users import TestUser

NOW = int(time.time())
# Raw JSON text, so values json.dumps would not write (NaN, 1e999, 400-digit integers) reach the server.
ABSURD = [
    "253402300800",  # 10000-01-01, one past what datetime holds
    "99999999999999",
    "9223372036854775807",  # 2**63 - 1
    "18446744073709551616",  # 2**64
    "1" + "0" * 400,
    "-1" + "0" * 400,
    "-62135596801",  # before year 1
    "1e308",
    "1e999",  # infinity
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "1.5e20",
    "true",
    "null",
    '"2000000000"',
    "[2000000000]",
    "{}",
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def own(user: TestUser) -> dict[str, str]:
    """The user's password stamp and session id as raw JSON (from their real token), so only the claim under
    test differs."""
    payload = user.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {"pwd": json.dumps(claims["pwd"]), "sid": json.dumps(claims["sid"])}


def signed(sub: str, **raw_claims: str) -> str:
    """An HS256 token signed with the test secret, with claims given as raw JSON text."""
    values = {"sub": json.dumps(sub), "role": '"USER"', "iss": '"pockity"', "iat": str(NOW - 10), "exp": str(NOW + 600)}
    values.update(raw_claims)
    payload = "{" + ",".join(f'"{k}":{v}' for k, v in values.items()) + "}"
    head = b64url(b'{"alg":"HS256","typ":"JWT"}') + "." + b64url(payload.encode())
    sig = hmac.new(TEST_JWT_SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + b64url(sig)


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://pockity.test") as c:
        yield c


async def test_the_control_token_is_accepted(api: httpx.AsyncClient, user: TestUser) -> None:
    r = await api.get("/api/auth/me", headers={"Authorization": f"Bearer {signed(user.id, **own(user))}"})
    assert r.status_code == 200 and r.json()["id"] == user.id, r.text


async def test_absurd_time_claims_are_401(api: httpx.AsyncClient, user: TestUser, subtests: pytest.Subtests) -> None:
    for claim in ("exp", "iat", "nbf"):
        for value in ABSURD:
            with subtests.test(claim=claim, value=value[:30]):
                token = signed(user.id, **own(user), **{claim: value})
                r = await api.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 401, r.text
                assert r.json()["error"]["code"] in ("invalid_token", "token_expired"), r.text


def test_decode_raises_only_token_errors(subtests: pytest.Subtests) -> None:
    for claim in ("exp", "iat", "nbf"):
        for value in ABSURD:
            with subtests.test(claim=claim, value=value[:30]), pytest.raises(jwt.TokenError):
                jwt.decode_token(signed("someone", **{claim: value}), TEST_JWT_SECRET)


def test_ordinary_times_still_decode() -> None:
    now = int(time.time())  # not the module's NOW: the suite may reach this test more than a minute later
    claims = jwt.decode_token(signed("someone", nbf=str(now - 5), exp=str(now + 60)), TEST_JWT_SECRET)
    assert claims.sub == "someone" and int(claims.expires_at.timestamp()) == now + 60
    with pytest.raises(jwt.TokenExpired):
        jwt.decode_token(signed("someone", iat=str(now - 120), exp=str(now - 60)), TEST_JWT_SECRET)
    with pytest.raises(jwt.TokenError):
        jwt.decode_token(signed("someone", nbf=str(now + 3600)), TEST_JWT_SECRET)  # not valid yet
    with pytest.raises(jwt.TokenError):
        jwt.decode_token(signed("someone", iat=str(now + 3600)), TEST_JWT_SECRET)  # issued in the future
