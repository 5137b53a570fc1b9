"""The embedded default: the same API on SQLite, with no PostgreSQL fixtures involved."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from pockity.migrate import upgrade
from tests.fixtures.app import make_settings, running_app

PASSWORD = "sqlite password 1"


@pytest.fixture(scope="module")
def sqlite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sqlite-default")


@pytest.fixture(scope="module")
async def sqlite_app(sqlite_dir: Path) -> AsyncIterator[FastAPI]:
    url = f"sqlite+aiosqlite:///{sqlite_dir}/p.db"
    upgrade(url)
    async for app in running_app(make_settings(url, sqlite_dir)):
        yield app


@pytest.fixture
async def api(sqlite_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # Unhandled errors come back as 500 responses (as over the network) instead of raising here.
    transport = httpx.ASGITransport(app=sqlite_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://pockity.test") as c:
        yield c


def new_email(tag: str = "lite") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


async def register(api: httpx.AsyncClient, email: str) -> httpx.Response:
    return await api.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "Lite"})


async def login(api: httpx.AsyncClient, email: str) -> dict[str, str]:
    r = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_runs_on_sqlite(sqlite_app: FastAPI, api: httpx.AsyncClient) -> None:
    assert sqlite_app.state.db.engine.dialect.name == "sqlite"
    r = await api.get("/api/open/health")
    assert r.status_code == 200 and r.json()["database"] == "ok"


async def test_register_login_key_revoke_flow(api: httpx.AsyncClient) -> None:
    email = new_email()
    r = await register(api, email)
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    jwt = await login(api, email)

    me = await api.get("/api/auth/me", headers=jwt)
    assert me.status_code == 200
    assert me.json()["id"] == user_id and me.json()["authMethod"] == "jwt"

    created = await api.post("/api/apikeys", json={"name": "lite key", "scopes": ["read"]}, headers=jwt)
    assert created.status_code == 201, created.text
    key = created.json()
    key_headers = {"X-Access-Key-Id": key["accessKeyId"], "X-Secret-Key": key["secretKey"]}

    me = await api.get("/api/auth/me", headers=key_headers)
    assert me.status_code == 200, me.text
    assert me.json()["authMethod"] == "api_key"
    assert me.json()["apiKey"]["id"] == key["id"] and me.json()["apiKey"]["scopes"] == ["read"]

    revoked = await api.delete(f"/api/apikeys/{key['id']}", headers=jwt)
    assert revoked.status_code == 200 and revoked.json()["isActive"] is False

    r = await api.get("/api/auth/me", headers=key_headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "api_key_revoked"


async def test_concurrent_registrations_all_succeed(api: httpx.AsyncClient, sqlite_dir: Path) -> None:
    emails = [new_email(f"burst{i}") for i in range(20)]
    responses = await asyncio.gather(*(register(api, e) for e in emails))
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses if r.status_code != 201]
    assert len({r.json()["id"] for r in responses}) == 20
    with sqlite3.connect(sqlite_dir / "p.db") as conn:
        stored = {row[0] for row in conn.execute("SELECT email FROM users")}
    assert set(emails) <= stored


async def test_concurrent_logins_and_key_checks(api: httpx.AsyncClient) -> None:
    email = new_email()
    assert (await register(api, email)).status_code == 201
    jwt = await login(api, email)
    key = (await api.post("/api/apikeys", json={"name": "k"}, headers=jwt)).json()
    key_headers = {"X-Access-Key-Id": key["accessKeyId"], "X-Secret-Key": key["secretKey"]}
    calls = [api.post("/api/auth/login", json={"email": email, "password": PASSWORD}) for _ in range(10)]
    calls += [api.get("/api/auth/me", headers=key_headers) for _ in range(10)]
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 20


async def test_duplicate_email_is_409(api: httpx.AsyncClient) -> None:
    email = new_email()
    assert (await register(api, email)).status_code == 201
    r = await register(api, email.upper())
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "email_taken"


async def test_concurrent_duplicates_give_one_201_and_409s(api: httpx.AsyncClient, sqlite_dir: Path) -> None:
    email = new_email("race")
    responses = await asyncio.gather(*(register(api, email) for _ in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    with sqlite3.connect(sqlite_dir / "p.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM users WHERE email = ?", (email,)).fetchone()
    assert count == 1


async def test_money_and_renewals_on_sqlite(sqlite_app: FastAPI, api: httpx.AsyncClient) -> None:
    """The payments path on the embedded default: credits, paying from them, a renewal by the job, PAST_DUE."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from pockity.billing.tasks import apply_period_ends
    from pockity.kit.jobs import JobContext
    from pockity.kit.time import utcnow
    from pockity.models import CreditAccount, CreditEntry, Subscription
    from tests.fixtures.users import make_admin, make_user

    user = await make_user(api, "lite-pay")
    admin = await make_admin(sqlite_app, api)
    r = await api.post(
        f"/api/admin/users/{user.id}/credits", json={"amountCents": 1000, "reason": "x"}, headers=admin.headers
    )
    assert r.status_code == 201 and r.json()["balanceCents"] == 1000
    req = await api.post("/api/tier-requests", json={"tierId": "tier_starter", "reason": "r"}, headers=user.headers)
    approved = await api.patch(
        f"/api/tier-requests/admin/{req.json()['id']}/approve", json={"approved": True}, headers=admin.headers
    )
    invoice_id = approved.json()["invoiceId"]
    r = await api.post(f"/api/billing/invoices/{invoice_id}/pay-with-credits", headers=user.headers)
    assert r.status_code == 200 and r.json()["status"] == "PAID", r.text
    r = await api.patch("/api/billing/subscription", json={"autoRenewFromCredits": True}, headers=user.headers)
    sub_id = r.json()["id"]
    ctx = JobContext(db=sqlite_app.state.db, storage=sqlite_app.state.storage, settings=sqlite_app.state.settings)

    async def end_period() -> None:
        async with sqlite_app.state.db.sessions() as s, s.begin():
            await s.execute(
                update(Subscription)
                .where(Subscription.user_id == user.id, Subscription.is_current.is_(True))
                .values(current_period_end=utcnow() - timedelta(seconds=1))
            )

    await end_period()
    assert await asyncio.gather(apply_period_ends(ctx), apply_period_ends(ctx)) in ([1, 0], [0, 1])
    sub = (await api.get("/api/billing/subscription", headers=user.headers)).json()["current"]
    assert (sub["id"], sub["status"]) == (sub_id, "ACTIVE")
    assert (await api.get("/api/billing/credits", headers=user.headers)).json()["balanceCents"] == 0
    await end_period()  # nothing left for another month
    assert await apply_period_ends(ctx) == 1
    sub = (await api.get("/api/billing/subscription", headers=user.headers)).json()["current"]
    assert sub["status"] == "PAST_DUE" and sub["graceEndsAt"]
    r = await api.put("/api/storage/files/a.txt", content=b"x", headers=user.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (402, "subscription_past_due")
    async with sqlite_app.state.db.sessions() as s:
        total = sum((await s.scalars(select(CreditEntry.amount_cents).where(CreditEntry.user_id == user.id))).all())
        account = await s.scalar(select(CreditAccount.balance_cents).where(CreditAccount.user_id == user.id))
    assert total == account == 0
