"""Hardening seen through a real `pockity serve` (uvicorn, httptools) over TCP: which proxy headers are believed,
raw URL bytes, and clients that hang up mid-upload."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fixtures.server import running_server, server_env

PASSWORD = "correct horse battery"
THROTTLE = {
    "LOGIN_MAX_FAILURES_PER_CLIENT": "3",
    "LOGIN_MAX_FAILURES_PER_EMAIL": "100",
    "LOGIN_LOCKOUT_SECONDS": "600",
}


@pytest.fixture(scope="module")
def default_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """FORWARDED_ALLOW_IPS unset: no proxy is trusted."""
    env = server_env(pg_url, Path(tmp_path_factory.mktemp("default-server")), **THROTTLE)
    env.pop("FORWARDED_ALLOW_IPS", None)  # uvicorn reads this variable too; the default must hold without it
    with running_server(env) as base:
        yield base


@pytest.fixture(scope="module")
def proxied_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Behind a (local) proxy that is trusted."""
    env = server_env(
        pg_url, Path(tmp_path_factory.mktemp("proxied-server")), FORWARDED_ALLOW_IPS="127.0.0.1", **THROTTLE
    )
    with running_server(env) as base:
        yield base


def failed_logins(base: str, forwarded_for: list[str]) -> list[int]:
    """One failed login per address, each for a new email (so only the per-client limit can throttle)."""
    statuses = []
    with httpx.Client(base_url=base, timeout=10) as c:
        for address in forwarded_for:
            body = {"email": f"nobody-{uuid.uuid4().hex[:8]}@example.com", "password": "wrong password"}
            r = c.post("/api/auth/login", json=body, headers={"X-Forwarded-For": address})
            statuses.append(r.status_code)
    return statuses


def test_spoofed_forwarded_for_is_ignored_by_default(default_server: str) -> None:
    spoofed = [f"10.0.0.{i}" for i in range(1, 6)]
    assert failed_logins(default_server, spoofed) == [401, 401, 401, 429, 429]


def test_forwarded_for_from_a_trusted_proxy_is_the_client(proxied_server: str) -> None:
    assert failed_logins(proxied_server, [f"10.1.0.{i}" for i in range(1, 6)]) == [401] * 5
    # ... and each forwarded address is still throttled on its own.
    assert failed_logins(proxied_server, ["10.2.0.1"] * 5) == [401, 401, 401, 429, 429]


def register(base: str) -> dict[str, str]:
    email = f"srv-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=base, timeout=10) as c:
        assert c.post("/api/auth/register", json={"email": email, "password": PASSWORD, "name": "s"}).status_code == 201
        r = c.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}


def test_invalid_utf8_names_are_refused_by_the_real_server(default_server: str) -> None:
    headers = register(default_server)
    with httpx.Client(base_url=default_server, timeout=10, headers=headers) as c:
        for path in ("/api/storage/files/a%ff%fe.txt", "/api/storage/files/a%c0%af.txt"):
            r = c.put(path, content=b"x")
            assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_key"), r.text
        listing = c.get("/api/storage/files")
        assert listing.status_code == 200 and listing.json()["items"] == []


def count_499(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    pattern = (
        r'pockity_http_requests_total\{method="PUT",route="/api/storage/files/\{key:path\}",status="(\d+)"\} (\S+)'
    )
    counts = {status: float(n) for status, n in re.findall(pattern, text)}
    assert "500" not in counts, counts
    return counts.get("499", 0.0)


def test_a_client_hanging_up_mid_upload_is_counted_as_499(default_server: str) -> None:
    headers = register(default_server)
    before = count_499(default_server)
    url = urlsplit(default_server)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (
            "PUT /api/storage/files/cut.bin HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\nAuthorization: {headers['Authorization']}\r\nContent-Length: 10000000\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * 200_000)
        # A chunked-free way to know the server is reading the body: its reservation shows in the usage.
        deadline = time.monotonic() + 20
        while httpx.get(f"{default_server}/api/storage/usage", headers=headers).json()["bytesReserved"] == 0:
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.05)
    deadline = time.monotonic() + 20
    while count_499(default_server) == before:
        assert time.monotonic() < deadline, "no 499 was counted"
        time.sleep(0.05)
    assert count_499(default_server) == before + 1
    u = httpx.get(f"{default_server}/api/storage/usage", headers=headers).json()
    assert (u["bytesUsed"], u["objectCount"], u["bytesReserved"]) == (0, 0, 0)


def test_hsts_follows_the_scheme_only_from_a_trusted_proxy(default_server: str, proxied_server: str) -> None:
    proto = {"X-Forwarded-Proto": "https"}
    spoofed = httpx.get(f"{default_server}/api/open/health", headers=proto, timeout=10)
    assert spoofed.headers["x-content-type-options"] == "nosniff" and "strict-transport-security" not in spoofed.headers
    plain = httpx.get(f"{proxied_server}/api/open/health", timeout=10)
    assert "strict-transport-security" not in plain.headers
    proxied = httpx.get(f"{proxied_server}/api/open/health", headers=proto, timeout=10)
    assert proxied.headers["strict-transport-security"] == "max-age=31536000"
