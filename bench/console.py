"""The `console` benchmark: server time of the console's heaviest pages (issue 15's speed bar).

Sets up, through the server's own API and console: a user with a folder of FOLDER_FILES files (uploaded
through the REST API) and an admin (ADMIN_EMAIL at start-up); then seeds ADMIN_USERS more accounts straight
into the database (setup only: registering 10,000 users through bcrypt would take an hour and measures
nothing the page does). Both sign in through the console's login form, so the pages run with a real session
cookie. Then wrk, one connection at a time so latency is the server's time for the page, not queueing:

  files_folder   GET /files?prefix=folder/      the folder's first page (breadcrumbs, 50 rows, next cursor)
  admin_users    GET /admin/users               the admin's user list with 10,000 users (first page)
  admin_search   GET /admin/users?q=seed-0042   a search over them
  dashboard      GET /                          usage bars, plan, the 30-day chart

Reported per page: p50/p99 latency, req/s and server CPU ms per request. Target (printed, never failing the
run): p50 <= 50 ms for each. The size of the JavaScript + CSS a page loads is reported beside (target
<= 150 KB uncompressed).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import lib
from lib import BenchError, Server, WrkRequest, log

PASSWORD = "bench correct horse battery staple"
ADMIN_EMAIL = f"bench-admin-{uuid.uuid4().hex[:8]}@example.com"
SERVER_ENV = (("ADMIN_EMAIL", ADMIN_EMAIL), ("ADMIN_PASSWORD", PASSWORD))
FOLDER_FILES = 1000
ADMIN_USERS = 10_000
P50_TARGET_MS = 50.0
ASSETS_TARGET_BYTES = 150_000
CONNECTIONS = 1  # one request at a time: latency is the server's time for the page, not queueing
_CSRF = re.compile(r'<meta name="csrf-token" content="([0-9a-f]{64})">')
_ASSET = re.compile(r'(?:src|href)="(/static/[^"]+\.(?:js|css))"')


def _request(
    server: Server, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    parts = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _page(server: Server, path: str, cookie: str) -> tuple[int, str]:
    parts = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _cookies(resp: http.client.HTTPResponse) -> dict[str, str]:
    jar = {}
    for header in resp.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return jar


def console_login(server: Server, email: str) -> str:
    """Sign in through the console's form (CSRF token bound to the anonymous cookie); the session cookie."""
    parts = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request("GET", "/login")
        resp = conn.getresponse()
        page = resp.read().decode()
        anon = _cookies(resp).get("pockity_anon")
        match = _CSRF.search(page)
        if resp.status != 200 or not anon or not match:
            raise BenchError(f"console login page: HTTP {resp.status}")
        form = urlencode({"email": email, "password": PASSWORD, "csrf_token": match.group(1), "next": "/"})
        conn.request(
            "POST",
            "/login",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"pockity_anon={anon}"},
        )
        resp = conn.getresponse()
        resp.read()
        session = _cookies(resp).get("pockity_session")
        if resp.status != 303 or not session:
            raise BenchError(f"console login of {email}: HTTP {resp.status}")
        return f"pockity_session={session}"
    finally:
        conn.close()


def _setup_user(server: Server) -> dict[str, Any]:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    status, body = lib.http_json(
        "POST", server.url("/api/auth/register"), {"email": email, "password": PASSWORD, "name": "bench"}
    )
    lib.expect(status, body, 201, "register")
    status, body = lib.http_json("POST", server.url("/api/auth/login"), {"email": email, "password": PASSWORD})
    token = lib.expect(status, body, 200, "login")["token"]
    status, body = lib.http_json(
        "POST", server.url("/api/apikeys"), {"name": "bench key"}, headers={"Authorization": f"Bearer {token}"}
    )
    key = lib.expect(status, body, 201, "create API key")
    headers = {"X-Access-Key-Id": key["accessKeyId"], "X-Secret-Key": key["secretKey"]}

    def put(i: int) -> None:
        name = f"folder/file-{i:05d} with a longer name to render.txt"
        status, _ = _request(server, "PUT", "/api/storage/files/" + quote(name), f"file {i}".encode(), headers)
        if status != 201:
            raise BenchError(f"upload {name!r}: HTTP {status}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(FOLDER_FILES)))
    return {"email": email}


async def _seed_users(database_url: str, count: int) -> None:
    """`count` accounts in one INSERT ... SELECT (setup only; see the module docstring)."""
    import asyncpg

    from pockity.kit.ids import new_id

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        rows = [
            (new_id(), f"seed-{i:05d}@example.com", f"Seeded user {i}", "x" * 60, "user", True, now, now)
            for i in range(count)
        ]
        await conn.copy_records_to_table(
            "users",
            records=rows,
            columns=["id", "email", "name", "password_hash", "role", "is_active", "created_at", "updated_at"],
        )
    finally:
        await conn.close()


def _assets_bytes(server: Server, page: str) -> dict[str, int]:
    sizes = {}
    for path in sorted(set(_ASSET.findall(page))):
        status, body = _request(server, "GET", path)
        if status != 200:
            raise BenchError(f"asset {path}: HTTP {status}")
        sizes[path] = len(body)
    return sizes


def bench_console(server: Server, opts: argparse.Namespace, wrk: str) -> tuple[dict[str, Any], list[str]]:
    user = _setup_user(server)
    log(f"seeding {ADMIN_USERS} accounts")
    asyncio.run(_seed_users(server.database_url, ADMIN_USERS))
    user_cookie = console_login(server, user["email"])
    admin_cookie = console_login(server, ADMIN_EMAIL)
    pages: dict[str, tuple[str, str, str]] = {
        "files_folder": ("/files?prefix=folder%2F", user_cookie, "file-00000 with a longer name"),
        "admin_users": ("/admin/users", admin_cookie, "seed-"),
        "admin_search": ("/admin/users?q=seed-0042", admin_cookie, "seed-00420@example.com"),
        "dashboard": ("/", user_cookie, "Storage"),
    }
    errors: list[str] = []
    results: dict[str, Any] = {}
    assets: dict[str, int] = {}
    for name, (path, cookie, marker) in pages.items():
        status, body = _page(server, path, cookie)
        if status != 200 or marker not in body:
            raise BenchError(f"preflight {name}: HTTP {status}, {marker!r} not on the page")
        assets.update(_assets_bytes(server, body))
    for name, (path, cookie, _) in pages.items():
        req = WrkRequest(path, headers={"Cookie": cookie})
        lib.run_wrk(wrk, server.base_url, req, label=name, duration=opts.warmup, connections=CONNECTIONS, threads=1)
        r = lib.run_wrk(
            wrk,
            server.base_url,
            req,
            label=name,
            duration=opts.duration,
            connections=CONNECTIONS,
            threads=1,
            server=server,
        )
        if r.error_count:
            errors.append(f"{name}: {lib.describe_errors(r)}")
        results[name] = {
            "path": path,
            "rps": r.rps,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "server_cpu_ms_per_req": r.server_cpu_ms_per_req,
            "sample": r.as_dict(),
        }
        log(f"  {name:<13} p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  CPU {r.server_cpu_ms_per_req} ms/req")
    total_assets = sum(assets.values())
    entry = {
        "connections": CONNECTIONS,
        "folder_files": FOLDER_FILES,
        "users": ADMIN_USERS,
        "pages": results,
        "assets_bytes": assets,
        "assets_total_bytes": total_assets,
        "targets": {
            "p50_ms_max": P50_TARGET_MS,
            **{f"{n}_p50_pass": e["p50_ms"] <= P50_TARGET_MS for n, e in results.items()},
            "assets_bytes_max": ASSETS_TARGET_BYTES,
            "assets_pass": total_assets <= ASSETS_TARGET_BYTES,
        },
    }
    _print(entry)
    return entry, errors


def _print(entry: dict[str, Any]) -> None:
    verdict = {True: "PASS", False: "FAIL"}
    print()
    print(f"console pages, {entry['connections']} connections ({entry['folder_files']} files, {entry['users']} users)")
    print(f"{'page':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}  p50 <= {P50_TARGET_MS:.0f} ms")
    for name, e in entry["pages"].items():
        cpu = e["server_cpu_ms_per_req"]
        print(
            f"{name:<14}{e['rps']:>9.1f}{e['p50_ms']:>9.2f}{e['p99_ms']:>9.2f}"
            f"{'n/a' if cpu is None else f'{cpu:.2f}':>12}  {verdict[entry['targets'][f'{name}_p50_pass']]}"
        )
    print(
        f"JS + CSS a page loads: {entry['assets_total_bytes']:,} bytes "
        f"(<= {ASSETS_TARGET_BYTES:,}: {verdict[entry['targets']['assets_pass']]})"
    )
    print(flush=True)
