"""The admin's catalogue pages: tiers (list all, create, edit, archive) and crypto rates. Each action is checked
through the admin API (the values it now returns) and its audit log, as the API's own actions would be."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pockity.kit.time import utcnow
from tests.console.helpers import console_login, csrf_of, post
from tests.fixtures.app import client_for
from tests.fixtures.users import TestUser

GIB = 1024**3
XSS = "<script>alert(1)</script>"
pytestmark = pytest.mark.usefixtures("restore_tiers")


@pytest.fixture
async def browser(app: FastAPI, admin: TestUser) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        await console_login(client, admin.email, admin.password)
        yield client


def unique(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:8]}"


async def all_tiers(client: httpx.AsyncClient, admin: TestUser) -> dict[str, dict[str, Any]]:
    r = await client.get("/api/tiers/admin/all", headers=admin.headers)
    assert r.status_code == 200, r.text
    return {t["id"]: t for t in r.json()["items"]}


async def audit(client: httpx.AsyncClient, admin: TestUser, action: str, target: str | None = None) -> list[Any]:
    params = {"action": action} | ({"target": target} if target else {})
    r = await client.get("/api/admin/audit", params=params, headers=admin.headers)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def tier_form(**values: str) -> dict[str, str]:
    return {
        "name": unique("Team"),
        "description": "",
        "storage_gb": "10",
        "max_objects": "1000",
        "max_object_size_mb": "",
        "price": "0",
        "currency": "USD",
        "billing_period": "monthly",
        "trial_days": "0",
        **values,
    }


async def edit_form(browser: httpx.AsyncClient, tier_id: str) -> dict[str, str]:
    """The edit page's fields as a browser would send them back (checked boxes only)."""
    page = await browser.get(f"/admin/tiers/{tier_id}")
    assert page.status_code == 200, page.text
    form = page.text[page.text.index(f'action="/admin/tiers/{tier_id}"') :]
    form = form[: form.index("</form>")]
    fields = dict(re.findall(r'<input type="text" name="(\w+)" value="([^"]*)"', form))
    fields["description"] = html.unescape(re.search(r'name="description"[^>]*>([^<]*)</textarea>', form).group(1))  # type: ignore[union-attr]
    fields["billing_period"] = re.search(r'<option value="(\w+)" selected>', form).group(1)  # type: ignore[union-attr]
    for box in re.findall(r'name="(\w+)" value="on" checked', form):
        fields[box] = "on"
    return {k: html.unescape(v) for k, v in fields.items()} | {"csrf_token": csrf_of(page)}


# --- tiers ---------------------------------------------------------------------------------------------------


async def test_the_list_shows_every_tier_archived_and_private_included(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser
) -> None:
    made = {}
    for name, extra in (("Hidden", {"isPublic": False}), ("Old", {})):
        r = await client.post(
            "/api/tiers/admin",
            json={"name": unique(name), "storageGb": 1, "maxObjects": 5, **extra},
            headers=admin.headers,
        )
        assert r.status_code == 201, r.text
        made[name] = r.json()
    r = await client.delete(f"/api/tiers/admin/{made['Old']['id']}", headers=admin.headers)
    assert r.status_code == 200, r.text
    page = await browser.get("/admin/tiers")
    assert page.status_code == 200 and '<a href="/admin/tiers" aria-current="page">Tiers</a>' in page.text
    for tier in (await all_tiers(client, admin)).values():
        assert f'id="tier-{tier["id"]}"' in page.text and html.escape(tier["name"]) in page.text
    row = page.text[page.text.index(f'id="tier-{made["Hidden"]["id"]}"') :]
    assert "Private" in row[: row.index("</tr>")]
    row = page.text[page.text.index(f'id="tier-{made["Old"]["id"]}"') :]
    row = row[: row.index("</tr>")]
    assert "Archived" in row and f"/admin/tiers/{made['Old']['id']}/archive" not in row


async def test_an_admin_creates_a_tier_and_the_api_returns_it_with_the_values_given(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser
) -> None:
    form = tier_form(
        storage_gb="2.5",
        max_objects="1,000",
        max_object_size_mb="64",
        price="12.50",
        currency="eur",
        billing_period="yearly",
        trial_days="14",
        requests_per_second="20",
        private="on",
        description="For teams",
    )
    r = await post(browser, "/admin/tiers", form, "/admin/tiers")
    assert r.status_code == 303, r.text
    tier_id = r.headers["location"].removeprefix("/admin/tiers/").removesuffix("?done=created")
    tier = (await all_tiers(client, admin))[tier_id]
    assert tier["name"] == form["name"] and tier["description"] == "For teams"
    assert (tier["storageBytes"], tier["maxObjects"], tier["maxObjectSizeBytes"]) == (int(2.5 * GIB), 1000, 64 << 20)
    assert (tier["priceCents"], tier["currency"], tier["billingPeriod"], tier["trialDays"]) == (
        1250,
        "EUR",
        "yearly",
        14,
    )
    assert (tier["requestsPerSecond"], tier["requestBurst"], tier["maxConcurrentUploads"]) == (20, None, None)
    assert (tier["isPublic"], tier["isDefault"], tier["isArchived"], tier["userCount"]) == (False, False, False, 0)
    page = await browser.get(r.headers["location"])
    assert "The tier has been created." in page.text
    (event,) = await audit(client, admin, "tier.created", tier_id)
    assert event["actorId"] == admin.id and event["details"]["after"]["price_cents"] == 1250
    public = (await client.get("/api/tiers")).json()["items"]
    assert tier_id not in {t["id"] for t in public}  # private


async def test_an_edit_changes_what_the_api_shows_and_leaves_the_rest(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser
) -> None:
    r = await post(browser, "/admin/tiers", tier_form(storage_gb="1", price="3", private="on"), "/admin/tiers")
    tier_id = r.headers["location"].split("/")[-1].split("?")[0]
    form = await edit_form(browser, tier_id)
    assert (form["storage_gb"], form["price"], form["private"], form["max_objects"]) == ("1", "3.00", "on", "1000")
    renamed = unique("Bigger")
    del form["private"]  # unticked: public now
    r = await browser.post(
        f"/admin/tiers/{tier_id}", data=form | {"name": renamed, "storage_gb": "5", "price": "20", "trial_days": "7"}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/admin/tiers/{tier_id}?done=updated", r.text
    tier = (await all_tiers(client, admin))[tier_id]
    assert (tier["name"], tier["storageBytes"], tier["priceCents"], tier["trialDays"]) == (renamed, 5 * GIB, 2000, 7)
    assert (tier["isPublic"], tier["maxObjects"], tier["currency"]) == (True, 1000, "USD")
    (event,) = await audit(client, admin, "tier.updated", tier_id)
    before, after = event["details"]["before"], event["details"]["after"]
    assert (before["storage_bytes"], after["storage_bytes"]) == (GIB, 5 * GIB)
    assert (before["is_public"], after["is_public"]) == (False, True)
    # Sent back unchanged, the form changes nothing and is not audited as a change.
    r = await browser.post(f"/admin/tiers/{tier_id}", data=await edit_form(browser, tier_id))
    assert r.status_code == 303 and (await all_tiers(client, admin))[tier_id] == tier
    assert len(await audit(client, admin, "tier.updated", tier_id)) == 1
    # A form that leaves fields out (not a browser's) changes only what it sends; an absent box is unticked.
    r = await post(browser, f"/admin/tiers/{tier_id}", {"max_objects": "2000"})
    assert r.status_code == 303, r.text
    now = (await all_tiers(client, admin))[tier_id]
    assert now == tier | {"maxObjects": 2000}


async def test_bad_input_gives_the_form_back_with_a_sentence(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser
) -> None:
    before = await all_tiers(client, admin)
    cases = {
        "Storage (GB): ": tier_form(storage_gb="lots"),
        "Storage (GB): Input should be greater than 0.": tier_form(storage_gb="0"),
        "Files: ": tier_form(max_objects="1.5"),
        "Price: enter an amount with at most two decimals": tier_form(price="1.234"),
        "Currency: ": tier_form(currency="dollars"),
        "Name: String should have at most 100 characters.": tier_form(name="n" * 101),
        "Trial days: Input should be less than or equal to 365.": tier_form(trial_days="400"),
    }
    for sentence, form in cases.items():
        r = await post(browser, "/admin/tiers", form, "/admin/tiers")
        assert r.status_code == 422, (sentence, r.status_code)
        assert '<p class="alert error" role="alert">' + html.escape(sentence) in r.text, sentence
        assert f'value="{html.escape(form["name"])}"' in r.text  # what was typed is kept
    taken = next(iter(before.values()))["name"]
    r = await post(browser, "/admin/tiers", tier_form(name=taken), "/admin/tiers")
    assert r.status_code == 409 and "A tier with this name already exists." in r.text
    assert await all_tiers(client, admin) == before
    r = await post(browser, "/admin/tiers", tier_form(), "/admin/tiers")
    tier_id = r.headers["location"].split("/")[-1].split("?")[0]
    form = await edit_form(browser, tier_id)
    r = await browser.post(f"/admin/tiers/{tier_id}", data=form | {"max_objects": "-5"})
    assert r.status_code == 422 and "Files: Input should be greater than 0." in r.text
    assert (await all_tiers(client, admin))[tier_id]["maxObjects"] == 1000
    r = await browser.post(f"/admin/tiers/{tier_id}", data=form | {"name": taken})
    assert r.status_code == 409 and (await all_tiers(client, admin))[tier_id]["name"] == form["name"]
    missing = await browser.post(f"/admin/tiers/{'0' * 26}", data=form)
    assert missing.status_code == 404 and "Tier not found." in missing.text


async def test_archive_after_confirmation(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser
) -> None:
    r = await post(browser, "/admin/tiers", tier_form(), "/admin/tiers")
    tier_id = r.headers["location"].split("/")[-1].split("?")[0]
    confirm = await browser.get(f"/admin/tiers/{tier_id}/archive")
    assert confirm.status_code == 200 and f'action="/admin/tiers/{tier_id}/archive"' in confirm.text
    assert (await all_tiers(client, admin))[tier_id]["isArchived"] is False  # asking changes nothing
    r = await browser.post(f"/admin/tiers/{tier_id}/archive", data={"csrf_token": csrf_of(confirm)})
    assert r.status_code == 303 and r.headers["location"] == "/admin/tiers?done=archived"
    assert (await all_tiers(client, admin))[tier_id]["isArchived"] is True
    assert tier_id not in {t["id"] for t in (await client.get("/api/tiers")).json()["items"]}
    assert len(await audit(client, admin, "tier.archived", tier_id)) == 1
    assert "The tier is archived" in (await browser.get(r.headers["location"])).text
    # Restored from the edit page's box.
    form = await edit_form(browser, tier_id)
    assert form["archived"] == "on"
    del form["archived"]
    assert (await browser.post(f"/admin/tiers/{tier_id}", data=form)).status_code == 303
    assert (await all_tiers(client, admin))[tier_id]["isArchived"] is False


async def test_tier_names_are_escaped(client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser) -> None:
    name = unique(XSS)
    r = await post(browser, "/admin/tiers", tier_form(name=name, description=XSS), "/admin/tiers")
    tier_id = r.headers["location"].split("/")[-1].split("?")[0]
    assert (await all_tiers(client, admin))[tier_id]["name"] == name
    for path in ("/admin/tiers", f"/admin/tiers/{tier_id}", f"/admin/tiers/{tier_id}/archive"):
        page = await browser.get(path)
        assert XSS not in page.text and html.escape(name, quote=False) in page.text, path


async def test_tier_pages_refuse_users_and_forms_without_the_token(
    app: FastAPI, client: httpx.AsyncClient, browser: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    before = await all_tiers(client, admin)
    seeded = next(iter(before))
    async with client_for(app) as someone:
        await console_login(someone, user.email, user.password)
        for path in ("/admin/tiers", f"/admin/tiers/{seeded}", f"/admin/tiers/{seeded}/archive", "/admin/crypto-rates"):
            r = await someone.get(path)
            assert r.status_code == 403 and "This page is for administrators." in r.text, path
        for path in ("/admin/tiers", f"/admin/tiers/{seeded}", f"/admin/tiers/{seeded}/archive"):
            r = await post(someone, path, tier_form(name=unique("Mine")))
            assert r.status_code == 403, path
        r = await post(someone, "/admin/crypto-rates", {"ETH": "1", "valid_for_minutes": "60"})
        assert r.status_code == 403
    no_token = await browser.post("/admin/tiers", data=tier_form())
    assert no_token.status_code == 403
    wrong = await browser.post(f"/admin/tiers/{seeded}/archive", data={"csrf_token": "0" * 64})
    assert wrong.status_code == 403
    assert await all_tiers(client, admin) == before
    assert (await client.get("/api/admin/crypto-rates", headers=admin.headers)).json()["items"] == []


# --- crypto rates ----------------------------------------------------------------------------------------------


async def rates(client: httpx.AsyncClient, admin: TestUser) -> dict[str, dict[str, Any]]:
    r = await client.get("/api/admin/crypto-rates", headers=admin.headers)
    assert r.status_code == 200, r.text
    return {item["asset"]: item for item in r.json()["items"]}


async def test_an_admin_sets_crypto_rates(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser
) -> None:
    page = await browser.get("/admin/crypto-rates")
    assert page.status_code == 200 and "No rate has been set yet." in page.text and "USDC" in page.text
    r = await post(
        browser, "/admin/crypto-rates", {"ETH": "3,150.25", "BTC": "", "valid_for_minutes": "30"}, "/admin/crypto-rates"
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/crypto-rates?done=rates", r.text
    now = await rates(client, admin)
    assert set(now) == {"ETH"} and now["ETH"]["rate"] == "3150.25" and now["ETH"]["currency"] == "USD"
    expires = datetime.fromisoformat(now["ETH"]["expiresAt"])
    assert timedelta(minutes=29) < expires - utcnow() <= timedelta(minutes=30)
    (event,) = await audit(client, admin, "crypto.rates_set")
    assert event["actorId"] == admin.id and event["details"]["rates"] == {"ETH": "3150.25"}
    page = await browser.get(r.headers["location"])
    assert "The rates have been set." in page.text and 'id="rate-ETH"' in page.text and "3150.25 USD" in page.text
    r = await post(browser, "/admin/crypto-rates", {"BTC": "97000", "valid_for_minutes": "60"}, "/admin/crypto-rates")
    assert r.status_code == 303
    now = await rates(client, admin)
    assert (now["ETH"]["rate"], now["BTC"]["rate"]) == ("3150.25", "97000")  # a blank field leaves its rate


async def test_bad_rates_give_the_form_back_with_a_sentence(
    client: httpx.AsyncClient, browser: httpx.AsyncClient, admin: TestUser
) -> None:
    cases = {
        "ETH: a price in USD greater than 0": {"ETH": "-1", "valid_for_minutes": "60"},
        "BTC: a price in USD greater than 0": {"BTC": "a lot", "valid_for_minutes": "60"},
        "Enter the price of at least one asset.": {"ETH": " ", "valid_for_minutes": "60"},
        "Valid for: whole minutes": {"ETH": "3000", "valid_for_minutes": "0"},
    }
    for sentence, form in cases.items():
        r = await post(browser, "/admin/crypto-rates", form, "/admin/crypto-rates")
        assert r.status_code == 422 and '<p class="alert error" role="alert">' + sentence in r.text, sentence
        assert f'value="{form.get("ETH", "")}"' in r.text
    assert await rates(client, admin) == {}
    assert await audit(client, admin, "crypto.rates_set") == []
