"""The admin console's overview and user pages: figures from the services, actions through the admin API's
services (so audited alike), refusals for non-admins, bad ids as 404 pages, user text escaped."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy import event, update

from pockity.console import admin_users
from pockity.kit.time import utcnow
from pockity.models import Payment
from tests.console.helpers import console_login, csrf, csrf_of, post
from tests.console.test_journeys import CHROMIUM, log_in, shot
from tests.fixtures.server import running_server, server_env
from tests.fixtures.users import PASSWORD, TestUser, login, make_key

XSS = "<img src=x onerror=alert(1)>"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


def stat(page: httpx.Response, name: str) -> str:
    """The figure of one overview tile, tags stripped."""
    match = re.search(rf'id="stat-{name}"><dt>[^<]*</dt>\s*<dd>(.*?)</dd>', page.text, re.S)
    assert match, page.text[:2000]
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def section(page: httpx.Response, heading_id: str) -> str:
    start = page.text.index(f'id="{heading_id}"')
    return page.text[start : page.text.index("</section>", start)]


async def register(client: httpx.AsyncClient, name: str) -> TestUser:
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    r = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": name})
    assert r.status_code == 201, r.text
    token = await login(client, email)
    return TestUser(r.json()["id"], email, PASSWORD, token, {"Authorization": f"Bearer {token}"})


async def store(client: httpx.AsyncClient, who: TestUser, name: str, size: int) -> None:
    r = await client.put(f"/api/storage/files/{name}", content=b"x" * size, headers=who.headers)
    assert r.status_code == 201, r.text


async def audit(client: httpx.AsyncClient, admin: TestUser, action: str, target: str) -> list[dict[str, Any]]:
    r = await client.get("/api/admin/audit", params={"action": action, "target": target}, headers=admin.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


async def detail(client: httpx.AsyncClient, admin: TestUser, user_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/admin/users/{user_id}", headers=admin.headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def act(client: httpx.AsyncClient, user_id: str, action: str, data: dict[str, str]) -> httpx.Response:
    """A form on the user's page, sent with that page's token."""
    return await post(client, f"/admin/users/{user_id}/{action}", data, f"/admin/users/{user_id}")


# --- who may see them ---------------------------------------------------------------------------------------


async def test_every_new_page_and_action_refuses_a_normal_user(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser, admin: TestUser
) -> None:
    key = await make_key(client, other_user)
    await console_login(client, user.email, user.password)
    base = f"/admin/users/{other_user.id}"
    for path in ("/admin", "/admin/users", "/admin/users?q=bob", base, f"{base}/keys/{key['id']}/revoke"):
        page = await client.get(path)
        assert page.status_code == 403 and "This page is for administrators." in page.text, path
    token = await csrf(client, "/")
    forms = {
        "state": {"disabled": "true"},
        "role": {"role": "ADMIN"},
        "tier": {"tier_id": "tier_pro"},
        "credits": {"amount": "5", "note": "free money"},
        f"keys/{key['id']}/revoke": {},
    }
    for action, data in forms.items():
        r = await client.post(f"{base}/{action}", data={**data, "csrf_token": token})
        assert r.status_code == 403 and "This page is for administrators." in r.text, action
    after = await detail(client, admin, other_user.id)
    assert after["user"]["isActive"] is True and after["user"]["role"] == "USER"
    assert after["tier"]["id"] == "tier_free" and after["credits"] == {}
    assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 200


async def test_the_admin_nav_link_opens_the_overview(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    await console_login(client, user.email, user.password)
    assert 'href="/admin"' not in (await client.get("/")).text
    await console_login(client, admin.email, admin.password)
    home = await client.get("/")
    assert '<a href="/admin" >Admin</a>' in home.text
    page = await client.get("/admin")
    assert page.status_code == 200 and "<h1>Admin</h1>" in page.text
    assert '<a href="/admin" aria-current="page">Admin</a>' in page.text


# --- the overview -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_tiers")
async def test_overview_figures_match_what_was_stored_requested_and_paid(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser, admin: TestUser
) -> None:
    # A private tier of five files. Alice stores four on it (80 %: near), bob three (60 %: not near); carol
    # stored six on the free tier before being moved to it (over). The admin stores nothing.
    tier = await client.post(
        "/api/tiers/admin",
        json={"name": f"Tiny {uuid.uuid4().hex[:6]}", "storageGb": 1, "maxObjects": 5, "isPublic": False},
        headers=admin.headers,
    )
    assert tier.status_code == 201, tier.text
    carol = await register(client, "carol")
    for i in range(6):
        await store(client, carol, f"c{i}.bin", 100)
    for who in (user, other_user, carol):
        r = await client.put(
            f"/api/admin/users/{who.id}/tier", json={"tierId": tier.json()["id"]}, headers=admin.headers
        )
        assert r.status_code == 200, r.text
    for i, size in enumerate((1000, 2000, 500, 500)):
        await store(client, user, f"a{i}.bin", size)
    for i in range(3):
        await store(client, other_user, f"b{i}.bin", 500)
    # One pending tier request; two top-up invoices, one paid by hand (revenue), one left open.
    r = await client.post("/api/tier-requests", json={"tierId": "tier_starter", "reason": "room"}, headers=user.headers)
    assert r.status_code == 201, r.text
    paid = await client.post("/api/billing/credits/top-up", json={"amountCents": 1234}, headers=user.headers)
    unpaid = await client.post("/api/billing/credits/top-up", json={"amountCents": 500}, headers=other_user.headers)
    assert paid.status_code == unpaid.status_code == 201
    r = await client.patch(
        f"/api/admin/invoices/{paid.json()['id']}", json={"status": "PAID", "note": "bank"}, headers=admin.headers
    )
    assert r.status_code == 200 and r.json()["status"] == "PAID", r.text

    await console_login(client, admin.email, admin.password)
    page = await client.get("/admin")
    assert page.status_code == 200
    assert stat(page, "users") == "4"  # alice, bob, carol and the admin
    assert stat(page, "bytes") == "6.0 KiB"  # 600 + 4,000 + 1,500 = 6,100 bytes
    assert stat(page, "files") == "13"
    assert stat(page, "requests") == "1"
    assert stat(page, "invoices") == "1"
    assert stat(page, "revenue") == "12.34 USD"
    assert f"Revenue in {utcnow().strftime('%B %Y')}" in page.text
    near = section(page, "near-h")
    rows = {m.group(1): m.group(0) for m in re.finditer(r'<a href="/admin/users/(\w+)">.*?</tr>', near, re.S)}
    assert set(rows) == {user.id, carol.id}
    assert user.email in rows[user.id] and "Tiny" in rows[user.id] and "4 of 5" in rows[user.id]
    assert "Near quota" in rows[user.id] and '<span class="flag warn">80.0 %</span>' in rows[user.id]
    assert "Over quota" in rows[carol.id] and "6 of 5" in rows[carol.id]


async def test_revenue_counts_this_months_money_net_of_refunds(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    paid = []
    for cents in (1234, 5000, 700):
        invoice = await client.post("/api/billing/credits/top-up", json={"amountCents": cents}, headers=user.headers)
        assert invoice.status_code == 201, invoice.text
        r = await client.patch(
            f"/api/admin/invoices/{invoice.json()['id']}", json={"status": "PAID"}, headers=admin.headers
        )
        assert r.status_code == 200, r.text
        paid.append(invoice.json()["id"])
    # No API moves money in time or refunds a manual payment: the rows are set as a refund and last month would.
    month_start = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    async with app.state.db.sessions() as session, session.begin():
        moved = await session.execute(
            update(Payment).where(Payment.invoice_id == paid[1]).values(resolved_at=month_start - timedelta(seconds=1))
        )
        refunded = await session.execute(
            update(Payment).where(Payment.invoice_id == paid[2]).values(refunded_cents=200)
        )
        assert moved.rowcount == refunded.rowcount == 1  # type: ignore[attr-defined]
    await console_login(client, admin.email, admin.password)
    assert stat(await client.get("/admin"), "revenue") == "17.34 USD"  # 12.34 + (7.00 - 2.00); not last month's 50


async def test_an_empty_overview_shows_zeroes(client: httpx.AsyncClient, admin: TestUser) -> None:
    await console_login(client, admin.email, admin.password)
    page = await client.get("/admin")
    assert stat(page, "users") == "1" and stat(page, "files") == "0" and stat(page, "bytes") == "0 B"
    assert stat(page, "requests") == "0" and stat(page, "invoices") == "0" and stat(page, "revenue") == "0.00 USD"
    assert "Nobody is at 80 % of their quota." in page.text


# --- the user list ------------------------------------------------------------------------------------------


async def test_search_finds_a_user_by_email_or_name_and_no_one_else(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser, admin: TestUser
) -> None:
    await console_login(client, admin.email, admin.password)
    everyone = await client.get("/admin/users")
    assert everyone.status_code == 200
    for person in (user, other_user, admin):
        assert f'href="/admin/users/{person.id}"' in everyone.text
    by_email = await client.get("/admin/users", params={"q": user.email.upper()})
    assert f'href="/admin/users/{user.id}"' in by_email.text
    assert f'href="/admin/users/{other_user.id}"' not in by_email.text
    assert f'href="/admin/users/{admin.id}"' not in by_email.text
    by_name = await client.get("/admin/users", params={"q": "bob"})
    assert f'href="/admin/users/{other_user.id}"' in by_name.text
    assert f'href="/admin/users/{user.id}"' not in by_name.text
    nobody = await client.get("/admin/users", params={"q": "no-such-person"})
    assert nobody.status_code == 200 and "No user matches “no-such-person”." in nobody.text


async def test_the_list_shows_tier_usage_role_and_state(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser, admin: TestUser
) -> None:
    await store(client, user, "photo.jpg", 2048)
    r = await client.patch(f"/api/admin/users/{other_user.id}", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 200, r.text
    await console_login(client, admin.email, admin.password)
    page = await client.get("/admin/users")
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<tr>\s*<td class="wrap"><a href="/admin/users/(\w+)">.*?</tr>', page.text, re.S)
    }
    assert set(rows) == {user.id, other_user.id, admin.id}
    assert "Free" in rows[user.id] and "2.0 KiB" in rows[user.id] and ">1 <" in rows[user.id]
    assert "<td>User</td>" in rows[user.id] and "<td>Active</td>" in rows[user.id]
    assert "Disabled" in rows[other_user.id] and "<td>Admin</td>" in rows[admin.id]


async def test_the_list_pages_with_a_cursor(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser, admin: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_users, "PAGE_SIZE", 2)
    await console_login(client, admin.email, admin.password)
    seen = []
    url: str | None = "/admin/users"
    while url:
        page = await client.get(url)
        assert page.status_code == 200
        seen += re.findall(r'<a href="/admin/users/(\w+)">', page.text)
        nxt = re.search(r'<a href="(/admin/users\?cursor=[^"]+)">Next page</a>', page.text)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert seen == sorted([user.id, other_user.id, admin.id])  # id order, each once


async def test_the_list_costs_the_same_queries_for_more_users(
    app: FastAPI, client: httpx.AsyncClient, admin: TestUser
) -> None:
    """One query for the page, not one per user (the page must stay fast with 10,000 users)."""

    @contextmanager
    def counting() -> Iterator[list[str]]:
        statements: list[str] = []

        def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        engine = app.state.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            yield statements
        finally:
            event.remove(engine, "before_cursor_execute", seen)

    await console_login(client, admin.email, admin.password)
    for i in range(2):
        await register(client, f"first {i}")
    with counting() as few:
        assert (await client.get("/admin/users")).status_code == 200
    for i in range(8):
        who = await register(client, f"more {i}")
        await store(client, who, "f.txt", 10)
    with counting() as many:
        page = await client.get("/admin/users")
    assert page.text.count('<a href="/admin/users/') == 11
    assert len(many) == len(few) and sum("FROM users" in s for s in many) == 1, many


# --- actions on one user ------------------------------------------------------------------------------------


async def test_disable_refuses_the_users_token_and_key_then_enable_restores_the_key(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    key = await make_key(client, user)
    assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200
    await console_login(client, admin.email, admin.password)
    r = await act(client, user.id, "state", {"disabled": "true"})
    assert r.status_code == 303 and r.headers["location"] == f"/admin/users/{user.id}?done=disabled"
    page = await client.get(r.headers["location"])
    assert "The account is disabled" in page.text and "Enable account" in page.text
    for headers in (user.headers, key["headers"]):
        assert (await client.get("/api/auth/me", headers=headers)).status_code in (401, 403)
    entries = await audit(client, admin, "user.updated", user.id)
    assert len(entries) == 1 and entries[0]["actorId"] == admin.id
    assert entries[0]["details"] == {"before": {"is_active": True}, "after": {"is_active": False}}

    r = await act(client, user.id, "state", {"disabled": "false"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=enabled")
    assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 200
    # Disabling ended the user's sessions for good: the old token stays refused, a new login works.
    gone = await client.get("/api/auth/me", headers=user.headers)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "session_ended"
    fresh = await login(client, user.email, user.password)
    assert (await client.get("/api/auth/me", headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
    assert (await detail(client, admin, user.id))["user"]["isActive"] is True
    assert len(await audit(client, admin, "user.updated", user.id)) == 2


async def test_an_admin_cannot_disable_or_demote_themselves(client: httpx.AsyncClient, admin: TestUser) -> None:
    await console_login(client, admin.email, admin.password)
    for action, data in (("state", {"disabled": "true"}), ("role", {"role": "USER"})):
        r = await act(client, admin.id, action, data)
        assert r.status_code == 409, action
        assert '<p class="alert error" role="alert">You cannot disable or demote your own account.</p>' in r.text
    me = await detail(client, admin, admin.id)
    assert me["user"]["isActive"] is True and me["user"]["role"] == "ADMIN"
    assert await audit(client, admin, "user.updated", admin.id) == []


async def test_role_change_makes_a_user_an_admin_and_back(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    assert (await client.get("/api/admin/users", headers=user.headers)).status_code == 403
    await console_login(client, admin.email, admin.password)
    r = await act(client, user.id, "role", {"role": "ADMIN"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=role")
    assert (await detail(client, admin, user.id))["user"]["role"] == "ADMIN"
    assert (await client.get("/api/admin/users", headers=user.headers)).status_code == 200
    r = await act(client, user.id, "role", {"role": "USER"})
    assert r.status_code == 303
    assert (await detail(client, admin, user.id))["user"]["role"] == "USER"
    assert (await client.get("/api/admin/users", headers=user.headers)).status_code == 403
    entries = await audit(client, admin, "user.updated", user.id)
    assert [e["details"]["after"] for e in entries] == [{"role": "USER"}, {"role": "ADMIN"}]  # newest first
    bad = await act(client, user.id, "role", {"role": "OWNER"})
    assert bad.status_code == 422 and "Some fields are missing or not valid." in bad.text


async def test_assign_tier_shows_in_the_admin_api_and_on_the_page(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    await console_login(client, admin.email, admin.password)
    r = await act(client, user.id, "tier", {"tier_id": "tier_pro"})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=tier")
    shown = await detail(client, admin, user.id)
    assert shown["tier"]["id"] == "tier_pro" and shown["subscription"]["status"] == "ACTIVE"
    page = await client.get(r.headers["location"])
    assert '<p class="tier" id="current-tier">Pro</p>' in page.text
    entries = await audit(client, admin, "subscription.assigned", user.id)
    assert len(entries) == 1 and entries[0]["actorId"] == admin.id
    assert entries[0]["details"]["after"]["tierId"] == "tier_pro"
    unknown = await act(client, user.id, "tier", {"tier_id": "no_such_tier"})
    assert unknown.status_code == 404 and "Tier not found." in unknown.text
    assert (await detail(client, admin, user.id))["tier"]["id"] == "tier_pro"


async def test_grant_credits_changes_the_balance_once_per_form(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    await console_login(client, admin.email, admin.password)
    form_page = await client.get(f"/admin/users/{user.id}")
    key = re.search(r'name="idempotency_key" value="([^"]+)"', form_page.text)
    assert key
    data = {
        "amount": "12.50",
        "note": f"sorry {XSS}",
        "idempotency_key": key.group(1),
        "csrf_token": csrf_of(form_page),
    }
    r = await client.post(f"/admin/users/{user.id}/credits", data=data)
    assert r.status_code == 303 and r.headers["location"].endswith("?done=credits")
    again = await client.post(f"/admin/users/{user.id}/credits", data=data)  # the same form sent twice
    assert again.status_code == 303
    credits = await client.get(f"/api/admin/users/{user.id}/credits", headers=admin.headers)
    assert credits.json()["balanceCents"] == 1250 and len(credits.json()["entries"]) == 1
    entries = await audit(client, admin, "credits.granted", user.id)
    assert len(entries) == 1 and entries[0]["details"]["amountCents"] == 1250
    page = await client.get(f"/admin/users/{user.id}")
    assert "12.50 USD" in page.text and XSS not in page.text and f"sorry {XSS_ESCAPED}" in page.text
    for amount, status, sentence in (
        ("abc", 422, "Amount: enter a number with at most two decimals, like 12.50."),
        ("1.234", 422, "Amount: enter a number with at most two decimals, like 12.50."),
        ("1e30", 422, "Amount: enter a number with at most two decimals, like 12.50."),
        ("NaN", 422, "Amount: enter a number with at most two decimals, like 12.50."),
        ("2000000", 422, "Amount: Input should be less than or equal to 100000000."),
        ("-5", 422, "Amount: Input should be greater than 0."),
    ):
        r = await act(client, user.id, "credits", {"amount": amount, "note": "x"})
        assert r.status_code == status and sentence in r.text, (amount, r.text[-3000:])
        assert f'value="{amount}"' in r.text  # the form keeps what was typed
    no_note = await act(client, user.id, "credits", {"amount": "3", "note": " "})
    assert no_note.status_code == 422 and "Note:" in no_note.text
    credits = await client.get(f"/api/admin/users/{user.id}/credits", headers=admin.headers)
    assert credits.json()["balanceCents"] == 1250 and credits.json()["balances"] == {"USD": 1250}
    euros = await act(client, user.id, "credits", {"amount": "3", "note": "euro", "currency": "eur"})
    assert euros.status_code == 303
    credits = await client.get(f"/api/admin/users/{user.id}/credits", headers=admin.headers)
    assert credits.json()["balances"] == {"USD": 1250, "EUR": 300}


async def test_revoke_key_asks_first_then_the_key_stops_working(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser, admin: TestUser
) -> None:
    key = await make_key(client, user, name=f"backup {XSS}")
    theirs = await make_key(client, other_user)
    assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 200
    await console_login(client, admin.email, admin.password)
    page = await client.get(f"/admin/users/{user.id}")
    link = f"/admin/users/{user.id}/keys/{key['id']}/revoke"
    assert f'href="{link}"' in page.text and XSS not in page.text and XSS_ESCAPED in page.text
    confirm = await client.get(link)
    assert (
        confirm.status_code == 200 and key["accessKeyId"] in confirm.text and "This cannot be undone." in confirm.text
    )
    r = await post(client, link, {}, link)
    assert r.status_code == 303 and r.headers["location"].endswith("?done=revoked")
    assert (await client.get("/api/auth/me", headers=key["headers"])).status_code == 401
    assert len(await audit(client, admin, "apikey.revoked", key["id"])) == 1
    after = await client.get(r.headers["location"])
    assert f'href="{link}"' not in after.text and "Revoked" in after.text
    # Another user's key through this user's address: not found, and it keeps working.
    wrong = f"/admin/users/{user.id}/keys/{theirs['id']}/revoke"
    assert (await client.get(wrong)).status_code == 404
    assert (await post(client, wrong, {}, f"/admin/users/{user.id}")).status_code == 404
    assert (await client.get("/api/auth/me", headers=theirs["headers"])).status_code == 200


# --- bad input ----------------------------------------------------------------------------------------------


async def test_bad_ids_and_input_are_clear_pages_not_500s(client: httpx.AsyncClient, admin: TestUser) -> None:
    await console_login(client, admin.email, admin.password)
    missing = "01" + "0" * 24
    for path in (f"/admin/users/{missing}", "/admin/users/not-an-id", f"/admin/users/{missing}/keys/x/revoke"):
        page = await client.get(path)
        assert page.status_code == 404 and "<html" in page.text and "not found" in page.text.lower(), path
    token = await csrf(client, "/admin")
    for action, data in (
        ("state", {"disabled": "true"}),
        ("role", {"role": "ADMIN"}),
        ("tier", {"tier_id": "tier_pro"}),
        ("credits", {"amount": "5", "note": "x"}),
        ("keys/x/revoke", {}),
    ):
        r = await client.post(f"/admin/users/{missing}/{action}", data={**data, "csrf_token": token})
        assert r.status_code == 404 and "not found" in r.text.lower(), action
    assert (await client.post(f"/admin/users/{admin.id}/state", data={"csrf_token": token})).status_code == 422
    assert (await client.get("/admin/users", params={"q": "x" * 400})).status_code == 422
    assert (await client.get("/admin/users", params={"cursor": "x" * 100})).status_code == 422
    # Without the CSRF token nothing happens.
    r = await client.post(f"/admin/users/{admin.id}/role", data={"role": "USER"})
    assert r.status_code == 403 and (await detail(client, admin, admin.id))["user"]["role"] == "ADMIN"


async def test_user_names_render_escaped(client: httpx.AsyncClient, admin: TestUser) -> None:
    mallory = await register(client, XSS)
    await store(client, mallory, "x.bin", 10)
    await console_login(client, admin.email, admin.password)
    for path in ("/admin/users", f"/admin/users/{mallory.id}", "/admin/users?q=img"):
        page = await client.get(path)
        assert page.status_code == 200 and XSS not in page.text and XSS_ESCAPED in page.text, path


# --- in a browser ---------------------------------------------------------------------------------------------

WIDER_THAN_THE_SCREEN = """[...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > 376).slice(0, 8)
    .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"""
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/ensure-browser)")


@pytest.fixture(scope="module")
def server_url(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = server_env(pg_url, tmp_path_factory.mktemp("admin-console-data"), ENVIRONMENT="test", S3_API_PORT="0")
    with running_server(env) as base:
        yield base


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


@contextmanager
def no_browser_errors(tab: Page) -> Iterator[None]:
    """The page's script errors and CSP violations fail the test (an error status we provoke does not)."""
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load" not in m.text else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield
    assert not errors, f"browser errors (a CSP violation?): {errors}"


@needs_chromium
async def test_an_admin_finds_a_user_grants_credit_and_disables_them(
    chromium: Browser, server_url: str, admin: TestUser, user: TestUser
) -> None:
    context = await chromium.new_context(base_url=server_url, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        with no_browser_errors(page):
            async with httpx.AsyncClient(base_url=server_url) as api:
                await store(api, user, "notes.txt", 4096)
                await log_in(page, admin.email)
                await page.get_by_role("link", name="Admin").click()
                await expect(page.locator("#stat-users")).to_have_text(re.compile(r"Users\s*2"))
                await expect(page.locator("#stat-files")).to_have_text(re.compile(r"Files\s*1"))
                await shot(page, "journey-admin-overview")
                await page.get_by_role("link", name="Users", exact=True).click()
                await page.get_by_label("Search by email or name").fill(user.email)
                await page.get_by_role("button", name="Search").click()
                await expect(page.locator("table.users tbody tr")).to_have_count(1)
                await page.get_by_role("link", name="alice").click()
                await expect(page.get_by_role("heading", level=1)).to_have_text("alice")
                await page.get_by_label("Amount").fill("7.25")
                await page.get_by_label("Note").fill("Welcome aboard")
                await page.get_by_role("button", name="Grant credit").click()
                await expect(page.get_by_role("status")).to_have_text("The credit has been granted.")
                await expect(page.locator("#ledger-h + .table-wrap")).to_contain_text("7.25 USD")
                await page.get_by_role("button", name="Disable account").click()
                await expect(page.get_by_role("status")).to_contain_text("The account is disabled")
                assert (await api.get("/api/auth/me", headers=user.headers)).status_code in (401, 403)
                await shot(page, "journey-admin-user")
                await page.get_by_role("button", name="Enable account").click()
                await expect(page.get_by_role("status")).to_have_text("The account is enabled again.")
                assert (await api.get("/api/auth/me", headers=user.headers)).status_code == 401  # sessions ended
                assert await login(api, user.email, user.password)
                credits = await api.get(f"/api/admin/users/{user.id}/credits", headers=admin.headers)
                assert credits.json()["balanceCents"] == 725
    finally:
        await context.close()


@needs_chromium
async def test_the_admin_pages_fit_a_phone(chromium: Browser, server_url: str, admin: TestUser, user: TestUser) -> None:
    context = await chromium.new_context(base_url=server_url, viewport={"width": 375, "height": 812}, is_mobile=True)
    phone = await context.new_page()
    try:
        async with httpx.AsyncClient(base_url=server_url) as api:
            await make_key(api, user, name="k" * 100)
            await store(api, user, "n" * 200, 10)
        await log_in(phone, admin.email)
        for path, name in (("/admin", "overview"), ("/admin/users", "users"), (f"/admin/users/{user.id}", "user")):
            await phone.goto(path)
            width = await phone.evaluate("document.documentElement.scrollWidth")
            wide = await phone.evaluate(WIDER_THAN_THE_SCREEN)
            assert width <= 375, f"{path} is {width}px wide at 375px {wide}"
            await shot(phone, f"journey-phone-admin-{name}")
    finally:
        await context.close()
