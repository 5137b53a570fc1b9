"""Driving the console over httpx like a browser: cookies in the client's jar, the CSRF token read from pages."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'<meta name="csrf-token" content="([0-9a-f]{64})">')


def csrf_of(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text[:500]
    return match.group(1)


async def csrf(client: httpx.AsyncClient, path: str = "/login") -> str:
    return csrf_of(await client.get(path))


async def console_login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    token = await csrf(client)
    r = await client.post("/login", data={"email": email, "password": password, "csrf_token": token})
    assert r.status_code == 303, r.text
    return r


async def post(client: httpx.AsyncClient, path: str, data: dict[str, str], page: str = "/") -> httpx.Response:
    """A form POST with the session's token, as the page's form would send it."""
    return await client.post(path, data={**data, "csrf_token": await csrf(client, page)})
