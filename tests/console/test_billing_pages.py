"""The console's plans, billing and account pages: each action checked through the JSON API (and the audit log)."""

from __future__ import annotations

import html

import httpx
import pytest
from fastapi import FastAPI

from tests.console.helpers import console_login, post
from tests.fixtures.app import client_for
from tests.fixtures.billing import grant_credits
from tests.fixtures.payments import USDC_ADDRESS, ProviderStub, audits, invoice, subscribe_invoice, subscription
from tests.fixtures.users import TestUser

XSS = "<img src=x onerror=alert(1)>"
GIB = 1024**3


async def usage(client: httpx.AsyncClient, user: TestUser) -> dict[str, object]:
    r = await client.get("/api/storage/usage", headers=user.headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def own_requests(client: httpx.AsyncClient, user: TestUser) -> list[dict[str, str]]:
    r = await client.get("/api/tier-requests", headers=user.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


async def approve(client: httpx.AsyncClient, admin: TestUser, request_id: str) -> str:
    r = await client.patch(
        f"/api/tier-requests/admin/{request_id}/approve", json={"approved": True}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    return str(r.json()["invoiceId"])


async def test_request_approve_pay_with_credits_changes_the_quota(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    await console_login(client, user.email, user.password)
    before = await usage(client, user)
    plans = await client.get("/plans")
    assert plans.status_code == 200
    assert "Starter" in plans.text and "5.00 USD" in plans.text and "50.0 GiB of storage" in plans.text
    r = await post(client, "/plans/request", {"tier_id": "tier_starter", "reason": "more room"}, "/plans")
    assert r.status_code == 303 and r.headers["location"] == "/plans?done=requested"
    asked = await own_requests(client, user)
    assert [(a["tierId"], a["status"], a["reason"]) for a in asked] == [("tier_starter", "PENDING", "more room")]
    shown = await client.get(r.headers["location"])
    assert "Your request was sent." in shown.text and "Cancel request" in shown.text

    invoice_id = await approve(client, admin, asked[0]["id"])
    billing = await client.get("/billing")
    assert f'href="/billing/invoices/{invoice_id}"' in billing.text and "Pockity Starter, monthly" in billing.text

    short = await post(client, f"/billing/invoices/{invoice_id}/pay-with-credits", {}, "/billing")
    assert short.status_code == 402 and "The credit balance does not cover this amount." in short.text
    assert (await invoice(client, user, invoice_id))["status"] == "PENDING"

    await grant_credits(client, admin, user, 500)
    detail = await client.get(f"/billing/invoices/{invoice_id}")
    assert "Your balance: 5.00 USD." in detail.text and "Pay 5.00 USD from credits" in detail.text
    r = await post(client, f"/billing/invoices/{invoice_id}/pay-with-credits", {}, "/billing")
    assert r.status_code == 303 and r.headers["location"] == f"/billing/invoices/{invoice_id}?done=paid"
    paid = await invoice(client, user, invoice_id)
    assert (paid["status"], paid["provider"]) == ("PAID", "credits")
    after = await usage(client, user)
    assert after["storageLimitBytes"] == 50 * GIB != before["storageLimitBytes"]
    assert after["tier"]["id"] == "tier_starter"  # type: ignore[index]
    page = await client.get(r.headers["location"])
    assert "The invoice is paid." in page.text and "from credits" not in page.text  # no pay form once paid
    assert ">0.00 USD<" in (await client.get("/billing")).text  # the balance, spent

    # Cancel the paid plan at its period end, after a confirmation page.
    confirm = await client.get("/plans/cancel")
    assert confirm.status_code == 200 and "Cancel Starter?" in confirm.text
    r = await post(client, "/plans/cancel", {}, "/plans/cancel")
    assert r.status_code == 303
    assert (await subscription(client, user))["current"]["cancelAtPeriodEnd"] is True
    again = await post(client, "/plans/cancel", {}, "/plans/cancel")
    assert again.status_code == 409 and "<form" in again.text  # the service's refusal, on the same page


async def test_cancel_a_pending_request(client: httpx.AsyncClient, user: TestUser, app: FastAPI) -> None:
    await console_login(client, user.email, user.password)
    assert (await post(client, "/plans/request", {"tier_id": "tier_pro"}, "/plans")).status_code == 303
    second = await post(client, "/plans/request", {"tier_id": "tier_starter"}, "/plans")
    assert second.status_code == 409 and "You already have a pending tier request" in second.text
    (asked,) = await own_requests(client, user)
    r = await post(client, f"/plans/requests/{asked['id']}/cancel", {}, "/plans")
    assert r.status_code == 303 and r.headers["location"] == "/plans?done=request_cancelled"
    assert [a["status"] for a in await own_requests(client, user)] == ["CANCELLED"]
    assert len(await audits(app, "tier_request.cancelled", asked["id"])) == 1
    unknown = await post(client, "/plans/request", {"tier_id": "tier_business"}, "/plans")  # private tier
    assert unknown.status_code == 404 and "<form" in unknown.text


async def test_top_up_and_auto_renew(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    refusals = (
        ("abc", "at most two decimals"),
        ("1e999999", "at most two decimals"),
        ("-5", "at most two decimals"),
        ("1.234", "at most two decimals"),
        ("0.50", "between 1.00 USD and 100,000.00 USD"),
        ("100000.01", "between 1.00 USD and 100,000.00 USD"),
    )
    for amount, sentence in refusals:
        r = await post(client, "/billing/top-up", {"amount": amount}, "/billing")
        assert r.status_code == 422 and sentence in r.text, amount
    r = await post(client, "/billing/top-up", {"amount": "12.5"}, "/billing")
    assert r.status_code == 303
    invoice_id = r.headers["location"].split("/")[-1].split("?")[0]
    made = await invoice(client, user, invoice_id)
    assert (made["kind"], made["amountCents"], made["status"]) == ("topup", 1250, "PENDING")
    page = await client.get(r.headers["location"])
    assert "Your top-up invoice was created" in page.text and "from credits" not in page.text

    assert (await subscription(client, user))["current"]["autoRenewFromCredits"] is False
    r = await post(client, "/billing/auto-renew", {"enabled": "on"}, "/billing")
    assert r.status_code == 303
    assert (await subscription(client, user))["current"]["autoRenewFromCredits"] is True
    assert "Renewing from credits at each period end is <strong>on</strong>" in (await client.get("/billing")).text


async def test_no_card_button_without_a_configured_provider(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    inv = await subscribe_invoice(client, user, admin)
    await console_login(client, user.email, user.password)
    page = await client.get(f"/billing/invoices/{inv['id']}")
    assert page.status_code == 200 and "Pay with Stripe" not in page.text and "With crypto" not in page.text
    r = await post(client, f"/billing/invoices/{inv['id']}/checkout", {"provider": "stripe"}, "/billing")
    assert r.status_code == 503 and "stripe is not configured on this server." in r.text


async def test_crypto_submission_and_stripe_checkout(
    pclient: httpx.AsyncClient, payer: TestUser, padmin: TestUser, provider_stub: ProviderStub
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    await console_login(pclient, payer.email, payer.password)
    page = await pclient.get(f"/billing/invoices/{inv['id']}")
    assert page.status_code == 200
    assert f'id="address-USDC" value="{USDC_ADDRESS}"' in page.text and 'id="amount-USDC" value="5.00"' in page.text
    assert 'data-copy="address-USDC"' in page.text and "No current rate" in page.text  # ETH, BTC: no rate set

    bad = await post(pclient, f"/billing/invoices/{inv['id']}/crypto", {"asset": "USDC", "tx_hash": "nope"}, "/")
    assert bad.status_code == 422 and "The transaction hash is not valid for this asset." in bad.text
    tx = "0x" + "1f" * 32
    r = await post(pclient, f"/billing/invoices/{inv['id']}/crypto", {"asset": "USDC", "tx_hash": tx}, "/")
    assert r.status_code == 303 and r.headers["location"].endswith("?done=submitted")
    listed = (await pclient.get("/api/billing/payments", headers=payer.headers)).json()["items"]
    assert [(p["provider"], p["status"], p["txHash"], p["assetAmount"], p["invoiceId"]) for p in listed] == [
        ("crypto", "PENDING", tx, "5.00", inv["id"])
    ]
    shown = await pclient.get(r.headers["location"])
    assert "waits for an administrator" in shown.text and tx in shown.text
    reused = await post(pclient, f"/billing/invoices/{inv['id']}/crypto", {"asset": "USDC", "tx_hash": tx}, "/")
    assert reused.status_code == 409 and "already been submitted" in reused.text

    assert "Pay with Stripe" in shown.text
    r = await post(pclient, f"/billing/invoices/{inv['id']}/checkout", {"provider": "stripe"}, "/")
    assert r.status_code == 303 and r.headers["location"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    sent = [q for q in provider_stub.requests if q.path.endswith("/v1/checkout/sessions")]
    assert len(sent) == 1 and sent[0].form["metadata[invoiceId]"] == inv["id"]


async def test_another_users_invoice_is_not_found(
    client: httpx.AsyncClient, user: TestUser, other_user: TestUser, admin: TestUser
) -> None:
    inv = await subscribe_invoice(client, user, admin)
    await grant_credits(client, admin, other_user, 1000)
    await console_login(client, other_user.email, other_user.password)
    page = await client.get(f"/billing/invoices/{inv['id']}")
    assert page.status_code == 404 and "Invoice not found." in page.text and "text/html" in page.headers["content-type"]
    for action, data in (("pay-with-credits", {}), ("crypto", {"asset": "USDC", "tx_hash": "0x" + "2e" * 32})):
        r = await post(client, f"/billing/invoices/{inv['id']}/{action}", data)
        assert r.status_code == 404 and "Invoice not found." in r.text, action
    assert (await invoice(client, user, inv["id"]))["status"] == "PENDING"
    assert f"/billing/invoices/{inv['id']}" not in (await client.get("/billing")).text


async def test_password_change(client: httpx.AsyncClient, user: TestUser, app: FastAPI) -> None:
    await console_login(client, user.email, user.password)
    new = "a much newer passphrase"
    wrong = await post(
        client,
        "/account/password",
        {"current_password": "not it at all", "new_password": new, "confirm_password": new},
        "/account",
    )
    assert wrong.status_code == 403 and "The current password is not correct." in wrong.text
    differ = await post(
        client,
        "/account/password",
        {"current_password": user.password, "new_password": new, "confirm_password": new + "!"},
        "/account",
    )
    assert differ.status_code == 422 and "differ" in differ.text
    short = await post(
        client,
        "/account/password",
        {"current_password": user.password, "new_password": "short", "confirm_password": "short"},
        "/account",
    )
    assert short.status_code == 422 and "The new password must have 8 to 1024 characters." in short.text
    login = {"email": user.email, "password": user.password}
    assert (await client.post("/api/auth/login", json=login)).status_code == 200  # nothing changed yet
    async with client_for(app) as other_browser:
        assert (await console_login(other_browser, user.email, user.password)).status_code == 303
        assert (await other_browser.get("/account")).status_code == 200
        r = await post(
            client,
            "/account/password",
            {"current_password": user.password, "new_password": new, "confirm_password": new},
            "/account",
        )
        assert r.status_code == 303 and r.headers["location"] == "/account?done=password"
        # This browser got a new session and stays signed in; the other one is signed out at once.
        assert "Your password was changed: every other session" in (await client.get(r.headers["location"])).text
        signed_out = await other_browser.get("/account")
        assert signed_out.status_code == 303 and signed_out.headers["location"].startswith("/login")
        assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 401  # the old API token too
    assert (await client.post("/api/auth/login", json=login)).status_code == 401
    assert (await client.post("/api/auth/login", json={**login, "password": new})).status_code == 200
    assert len(await audits(app, "user.password_changed", user.id)) == 1


async def test_name_change_shows(client: httpx.AsyncClient, user: TestUser, app: FastAPI) -> None:
    await console_login(client, user.email, user.password)
    blank = await post(client, "/account/name", {"name": "   "}, "/account")
    assert blank.status_code == 422 and "The name must have 1 to 200 characters." in blank.text
    r = await post(client, "/account/name", {"name": f"  Alice {XSS}  "}, "/account")
    assert r.status_code == 303
    page = await client.get(r.headers["location"])
    assert "Your name was changed." in page.text
    assert html.escape(f"Alice {XSS}", quote=False) in page.text and XSS not in page.text
    me = await client.get("/api/auth/me", headers=user.headers)
    assert me.json()["name"] == f"Alice {XSS}"
    (event,) = await audits(app, "user.renamed", user.id)
    assert event.details == {"before": {"name": "alice"}, "after": {"name": f"Alice {XSS}"}}


@pytest.mark.usefixtures("restore_tiers")
async def test_tier_names_and_reasons_render_escaped(
    client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    r = await client.post(
        "/api/tiers/admin",
        json={"name": XSS, "description": XSS, "storageGb": 1, "maxObjects": 10, "priceCents": 100},
        headers=admin.headers,
    )
    assert r.status_code == 201, r.text
    tier_id = r.json()["id"]
    await console_login(client, user.email, user.password)
    r = await post(client, "/plans/request", {"tier_id": tier_id, "reason": XSS}, "/plans")
    assert r.status_code == 303
    for path in ("/plans", "/plans/cancel"):
        page = await client.get(path)
        assert page.status_code == 200 and XSS not in page.text, path
    page = await client.get("/plans")
    assert page.text.count(html.escape(XSS, quote=False)) >= 3  # the card, the description, the request's row
    invoice_id = await approve(client, admin, (await own_requests(client, user))[0]["id"])
    for path in ("/billing", f"/billing/invoices/{invoice_id}", "/plans/cancel"):
        page = await client.get(path)
        assert page.status_code == 200 and XSS not in page.text, path
        assert html.escape(XSS, quote=False) in page.text, path


async def test_forms_need_the_csrf_token(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    r = await client.post("/plans/request", data={"tier_id": "tier_starter"})
    assert r.status_code == 403
    assert await own_requests(client, user) == []
    r = await client.post("/account/name", data={"name": "mallory"})
    assert r.status_code == 403
    assert (await client.get("/api/auth/me", headers=user.headers)).json()["name"] == "alice"


async def test_bad_input_is_a_clear_4xx(client: httpx.AsyncClient, user: TestUser, admin: TestUser) -> None:
    inv = await subscribe_invoice(client, user, admin)
    await console_login(client, user.email, user.password)
    cases = [
        ("GET", "/billing", {"cursor": "x" * 100}, 422, "Some fields are missing or not valid."),
        ("GET", "/plans", {"done": "x" * 100}, 422, "Some fields are missing or not valid."),
        ("POST", "/billing/auto-renew", {"enabled": "maybe"}, 422, "Some fields are missing or not valid."),
        ("POST", "/plans/request", {"tier_id": "", "reason": "x"}, 422, "Some fields are missing or not valid."),
        ("POST", "/plans/request", {"tier_id": "t" * 30}, 422, "Tier id: String should have at most 26"),
        ("POST", f"/billing/invoices/{inv['id']}/crypto", {"asset": "DOGE", "tx_hash": "0x1"}, 422, "Asset: Input"),
        ("POST", f"/billing/invoices/{inv['id']}/checkout", {"provider": "paypal"}, 422, "not offered here"),
        ("POST", "/plans/requests/nope/cancel", {}, 404, "Tier request not found."),
        ("GET", "/billing/invoices/nope", None, 404, "Invoice not found."),
    ]
    for method, path, data, status, sentence in cases:
        if method == "GET":
            r = await client.get(path, params=data)
        else:
            r = await post(client, path, data or {})
        assert (r.status_code, sentence in r.text) == (status, True), (path, data, r.status_code, r.text[-600:])
        assert "text/html" in r.headers["content-type"]
    assert (await subscription(client, user))["current"]["autoRenewFromCredits"] is False
    assert [a["status"] for a in await own_requests(client, user)] == ["APPROVED"]  # the fixture's; none added
