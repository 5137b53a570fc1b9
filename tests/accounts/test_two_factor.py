"""Two-factor sign-in: TOTP (RFC 6238) checked against the RFC's own vectors and with a frozen clock; login
becomes two steps, codes work once, recovery codes work once, the second step is throttled, and
REQUIRE_ADMIN_2FA keeps admins without it off admin routes."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.accounts import two_factor
from pockity.kit import totp
from pockity.models import RecoveryCode, User
from tests.accounts.conftest import emailed_token
from tests.fixtures.users import PASSWORD, TestUser, make_admin
from tests.mail.conftest import SmtpServer

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


def test_hotp_matches_rfc_4226_appendix_d() -> None:
    expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
    assert [totp.hotp(RFC_SECRET, counter) for counter in range(10)] == expected


@pytest.mark.parametrize(
    ("unix_time", "eight_digits"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_totp_matches_rfc_6238_appendix_b_sha1(unix_time: int, eight_digits: str) -> None:
    # The RFC lists 8-digit codes; a 6-digit code is the same value mod 10^6.
    assert totp.code_at(RFC_SECRET, unix_time) == eight_digits[-6:]


def test_a_code_matches_its_step_and_its_neighbours_only() -> None:
    now = 1_700_000_000.0
    step = totp.step_at(now)
    assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, now), now) == step
    assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, now - 30), now) == step - 1
    assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, now + 30), now) == step + 1
    assert totp.matching_step(RFC_SECRET, totp.code_at(RFC_SECRET, now - 60), now) is None
    spaced = totp.code_at(RFC_SECRET, now)
    assert totp.matching_step(RFC_SECRET, f"{spaced[:3]} {spaced[3:]}", now) == step
    for bad in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦"):
        assert totp.matching_step(RFC_SECRET, bad, now) is None


def test_the_provisioning_uri_is_what_apps_read() -> None:
    uri = totp.provisioning_uri(RFC_SECRET, "ann@example.com", "Pockity")
    assert uri.startswith("otpauth://totp/Pockity:ann@example.com?")
    assert f"secret={RFC_SECRET}" in uri and "issuer=Pockity" in uri and "period=30" in uri and "digits=6" in uri


class Clock:
    """A frozen clock for the server's TOTP checks (pockity.accounts.two_factor reads utcnow)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: float) -> None:
        self.at = at
        monkeypatch.setattr(two_factor, "utcnow", lambda: datetime.fromtimestamp(self.at, UTC))


async def enable(client: httpx.AsyncClient, user: TestUser, clock: Clock) -> tuple[str, list[str]]:
    setup = await client.post("/api/auth/2fa/setup", headers=user.headers)
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    assert setup.json()["otpauthUri"].startswith("otpauth://totp/")
    r = await client.post("/api/auth/2fa/enable", json={"code": totp.code_at(secret, clock.at)}, headers=user.headers)
    assert r.status_code == 200, r.text
    codes = r.json()["recoveryCodes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    return secret, codes


async def first_step(client: httpx.AsyncClient, email: str) -> str:
    r = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["twoFactorRequired"] is True and "token" not in r.json()
    return str(r.json()["challenge"])


async def second_step(client: httpx.AsyncClient, challenge: str, code: str) -> httpx.Response:
    return await client.post("/api/auth/login/2fa", json={"challenge": challenge, "code": code})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch, float(int(time.time()) // 30 * 30 + 5))


async def test_login_becomes_two_steps_and_a_code_works_once(
    client: httpx.AsyncClient, user: TestUser, clock: Clock
) -> None:
    secret, _ = await enable(client, user, clock)
    clock.at += 30
    challenge = await first_step(client, user.email)
    as_token = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {challenge}"})
    assert as_token.status_code == 401  # a challenge is no access token
    code = totp.code_at(secret, clock.at)
    r = await second_step(client, challenge, code)
    assert r.status_code == 200, r.text
    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {r.json()['token']}"})
    assert me.status_code == 200 and me.json()["twoFactorEnabled"] is True
    replay = await second_step(client, await first_step(client, user.email), code)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "invalid_code"
    clock.at += 30
    assert (await second_step(client, challenge, totp.code_at(secret, clock.at))).status_code == 200


async def test_codes_outside_the_drift_window_are_refused(
    client: httpx.AsyncClient, user: TestUser, clock: Clock
) -> None:
    secret, _ = await enable(client, user, clock)
    clock.at += 300
    challenge = await first_step(client, user.email)
    assert (await second_step(client, challenge, totp.code_at(secret, clock.at - 90))).status_code == 401
    assert (await second_step(client, challenge, totp.code_at(secret, clock.at + 90))).status_code == 401
    assert (await second_step(client, challenge, totp.code_at(secret, clock.at - 30))).status_code == 200


async def test_a_recovery_code_works_once(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, clock: Clock
) -> None:
    _, codes = await enable(client, user, clock)
    challenge = await first_step(client, user.email)
    assert (await second_step(client, challenge, codes[3].upper())).status_code == 200
    again = await second_step(client, challenge, codes[3])
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_code"
    status = await client.get("/api/auth/2fa", headers=user.headers)
    assert status.json() == {"enabled": True, "recoveryCodesLeft": 9}
    async with app.state.db.sessions() as s:
        hashes = (await s.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id))).all()
    assert len(hashes) == 10 and not any(c in h or c.replace("-", "") in h for c in codes for h in hashes)


async def test_wrong_codes_are_throttled_like_passwords(
    client: httpx.AsyncClient, user: TestUser, clock: Clock
) -> None:
    secret, _ = await enable(client, user, clock)
    challenge = await first_step(client, user.email)
    answers = [(await second_step(client, challenge, "000000")).status_code for _ in range(6)]
    assert answers[:5] == [401] * 5 and answers[5] == 429
    clock.at += 30
    blocked = await second_step(client, challenge, totp.code_at(secret, clock.at))
    assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "login_throttled"


async def test_a_challenge_is_bound_to_the_password_it_proved(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, clock: Clock
) -> None:
    secret, _ = await enable(client, user, clock)
    challenge = await first_step(client, user.email)
    assert (await second_step(client, user.token, "123456")).json()["error"]["code"] == "invalid_challenge"
    async with app.state.db.sessions() as s, s.begin():
        row = await s.get(User, user.id)
        assert row is not None
        row.password_hash = row.password_hash[:-1] + ("A" if row.password_hash[-1] != "A" else "B")
    clock.at += 30
    r = await second_step(client, challenge, totp.code_at(secret, clock.at))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_code"


async def test_enabling_needs_a_right_code_and_disabling_the_password_and_a_code(
    client: httpx.AsyncClient, user: TestUser, clock: Clock
) -> None:
    setup = await client.post("/api/auth/2fa/setup", headers=user.headers)
    wrong = await client.post("/api/auth/2fa/enable", json={"code": "000000"}, headers=user.headers)
    assert wrong.status_code == 401
    assert (await client.get("/api/auth/2fa", headers=user.headers)).json()["enabled"] is False
    secret = setup.json()["secret"]
    r = await client.post("/api/auth/2fa/enable", json={"code": totp.code_at(secret, clock.at)}, headers=user.headers)
    assert r.status_code == 200
    twice = await client.post("/api/auth/2fa/setup", headers=user.headers)
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "two_factor_enabled"
    clock.at += 30
    code = totp.code_at(secret, clock.at)
    bad_password = await client.post(
        "/api/auth/2fa/disable", json={"password": "not the password", "code": code}, headers=user.headers
    )
    assert bad_password.status_code == 403
    off = await client.post("/api/auth/2fa/disable", json={"password": PASSWORD, "code": code}, headers=user.headers)
    assert off.status_code == 204, off.text
    plain = await client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert plain.status_code == 200 and "token" in plain.json()


async def test_new_recovery_codes_replace_the_old_ones(client: httpx.AsyncClient, user: TestUser, clock: Clock) -> None:
    secret, old = await enable(client, user, clock)
    clock.at += 30
    r = await client.post(
        "/api/auth/2fa/recovery-codes", json={"code": totp.code_at(secret, clock.at)}, headers=user.headers
    )
    assert r.status_code == 200
    new = r.json()["recoveryCodes"]
    assert set(new).isdisjoint(old)
    challenge = await first_step(client, user.email)
    assert (await second_step(client, challenge, old[0])).status_code == 401
    assert (await second_step(client, challenge, new[0])).status_code == 200


async def test_admins_need_two_factor_when_required(
    strict_app: FastAPI, strict: httpx.AsyncClient, clock: Clock
) -> None:
    admin = await make_admin(strict_app, strict)
    refused = await strict.get("/api/admin/users", headers=admin.headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "two_factor_required"
    secret, _ = await enable(strict, admin, clock)
    clock.at += 30
    challenge = await first_step(strict, admin.email)
    r = await second_step(strict, challenge, totp.code_at(secret, clock.at))
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await strict.get("/api/admin/users", headers=headers)).status_code == 200
    clock.at += 30
    off = await strict.post(
        "/api/auth/2fa/disable", json={"password": PASSWORD, "code": totp.code_at(secret, clock.at)}, headers=headers
    )
    assert off.status_code == 403 and off.json()["error"]["code"] == "two_factor_required"


async def test_a_password_reset_with_two_factor_still_asks_for_the_code(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, clock: Clock, smtp_server: SmtpServer
) -> None:
    secret, _ = await enable(client, user, clock)
    assert (await client.post("/api/auth/password-reset", json={"email": user.email})).status_code == 202
    token = await emailed_token(app, smtp_server, user.email, "Reset your password", "/reset-password")
    r = await client.post("/api/auth/password-reset/confirm", json={"token": token, "newPassword": "a new passphrase!"})
    assert r.status_code == 200 and r.json()["twoFactorRequired"] is True and "token" not in r.json()
    clock.at += 30
    done = await second_step(client, r.json()["challenge"], totp.code_at(secret, clock.at))
    assert done.status_code == 200
