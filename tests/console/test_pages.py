"""The console's pages over httpx: files, keys, dashboard, admin queue, error pages, the XSS pack."""

from __future__ import annotations

import html
import re
from datetime import date, timedelta

import httpx
import pytest
from fastapi import FastAPI

from pockity.console import files, routes
from pockity.console.charts import CHART_HEIGHT, daily_chart, meter
from pockity.console.templating import STATIC_DIR
from pockity.usage.service import DayUsage
from tests.console.helpers import console_login, csrf, post
from tests.fixtures.users import TestUser, make_user

XSS_FILE = "<img src=x onerror=alert(1)>.txt"


async def upload(client: httpx.AsyncClient, name: str, data: bytes, token: str | None = None) -> httpx.Response:
    token = token or await csrf(client, "/")
    return await client.post(
        "/files/upload",
        params={"name": name},
        files={"file": ("f", data)},
        headers={"X-CSRF-Token": token, "Accept": "text/plain"},
    )


async def test_files_upload_list_share_download_delete(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    for name in ("docs/a.txt", "docs/deep/b.txt", "top.txt"):
        r = await upload(client, name, b"hello " + name.encode())
        assert r.status_code == 201 and r.text == name
    top = await client.get("/files")
    assert top.status_code == 200
    assert 'href="/files?prefix=docs%2F">docs/</a>' in top.text and "top.txt" in top.text
    docs = await client.get("/files", params={"prefix": "docs/"})
    assert ">a.txt<" in docs.text and ">deep/<" in docs.text and "top.txt" not in docs.text
    assert 'href="/files">All files</a>' in docs.text  # breadcrumbs
    filtered = await client.get("/files", params={"prefix": "docs/", "filter": "de"})
    assert "deep/" in filtered.text and ">a.txt<" not in filtered.text
    r = await client.get("/files/download", params={"name": "top.txt"})
    assert r.status_code == 303
    got = await client.get(r.headers["location"])
    assert got.content == b"hello top.txt"
    share = await post(client, "/files/share", {"name": "top.txt", "expires_in": "86400"}, "/files")
    assert share.status_code == 200 and "for 1 day" in share.text
    url = html.unescape(
        re.search(r'id="share-url" aria-label="Share link"', share.text)
        and re.search(r'readonly value="([^"]+)" id="share-url"', share.text).group(1)
    )  # type: ignore[union-attr]
    assert (await httpx.AsyncClient(transport=client._transport, base_url=client.base_url).get(url)).content == (
        b"hello top.txt"
    )
    confirm = await client.get("/files/delete", params={"name": "top.txt"})
    assert "Delete this file?" in confirm.text
    r = await post(client, "/files/delete", {"name": "top.txt"}, "/files")
    assert r.status_code == 303
    assert (await client.get("/files/download", params={"name": "top.txt"})).status_code == 404
    listing = await client.get(r.headers["location"])
    assert "Deleted top.txt." in listing.text


async def test_files_listing_pages_with_a_cursor(
    client: httpx.AsyncClient, user: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "PAGE_SIZE", 5)  # pages of 5 show the cursor with few uploads
    await console_login(client, user.email, user.password)
    token = await csrf(client, "/")
    for i in range(7):
        assert (await upload(client, f"many/{i:03}.txt", b"x", token)).status_code == 201
    first = await client.get("/files", params={"prefix": "many/"})
    assert ">004.txt<" in first.text and ">005.txt<" not in first.text
    more = html.unescape(re.search(r'hx-get="([^"]+)"', first.text).group(1))  # type: ignore[union-attr]
    rows = await client.get(more, headers={"HX-Request": "true"})
    assert ">005.txt<" in rows.text and ">006.txt<" in rows.text and ">004.txt<" not in rows.text
    assert "<html" not in rows.text  # a fragment for htmx to append


async def test_quota_errors_are_plain_sentences(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    r = await upload(client, "../escape.txt", b"x")
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/plain")
    assert "{" not in r.text


async def test_the_xss_pack_renders_as_text(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/auth/register",
        json={"email": "xss-" + str(id(client)) + "@example.com", "password": "password-123", "name": "<b>Mallory</b>"},
    )
    assert r.status_code == 201, r.text
    await console_login(client, r.json()["email"], "password-123")
    assert (await upload(client, XSS_FILE, b"boo")).status_code == 201
    for path in ("/", "/files", "/keys"):
        page = await client.get(path)
        assert "<b>Mallory</b>" not in page.text and "&lt;b&gt;Mallory&lt;/b&gt;" in page.text, path
    files = await client.get("/files")
    assert XSS_FILE not in files.text
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in files.text
    created = await post(client, "/keys", {"name": "<script>alert(1)</script>", "scopes": "read"}, "/keys")
    assert created.status_code == 200
    assert "<script>alert(1)</script>" not in created.text and "&lt;script&gt;" in created.text


async def test_keys_create_shows_the_secret_once_and_revoke(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    token = await csrf(client, "/keys")
    r = await client.post(
        "/keys",
        data={
            "name": "backup",
            "scopes": ["read", "list"],
            "prefix": "backups/",
            "expiry_days": "30",
            "csrf_token": token,
        },
    )
    assert r.status_code == 200
    secret = re.search(r'id="secret-key" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    key_id = re.search(r'id="access-key-id" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    assert f"X-Secret-Key: {secret}" in r.text  # the curl snippet
    assert r.headers["cache-control"] == "no-store"
    # the key works on the API, limited as asked
    headers = {"X-Access-Key-Id": key_id, "X-Secret-Key": secret}
    me = (await client.get("/api/auth/me", headers=headers)).json()
    assert me["apiKey"]["scopes"] == ["list", "read"] and me["apiKey"]["prefix"] == "backups/"
    listing = await client.get("/keys")
    assert key_id in listing.text and secret not in listing.text
    api_key = (await client.get("/api/apikeys", headers=user.headers)).json()["items"][0]
    confirm = await client.get(f"/keys/{api_key['id']}/revoke")
    assert "stops working at once" in confirm.text
    r = await post(client, f"/keys/{api_key['id']}/revoke", {}, "/keys")
    assert r.status_code == 303
    assert (await client.get("/api/auth/me", headers=headers)).status_code == 401
    bad = await post(client, "/keys", {"name": "x", "prefix": "/abs"}, "/keys")
    assert bad.status_code == 422 and "alert error" in bad.text


def test_usage_bars_turn_amber_at_80_and_red_at_100() -> None:
    assert meter("Storage", 79, 100).css == "ok"
    assert meter("Storage", 80, 100).css == "warn"
    assert meter("Storage", 100, 100).css == "full"
    assert meter("Storage", 150, 100).percent == 100.0
    assert meter("Files", 1, 0).css == "full"


async def test_dashboard_shows_usage_and_plan(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    assert (await upload(client, "a.bin", b"x" * 2048)).status_code == 201
    page = await client.get("/")
    assert "2.0 KiB of" in page.text and "1 of" in page.text
    assert page.text.count('class="day"') == 30  # one bar per day of the chart


async def test_admin_pages_refuse_users_and_let_admins_resolve(
    app: FastAPI, client: httpx.AsyncClient, user: TestUser, admin: TestUser
) -> None:
    r = await client.post(
        "/api/tier-requests", json={"tierId": "tier_starter", "reason": "<i>need room</i>"}, headers=user.headers
    )
    assert r.status_code == 201, r.text
    await console_login(client, user.email, user.password)
    for path in ("/admin", "/admin/tier-requests"):
        page = await client.get(path)
        assert page.status_code == 403 and "This page is for administrators." in page.text, path
    r = await post(client, f"/admin/tier-requests/{r.json()['id']}", {"decision": "approve"}, "/files")
    assert r.status_code == 403
    client.cookies.clear()
    await console_login(client, admin.email, admin.password)
    queue = await client.get("/admin/tier-requests")
    assert queue.status_code == 200 and "&lt;i&gt;need room&lt;/i&gt;" in queue.text
    request_id = (await client.get("/api/tier-requests", headers=user.headers)).json()["items"][0]["id"]
    r = await post(
        client, f"/admin/tier-requests/{request_id}", {"decision": "approve", "note": "ok"}, "/admin/tier-requests"
    )
    assert r.status_code == 303
    resolved = (await client.get("/api/tier-requests", headers=user.headers)).json()["items"][0]
    assert resolved["status"] == "APPROVED" and resolved["note"] == "ok"
    audit = await client.get("/api/admin/audit", params={"action": "tier_request.approved"}, headers=admin.headers)
    assert any(e["targetId"] == request_id for e in audit.json()["items"])


async def test_error_pages_are_html_for_the_console_and_json_for_the_api(client: httpx.AsyncClient) -> None:
    page = await client.get("/no/such/page")
    assert page.status_code == 404 and "Page not found" in page.text and "text/html" in page.headers["content-type"]
    api = await client.get("/api/no/such/route")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    user = await make_user(client, "err")
    await console_login(client, user.email, user.password)
    missing = await client.get("/files/download", params={"name": "nothing.txt"})
    assert missing.status_code == 404 and "<html" in missing.text and "Traceback" not in missing.text


def test_the_chart_has_a_bar_per_day_scaled_to_the_peak() -> None:
    start = date(2026, 1, 1)
    items = [DayUsage(start, 100, 1, 0), DayUsage(start + timedelta(days=2), 50, 1, 0)]
    chart = daily_chart(items, start, start + timedelta(days=29))
    assert len(chart.bars) == 30 and chart.peak == 100
    first, empty, half = chart.bars[0], chart.bars[1], chart.bars[2]
    assert first.height == CHART_HEIGHT - 4 and first.y == 4
    assert empty.height == 0 and half.height == first.height / 2
    assert all(b.x < c.x for b, c in zip(chart.bars, chart.bars[1:], strict=False))


def test_static_files_are_small_pinned_and_licensed() -> None:
    shipped = [p for p in STATIC_DIR.rglob("*") if p.suffix in {".js", ".css"}]
    assert sum(p.stat().st_size for p in shipped) <= 150 * 1024
    vendor = {p.name for p in (STATIC_DIR / "vendor").iterdir()}
    assert {
        "htmx-2.0.4.min.js",
        "htmx-2.0.4.LICENSE",
        "alpinejs-csp-3.14.9.min.js",
        "alpinejs-csp-3.14.9.LICENSE",
    } <= vendor
    pyproject = (STATIC_DIR.parents[3] / "pyproject.toml").read_text()
    assert '"console/static/**/*"' in pyproject and '"console/templates/**/*.html"' in pyproject  # package data


async def test_an_unexpected_error_is_a_friendly_500_page(
    app: FastAPI, user: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail in a trace")

    monkeypatch.setattr(routes.billing, "subscription_state", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://pockity.test") as client:
        await console_login(client, user.email, user.password)
        page = await client.get("/")
    assert page.status_code == 500 and "Something went wrong" in page.text
    assert "secret detail" not in page.text and "Traceback" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_new_folder_opens_it_and_refuses_bad_names(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    r = await client.get("/files/new-folder", params={"prefix": "docs/", "name": " reports/ "})
    assert r.status_code == 303 and r.headers["location"] == "/files?prefix=docs%2Freports%2F&created=1"
    opened = await client.get(r.headers["location"])
    assert "New folder docs/reports/" in opened.text and "This folder is empty." in opened.text
    assert 'data-folder="docs/reports/"' in opened.text  # uploads from here go into it
    assert (await upload(client, "docs/reports/q3.txt", b"q3")).status_code == 201
    assert 'href="/files?prefix=docs%2Freports%2F">reports/</a>' in (await client.get("/files?prefix=docs/")).text
    for bad, sentence in (("", "Give the new folder a name."), ("a/../b", "The file name"), ("x\\y", "The file name")):
        refused = await client.get("/files/new-folder", params={"prefix": "docs/", "name": bad})
        assert refused.status_code == 422 and sentence in refused.text, (bad, refused.text[:300])


async def test_delete_many_confirms_then_deletes_only_the_chosen_files(
    client: httpx.AsyncClient, user: TestUser, app: FastAPI
) -> None:
    other = await make_user(client, "bulk-other")
    await console_login(client, user.email, user.password)
    token = await csrf(client, "/")
    for name in ("bulk/a.txt", "bulk/b.txt", "bulk/keep.txt", f"bulk/{XSS_FILE}"):
        assert (await upload(client, name, b"x", token)).status_code == 201
    listing = await client.get("/files", params={"prefix": "bulk/"})
    assert listing.text.count('form="bulk-delete"') == 5  # four checkboxes and the button
    chosen = ["bulk/a.txt", "bulk/b.txt", f"bulk/{XSS_FILE}"]
    confirm = await client.get("/files/delete-many", params={"names": chosen, "prefix": "bulk/"})
    assert confirm.status_code == 200 and "Delete 3 files?" in confirm.text
    assert html.escape(XSS_FILE, quote=False) in confirm.text and XSS_FILE not in confirm.text
    assert (await client.get("/files/delete-many", params={"prefix": "bulk/"})).status_code == 422
    names = [("names", n) for n in chosen] + [("prefix", "bulk/"), ("csrf_token", token)]
    no_token = await client.post("/files/delete-many", data={"names": chosen, "prefix": "bulk/"})
    assert no_token.status_code == 403
    r = await client.post("/files/delete-many", content=httpx.QueryParams(names).__str__(), headers=_FORM)
    assert r.status_code == 303 and r.headers["location"] == "/files?prefix=bulk%2F&deleted=3+files"
    left = await client.get(r.headers["location"])
    assert ">keep.txt<" in left.text and ">a.txt<" not in left.text and "Deleted 3 files." in left.text
    # Another user's names are their own space's names: nothing of theirs is touched, nothing here either.
    async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as them:
        await console_login(them, other.email, other.password)
        theirs = await csrf(them, "/")
        r = await them.post(
            "/files/delete-many",
            content=str(httpx.QueryParams([("names", "bulk/keep.txt"), ("csrf_token", theirs)])),
            headers=_FORM,
        )
        assert r.status_code == 404 and "The file does not exist." in r.text  # in their own space: no such file
    assert ">keep.txt<" in (await client.get("/files", params={"prefix": "bulk/"})).text


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_a_key_can_be_given_one_of_the_public_tiers(client: httpx.AsyncClient, user: TestUser) -> None:
    await console_login(client, user.email, user.password)
    form = await client.get("/keys")
    assert '<option value="tier_starter"' in form.text and "Your account's tier" in form.text
    r = await post(client, "/keys", {"name": "capped", "scopes": "write", "tier_id": "tier_starter"}, "/keys")
    assert r.status_code == 200, r.text
    key_id = re.search(r'id="access-key-id" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    [key] = [
        k
        for k in (await client.get("/api/apikeys", headers=user.headers)).json()["items"]
        if k["accessKeyId"] == key_id
    ]
    assert key["tierId"] == "tier_starter"
    assert "tier: Starter" in (await client.get("/keys")).text
    unknown = await post(client, "/keys", {"name": "x", "scopes": "read", "tier_id": "tier_nowhere"}, "/keys")
    assert unknown.status_code == 422 and "Unknown tier." in unknown.text
