"""Crypto quotes and rates: USDC at par, ETH and BTC at the admin's rates (rounded up) until they expire, no
quote for a paid or non-USD invoice, only admins set rates, and an asset without an address is not offered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from pockity.kit.time import utcnow
from pockity.models import CryptoRate
from tests.fixtures.app import client_for, make_settings, running_app
from tests.fixtures.crypto import error_of, expire_rates, new_tx_hash, payment_rows, quotes_of, set_rates, submit_tx
from tests.fixtures.payments import (
    BTC_ADDRESS,
    ETH_ADDRESS,
    USDC_ADDRESS,
    ProviderStub,
    audits,
    invoice,
    payment_settings,
    subscribe_invoice,
)
from tests.fixtures.users import TestUser, make_admin, make_user

# --- helpers -------------------------------------------------------------------------------------------------


async def _rates(app: FastAPI) -> dict[str, CryptoRate]:
    async with app.state.db.sessions() as s:
        return {r.asset: r for r in (await s.scalars(select(CryptoRate))).all()}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- quotes and rates ----------------------------------------------------------------------------------------


async def test_quotes_usdc_at_par_eth_btc_from_admin_rates_rounded_up_until_they_expire(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    assert inv["amountCents"] == 500 and inv["currency"] == "USD"
    q = quotes_of(inv)
    assert list(q) == ["ETH", "USDC", "BTC"]
    assert q["USDC"] | {"expiresAt": None} == {
        "asset": "USDC",
        "available": True,
        "address": USDC_ADDRESS,
        "amount": "5.00",
        "rate": "1",
        "expiresAt": None,
        "reason": None,
    }
    for asset, address in (("ETH", ETH_ADDRESS), ("BTC", BTC_ADDRESS)):
        assert q[asset] == {
            "asset": asset,
            "available": False,
            "address": address,
            "amount": None,
            "rate": None,
            "expiresAt": None,
            "reason": "no_current_rate",
        }
    # Without a rate an ETH payment cannot be submitted: nothing is stored.
    r = await submit_tx(pclient, payer, inv["id"], "ETH", new_tx_hash())
    assert error_of(r) == (409, "quote_unavailable") and r.json()["error"]["details"]["reason"] == "no_current_rate"
    assert await payment_rows(papp) == []

    before = utcnow()
    r = await set_rates(pclient, padmin, {"ETH": "3000", "BTC": "100000"}, minutes=30)
    assert r.status_code == 200, r.text
    assert {i["asset"]: (i["rate"], i["currency"]) for i in r.json()["items"]} == {
        "BTC": ("100000", "USD"),
        "ETH": ("3000", "USD"),
    }
    stored = await _rates(papp)
    assert set(stored) == {"ETH", "BTC"} and stored["ETH"].rate == "3000" and stored["ETH"].set_by == padmin.id
    assert timedelta(minutes=29) < stored["ETH"].expires_at - before < timedelta(minutes=31)
    listed = await pclient.get("/api/admin/crypto-rates", headers=padmin.headers)
    assert sorted(i["asset"] for i in listed.json()["items"]) == ["BTC", "ETH"]

    q = quotes_of(await invoice(pclient, payer, inv["id"]))
    # 5.00 / 3000 = 0.0016666… → rounded UP to 8 places (never short by rounding).
    assert (q["ETH"]["available"], q["ETH"]["amount"], q["ETH"]["rate"]) == (True, "0.00166667", "3000")
    assert q["ETH"]["address"] == ETH_ADDRESS and q["ETH"]["reason"] is None
    assert _ts(q["ETH"]["expiresAt"]) == stored["ETH"].expires_at
    assert (q["BTC"]["available"], q["BTC"]["amount"], q["BTC"]["rate"]) == (True, "0.00005000", "100000")
    assert q["USDC"]["amount"] == "5.00"

    # Setting a rate again replaces it: 5.00 / 30000 = 0.000166666… → 0.00016667.
    assert (await set_rates(pclient, padmin, {"BTC": "30000"})).status_code == 200
    assert (await _rates(papp))["BTC"].rate == "30000"
    assert quotes_of(await invoice(pclient, payer, inv["id"]))["BTC"]["amount"] == "0.00016667"
    rate_audits = await audits(papp, "crypto.rates_set")
    assert sorted((a.details["validForSeconds"], a.details["rates"]) for a in rate_audits) == [
        (1800, {"ETH": "3000", "BTC": "100000"}),
        (3600, {"BTC": "30000"}),
    ]
    assert {a.actor_id for a in rate_audits} == {padmin.id}

    await expire_rates(papp)
    q = quotes_of(await invoice(pclient, payer, inv["id"]))
    assert [(a, q[a]["available"], q[a]["reason"], q[a]["amount"]) for a in ("ETH", "BTC")] == [
        ("ETH", False, "no_current_rate", None),
        ("BTC", False, "no_current_rate", None),
    ]
    assert q["USDC"]["available"] is True  # a fixed rate does not expire
    r = await submit_tx(pclient, payer, inv["id"], "BTC", new_tx_hash())
    assert error_of(r) == (409, "quote_unavailable")
    assert await payment_rows(papp) == []


async def test_a_paid_invoice_offers_no_quotes(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    inv = await subscribe_invoice(pclient, payer, padmin)
    r = await pclient.patch(f"/api/admin/invoices/{inv['id']}", json={"status": "PAID"}, headers=padmin.headers)
    assert r.status_code == 200
    detail = await invoice(pclient, payer, inv["id"])
    assert detail["status"] == "PAID" and detail["crypto"] == []


async def test_only_admins_set_or_read_rates(
    pclient: httpx.AsyncClient, papp: FastAPI, payer: TestUser, padmin: TestUser
) -> None:
    r = await set_rates(pclient, payer, {"ETH": "1"})
    assert error_of(r) == (403, "admin_required")
    assert (await pclient.get("/api/admin/crypto-rates", headers=payer.headers)).status_code == 403
    r = await pclient.put("/api/admin/crypto-rates", json={"rates": {"ETH": "1"}})
    assert r.status_code == 401
    assert await _rates(papp) == {}
    assert await audits(papp, "crypto.rates_set") == []


@pytest.mark.parametrize(
    "body",
    [
        {"rates": {"ETH": "0"}},
        {"rates": {"ETH": "-3000"}},
        {"rates": {"BTC": -1}},
        {"rates": {"USDC": "1"}},
        {"rates": {"DOGE": "0.1"}},
        {"rates": {"ETH": "abc"}},
        {"rates": {"ETH": "NaN"}},
        {"rates": {"ETH": "Infinity"}},
        {"rates": {}},
        {"rates": {"ETH": "3000"}, "validForMinutes": 0},
        {"rates": {"ETH": "3000", "USDC": "1"}},  # one bad rate refuses the whole request
    ],
)
async def test_invalid_rates_are_refused_and_nothing_is_stored(
    pclient: httpx.AsyncClient, papp: FastAPI, padmin: TestUser, body: dict[str, Any]
) -> None:
    r = await pclient.put("/api/admin/crypto-rates", json=body, headers=padmin.headers)
    assert r.status_code == 422, r.text
    assert "error" in r.json()
    assert await _rates(papp) == {}
    assert await audits(papp, "crypto.rates_set") == []


# --- an asset without an address -------------------------------------------------------------------------


@pytest.fixture
async def btcless_app(pg_url: str, data_dir: Path, provider_stub: ProviderStub) -> AsyncIterator[FastAPI]:
    """The app with every provider configured except a BTC address."""
    values = payment_settings(provider_stub.url) | {"crypto_btc_address": None}
    async for application in running_app(make_settings(pg_url, data_dir, **values)):
        yield application


async def test_an_asset_without_an_address_is_not_offered(btcless_app: FastAPI) -> None:
    async with client_for(btcless_app) as client:
        user = await make_user(client, "btcless")
        admin = await make_admin(btcless_app, client)
        assert (await set_rates(client, admin, {"ETH": "3000", "BTC": "100000"})).status_code == 200
        inv = await subscribe_invoice(client, user, admin)
        q = quotes_of(inv)
        assert q["BTC"] == {
            "asset": "BTC",
            "available": False,
            "address": None,
            "amount": None,
            "rate": None,
            "expiresAt": None,
            "reason": "not_configured",
        }
        assert q["ETH"]["available"] is True and q["USDC"]["available"] is True
        methods = {
            m["id"]: m for m in (await client.get("/api/billing/methods", headers=user.headers)).json()["methods"]
        }
        assert (methods["crypto:BTC"]["available"], methods["crypto:BTC"]["address"]) == (False, None)
        assert (methods["crypto:ETH"]["available"], methods["crypto:ETH"]["address"]) == (True, ETH_ADDRESS)
        r = await submit_tx(client, user, inv["id"], "BTC", new_tx_hash())
        assert error_of(r) == (503, "provider_not_configured")
        assert await payment_rows(btcless_app) == []
        ok = await submit_tx(client, user, inv["id"], "ETH", new_tx_hash())
        assert ok.status_code == 201 and ok.json()["assetAmount"] == "0.00166667"
        assert [row.asset for row in await payment_rows(btcless_app)] == ["ETH"]
