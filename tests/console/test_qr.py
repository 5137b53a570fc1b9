"""The invoice page's QR codes, read back as a wallet would: the page's SVG drawn by chromium, decoded by zbar."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

from pockity.console.qr import payment_uri
from tests.console.helpers import console_login
from tests.fixtures.payments import BTC_ADDRESS, ETH_ADDRESS, USDC_ADDRESS, subscribe_invoice
from tests.fixtures.users import TestUser

CHROMIUM = shutil.which("chromium")
ZBARIMG = shutil.which("zbarimg")


@pytest.mark.parametrize(
    ("asset", "amount", "expected"),
    [
        ("BTC", "0.00012500", f"bitcoin:{BTC_ADDRESS}?amount=0.000125"),
        ("ETH", "0.00166667", f"ethereum:{ETH_ADDRESS}?value=1666670000000000"),
        ("ETH", "1", f"ethereum:{ETH_ADDRESS}?value=1000000000000000000"),
        ("USDC", "5.00", USDC_ADDRESS),  # a token transfer: the address alone
        ("BTC", None, BTC_ADDRESS),
        ("BTC", "not a number", BTC_ADDRESS),
        ("ETH", "-1", ETH_ADDRESS),
        ("ETH", "0.0000000000000000001", ETH_ADDRESS),  # less than a wei: no URI that would round it
    ],
)
def test_payment_uri(asset: str, amount: str | None, expected: str) -> None:
    address = {"BTC": BTC_ADDRESS, "ETH": ETH_ADDRESS, "USDC": USDC_ADDRESS}[asset]
    assert payment_uri(asset, address, amount) == expected


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM and ZBARIMG, "scripts/ensure-browser installs chromium and zbar-tools"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        await b.close()


async def _decoded(browser: Browser, svg: str, path: Path) -> str:
    page = await browser.new_page(viewport={"width": 400, "height": 400})
    try:
        await page.set_content(f"<body style='margin:0;background:#fff'>{svg}</body>")
        await page.locator("svg").screenshot(path=str(path))
    finally:
        await page.close()
    out = subprocess.run([ZBARIMG or "zbarimg", "--raw", "-q", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def test_the_invoice_page_codes_decode_to_what_a_wallet_needs(
    pclient: httpx.AsyncClient, payer: TestUser, padmin: TestUser, browser: Browser, tmp_path: Path
) -> None:
    rates = await pclient.put(
        "/api/admin/crypto-rates", json={"rates": {"ETH": "3000", "BTC": "40000"}}, headers=padmin.headers
    )
    assert rates.status_code == 200, rates.text
    inv = await subscribe_invoice(pclient, payer, padmin)  # 5.00 USD
    await console_login(pclient, payer.email, payer.password)
    page = await pclient.get(f"/billing/invoices/{inv['id']}")
    assert page.status_code == 200
    codes = re.findall(r'<h4>(\w+)</h4>.*?<figure class="qr">(<svg .*?</svg>)', page.text, flags=re.S)
    assert sorted(asset for asset, _ in codes) == ["BTC", "ETH", "USDC"]
    decoded = {asset: await _decoded(browser, svg, tmp_path / f"{asset}.png") for asset, svg in codes}
    # 5.00 / 3000 = 0.00166667 ETH and 5.00 / 40000 = 0.000125 BTC (rounded up to 8 places), as quoted beside.
    assert decoded == {
        "ETH": f"ethereum:{ETH_ADDRESS}?value=1666670000000000",
        "BTC": f"bitcoin:{BTC_ADDRESS}?amount=0.000125",
        "USDC": USDC_ADDRESS,
    }
    assert 'id="amount-ETH" value="0.00166667"' in page.text and 'id="amount-BTC" value="0.00012500"' in page.text
    assert page.text.count('<svg role="img"') == 3 and "<script" not in "".join(svg for _, svg in codes)
