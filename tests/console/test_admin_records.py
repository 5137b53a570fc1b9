"""The admin's record pages: subscriptions, the payment events inbox, reconciliation and the audit log. What a
page lists is compared with what the admin API returns for the same filter; a reconciliation run from the page
is followed through the API's reports and audit log."""

from __future__ import annotations

import asyncio
import html
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, expect
from sqlalchemy import update

from pockity.console import admin_records
from pockity.kit.time import utcnow
from pockity.models import PaymentEvent
from tests.console.helpers import console_login, csrf_of, post
from tests.console.test_admin_users import (  # the module's browser and server, shared
    WIDER_THAN_THE_SCREEN,
    chromium,  # noqa: F401
    needs_chromium,
    no_browser_errors,
    server_url,  # noqa: F401
)
from tests.console.test_journeys import log_in, shot
from tests.fixtures.app import client_for
from tests.fixtures.payments import post_stripe, stripe_event
from tests.fixtures.storage import MIB, set_quota
from tests.fixtures.users import TestUser

XSS = "<script>alert(1)</script>"


@asynccontextmanager
async def _browser(app: FastAPI, who: TestUser) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        await console_login(client, who.email, who.password)
        yield client


@pytest.fixture
async def browser(app: FastAPI, admin: TestUser) -> AsyncIterator[httpx.AsyncClient]:
    async with _browser(app, admin) as client:
        yield client


async def api(client: httpx.AsyncClient, admin: TestUser, path: str, **params: str) -> Any:
    r = await client.get(f"/api/admin/{path}", params=params, headers=admin.headers)
    assert r.status_code == 200, r.text
    return r.json()


def row(page: httpx.Response, row_id: str) -> str:
    start = page.text.index(f'id="{row_id}"')
    return page.text[start : page.text.index("</tr>", start)]


# --- subscriptions -----------------------------------------------------------------------------------------


async def test_subscriptions_are_listed_with_their_state_and_filtered(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser, user: TestUser, other_user: TestUser
) -> None:
    r = await client.put(f"/api/admin/users/{user.id}/tier", json={"tierId": "tier_starter"}, headers=admin.headers)
    assert r.status_code == 200, r.text
    subs = (await api(client, admin, "subscriptions", userId=user.id))["items"]
    assert len({s["status"] for s in subs}) >= 2  # the old one ended, the assigned one active
    page = await browser.get("/admin/subscriptions", params={"user": user.id})
    assert page.status_code == 200 and '<a href="/admin/subscriptions" aria-current="page">' in page.text
    for s in subs:
        shown = row(page, f"sub-{s['id']}")
        assert s["status"].replace("_", " ").capitalize() in shown and user.id in shown
        assert ("Current" in shown) == s["isCurrent"]
    assert "Starter" in row(page, f"sub-{next(s for s in subs if s['isCurrent'])['id']}")
    assert f"sub-{(await api(client, admin, 'subscriptions', userId=other_user.id))['items'][0]['id']}" not in page.text
    for status in ("ACTIVE", "CANCELLED"):
        want = {s["id"] for s in (await api(client, admin, "subscriptions", status=status, userId=user.id))["items"]}
        page = await browser.get("/admin/subscriptions", params={"status": status, "user": user.id})
        assert {s["id"] for s in subs if f'id="sub-{s["id"]}"' in page.text} == want, status
        assert f'<option value="{status}" selected>' in page.text


async def test_subscription_pages_follow_the_cursor(
    client: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    admin: TestUser,
    user: TestUser,
    other_user: TestUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin_records, "PAGE_SIZE", 1)
    everyone = [s["id"] for s in (await api(client, admin, "subscriptions", limit="200"))["items"]]
    assert len(everyone) >= 3  # user, other_user, admin
    seen, path = [], "/admin/subscriptions"
    while True:
        page = await browser.get(path)
        seen += [s for s in everyone if f'id="sub-{s}"' in page.text]
        nxt = page.text.find('">Next page</a>')
        if nxt < 0:
            break
        path = html.unescape(page.text[page.text.rindex('href="', 0, nxt) + 6 : nxt])
    assert seen == everyone


# --- payment events ----------------------------------------------------------------------------------------


async def test_the_payment_events_inbox(
    papp: FastAPI, pclient: httpx.AsyncClient, padmin: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"evt_console_{time.time_ns()}_{n}" for n in range(2)]
    for event_id, kind in zip(ids, ("customer.created", XSS), strict=True):
        r = await post_stripe(pclient, stripe_event(kind, {"id": "cus_1", "object": "customer"}, event_id=event_id))
        assert r.status_code == 200, r.text
    listed = {e["eventId"]: e for e in (await api(pclient, padmin, "payment-events"))["items"]}
    assert set(listed) == set(ids) and all(e["processedAt"] for e in listed.values())
    async with _browser(papp, padmin) as browser:
        page = await browser.get("/admin/payment-events")
        assert page.status_code == 200
        for e in listed.values():
            shown = row(page, f"event-{e['id']}")
            assert e["eventId"] in shown and "Stripe" in shown and "Processed" in shown and e["outcome"] in shown
        assert XSS not in page.text and html.escape(XSS) in page.text
        # One that failed and waits for another attempt: shown with its error, and alone when unprocessed only.
        failed = listed[ids[0]]
        async with papp.state.db.sessions() as s, s.begin():
            await s.execute(
                update(PaymentEvent)
                .where(PaymentEvent.id == failed["id"])
                .values(processed_at=None, outcome=None, error=f"boom {XSS}")
            )
        page = await browser.get("/admin/payment-events", params={"unprocessed": "on"})
        assert [e["id"] for e in (await api(pclient, padmin, "payment-events", unprocessed="true"))["items"]] == [
            failed["id"]
        ]
        shown = row(page, f"event-{failed['id']}")
        assert "Failed" in shown and html.escape(f"boom {XSS}", quote=False) in shown
        assert f"event-{listed[ids[1]]['id']}" not in page.text
        for provider, count in (("stripe", 2), ("razorpay", 0)):
            page = await browser.get("/admin/payment-events", params={"provider": provider})
            assert sum(f'id="event-{e["id"]}"' in page.text for e in listed.values()) == count, provider
        monkeypatch.setattr(admin_records, "PAGE_SIZE", 1)
        page = await browser.get("/admin/payment-events", params={"provider": "stripe"})
        assert "Next page" in page.text and "provider=stripe&amp;unprocessed=&amp;cursor=" in page.text


# --- reconciliation ----------------------------------------------------------------------------------------


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _finished(client: httpx.AsyncClient, admin: TestUser) -> dict[str, Any]:
    """The newest report, once its background run is over."""
    deadline = time.monotonic() + 15
    while True:
        report = (await api(client, admin, "reconciliations"))["items"][0]
        if report["status"] != "RUNNING" or time.monotonic() > deadline:
            return report  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


async def test_an_admin_runs_a_reconciliation_and_sees_the_drift_per_user(
    app: FastAPI, client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser, user: TestUser
) -> None:
    await set_quota(app, user.id, MIB)
    await app.state.storage.put_stream(f"users/{user.id}/behind.txt", _one(b"x" * 40), content_type="text/plain")
    page = await browser.get("/admin/reconciliation")
    assert page.status_code == 200 and "No reconciliation has run yet." in page.text
    form = {"scope": "user", "user_id": user.id, "dry_run": "on"}
    r = await post(browser, "/admin/reconciliation", form, "/admin/reconciliation")
    assert r.status_code == 303 and r.headers["location"] == "/admin/reconciliation?done=started", r.text
    dry = await _finished(client, admin)
    assert (dry["status"], dry["dryRun"], dry["trigger"], dry["scopeUserId"]) == ("DONE", True, "admin", user.id)
    assert dry["drift"][user.id]["adopted"] == 1 and dry["drift"][user.id]["bytesDrift"] == 40
    page = await browser.get("/admin/reconciliation")
    report = page.text[page.text.index(f'id="report-{dry["id"]}"') :]
    assert "Dry run" in report[:2000] and f'href="/admin/users/{user.id}"' in report and "+40" in report
    assert (await client.get("/api/storage/usage", headers=user.headers)).json()["objectCount"] == 0  # dry

    r = await post(browser, "/admin/reconciliation", {"scope": "all"}, "/admin/reconciliation")
    assert r.status_code == 303
    done = await _finished(client, admin)
    assert (done["status"], done["dryRun"], done["scopeUserId"]) == ("DONE", False, None)
    assert set(done["drift"]) == {user.id} and done["adopted"] == 1
    assert (await client.get("/api/storage/usage", headers=user.headers)).json()["objectCount"] == 1
    runs = (await api(client, admin, "audit", action="storage.reconciliation_run", actor=admin.id))["items"]
    assert {e["targetId"] for e in runs} == {dry["id"], done["id"]}
    detail = await browser.get(f"/admin/reconciliation/{done['id']}")
    assert detail.status_code == 200 and "every user" in detail.text and f"/admin/users/{user.id}" in detail.text
    clean = await post(browser, "/admin/reconciliation", form, "/admin/reconciliation")
    assert clean.status_code == 303
    again = await _finished(client, admin)
    assert again["drift"] == {}
    assert "No drift" in (await browser.get(f"/admin/reconciliation/{again['id']}")).text
    assert (await browser.get(f"/admin/reconciliation/{'0' * 26}")).status_code == 404


async def test_bad_reconciliation_forms_are_refused_with_a_sentence(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser
) -> None:
    cases = {
        "Choose every user or one user.": ({}, 422),
        "User id: enter the id of the user to reconcile.": ({"scope": "user", "user_id": " "}, 422),
        "User id: a user&#39;s id has 26 characters.": ({"scope": "user", "user_id": "x" * 30}, 422),
        "User not found.": ({"scope": "user", "user_id": "0" * 26}, 404),
    }
    for sentence, (form, status) in cases.items():
        r = await post(browser, "/admin/reconciliation", form, "/admin/reconciliation")
        assert r.status_code == status and '<p class="alert error" role="alert">' + sentence in r.text, r.text[-3000:]
    assert (await api(client, admin, "reconciliations"))["items"] == []


# --- the audit log -----------------------------------------------------------------------------------------


async def test_the_audit_log_with_its_filters(
    client: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    admin: TestUser,
    user: TestUser,
    other_user: TestUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for who, name in ((user, XSS), (other_user, "Bob")):
        r = await client.patch(f"/api/admin/users/{who.id}", json={"name": name}, headers=admin.headers)
        assert r.status_code == 200, r.text
    page = await browser.get("/admin/audit")
    assert page.status_code == 200 and XSS not in page.text
    for e in (await api(client, admin, "audit"))["items"]:
        assert f'id="audit-{e["id"]}"' in page.text
    filters = [
        {"action": "user.updated"},
        {"actor": admin.id},
        {"target": user.id},
        {"target": user.id, "action": "user.updated"},
    ]
    every = {e["id"] for e in (await api(client, admin, "audit"))["items"]}
    for f in filters:
        want = {e["id"] for e in (await api(client, admin, "audit", **f))["items"]}
        page = await browser.get("/admin/audit", params=f)
        assert want and {i for i in every if f'id="audit-{i}"' in page.text} == want, f
    (renamed,) = (await api(client, admin, "audit", target=user.id, action="user.updated"))["items"]
    shown = row(await browser.get("/admin/audit", params={"target": user.id}), f"audit-{renamed['id']}")
    assert f'href="/admin/users/{admin.id}"' in shown and f'href="/admin/users/{user.id}"' in shown
    assert "\\u003cscript\\u003e" in shown  # the details, as JSON, escaped
    # A time range, typed as the date-time field sends it (UTC).
    soon, past = utcnow() + timedelta(minutes=5), utcnow() - timedelta(hours=1)
    page = await browser.get("/admin/audit", params={"from": soon.strftime("%Y-%m-%dT%H:%M")})
    assert page.status_code == 200 and "No events match." in page.text
    page = await browser.get(
        "/admin/audit", params={"from": past.strftime("%Y-%m-%dT%H:%M"), "to": soon.strftime("%Y-%m-%dT%H:%M")}
    )
    assert f'id="audit-{renamed["id"]}"' in page.text
    page = await browser.get("/admin/audit", params={"to": past.strftime("%Y-%m-%dT%H:%M")})
    assert f'id="audit-{renamed["id"]}"' not in page.text
    bad = await browser.get("/admin/audit", params={"from": "yesterday"})
    assert bad.status_code == 422 and "From: a date and time such as 2026-12-04T21:00 (UTC)." in bad.text
    # Paged, newest first, the filters kept on the next page's link.
    monkeypatch.setattr(admin_records, "PAGE_SIZE", 1)
    everyone = [e["id"] for e in (await api(client, admin, "audit", action="user.updated"))["items"]]
    seen, path = [], "/admin/audit?action=user.updated"
    while True:
        page = await browser.get(path)
        seen += [i for i in everyone if f'id="audit-{i}"' in page.text]
        nxt = page.text.find('">Older events</a>')
        if nxt < 0:
            break
        path = html.unescape(page.text[page.text.rindex('href="', 0, nxt) + 6 : nxt])
        assert "action=user.updated" in path
    assert seen == everyone and len(seen) == 2


async def test_record_pages_refuse_users(app: FastAPI, user: TestUser, browser: httpx.AsyncClient) -> None:
    async with _browser(app, user) as someone:
        for path in ("/admin/subscriptions", "/admin/payment-events", "/admin/reconciliation", "/admin/audit"):
            r = await someone.get(path)
            assert r.status_code == 403 and "This page is for administrators." in r.text, path
        r = await post(someone, "/admin/reconciliation", {"scope": "all"})
        assert r.status_code == 403
    page = await browser.get("/admin/reconciliation")
    no_token = await browser.post("/admin/reconciliation", data={"scope": "all"})
    wrong = await browser.post("/admin/reconciliation", data={"scope": "all", "csrf_token": "0" * 64})
    assert no_token.status_code == wrong.status_code == 403 and csrf_of(page)
    assert "No reconciliation has run yet." in (await browser.get("/admin/reconciliation")).text


# --- the layout: phone and desktop -----------------------------------------------------------------------


@needs_chromium
@pytest.mark.usefixtures("restore_tiers")
@pytest.mark.parametrize("width", [375, 1280])
async def test_the_new_admin_pages_fit_the_screen(
    width: int,
    chromium: Browser,  # noqa: F811
    server_url: str,  # noqa: F811
    client: httpx.AsyncClient,
    admin: TestUser,
    user: TestUser,
) -> None:
    long_name = "T" * 92 + uuid.uuid4().hex[:8]  # the longest name a tier may have
    r = await client.post(
        "/api/tiers/admin", json={"name": long_name, "storageGb": 1, "maxObjects": 5}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    await client.patch(f"/api/admin/users/{user.id}", json={"name": "n" * 200}, headers=admin.headers)
    context = await chromium.new_context(
        base_url=server_url, viewport={"width": width, "height": 812}, is_mobile=width < 700
    )
    phone = await context.new_page()
    try:
        with no_browser_errors(phone):
            await log_in(phone, admin.email)
            await phone.goto("/admin/reconciliation")
            await phone.get_by_role("radio", name="One user").check()
            await phone.get_by_role("textbox", name="User id").fill(user.id)
            await phone.get_by_label("Dry run").check()
            await phone.get_by_role("button", name="Run reconciliation").click()
            await expect(phone.get_by_role("status")).to_contain_text("The reconciliation has started")
            pages = {
                "tiers": "/admin/tiers",
                "tier": f"/admin/tiers/{r.json()['id']}",
                "crypto-rates": "/admin/crypto-rates",
                "subscriptions": "/admin/subscriptions",
                "payment-events": "/admin/payment-events",
                "reconciliation": "/admin/reconciliation",
                "audit": "/admin/audit",
            }
            for name, path in pages.items():
                await phone.goto(path)
                shown = await phone.evaluate("document.documentElement.scrollWidth")
                wide = await phone.evaluate(WIDER_THAN_THE_SCREEN) if width == 375 else ""
                assert shown <= width, f"{path} is {shown}px wide at {width}px {wide}"
                await shot(phone, f"journey-{'phone' if width == 375 else 'desktop'}-admin-{name}")
    finally:
        await context.close()
