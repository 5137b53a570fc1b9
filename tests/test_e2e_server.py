"""The real server process (`pockity serve`) over TCP: the README flow, graceful SIGTERM, refusing bad config."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

POCKITY = shutil.which("pockity", path=str(Path(sys.executable).parent)) or shutil.which("pockity")
GRACEFUL_SECONDS = 10
ADMIN_PASSWORD = "admin password 1"


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path
    admin_email: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data_dir),
        "DATA_DIR": str(data_dir),
        "ENVIRONMENT": "production",
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
        "GRACEFUL_SHUTDOWN_SECONDS": str(GRACEFUL_SECONDS),
        **extra,
    }


def wait_until_healthy(proc: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/api/open/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server not healthy after {timeout}s:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@pytest.fixture
def server(pg_url: str, tmp_path: Path) -> Iterator[Server]:
    assert POCKITY, "the pockity console script is not installed next to the test interpreter"
    port = free_port()
    admin_email = f"root-{uuid.uuid4().hex[:8]}@example.com"
    env = server_env(
        tmp_path,
        # The seed's plain form: the server must pick the async driver itself.
        DATABASE_URL=pg_url.replace("postgresql+asyncpg://", "postgresql://"),
        JWT_SECRET=secrets.token_urlsafe(48),
        KEY_ENCRYPTION_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        ADMIN_EMAIL=admin_email,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [POCKITY, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, base_url, log)
        yield Server(proc, base_url, log, admin_email)
    finally:
        stop(proc)


def test_readme_flow_over_tcp(server: Server) -> None:
    email, password = f"reader-{uuid.uuid4().hex[:8]}@example.com", "reader password 1"
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        health = c.get("/api/open/health")
        assert health.json()["status"] == "ok" and health.json()["database"] == "ok"

        r = c.post("/api/auth/register", json={"email": email, "password": password, "name": "Reader"})
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]

        r = c.post("/api/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        token = r.json()["token"]

        me = c.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json()["id"] == user_id and me.json()["email"] == email and me.json()["role"] == "USER"
        assert me.headers["X-Request-ID"]

        r = c.post("/api/auth/login", json={"email": server.admin_email, "password": ADMIN_PASSWORD})
        assert r.status_code == 200, f"{r.text}\n{server.output()}"
        admin_headers = {"Authorization": f"Bearer {r.json()['token']}"}
        listed = c.get("/api/admin/users", headers=admin_headers)
        assert listed.status_code == 200, listed.text
        roles = {u["email"]: u["role"] for u in listed.json()["items"]}
        assert roles[server.admin_email] == "ADMIN" and roles[email] == "USER"

        assert c.get("/api/admin/users", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_sigterm_finishes_the_in_flight_request_and_exits_0(server: Server) -> None:
    email, password = f"late-{uuid.uuid4().hex[:8]}@example.com", "late password 1"
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        assert c.post("/api/auth/register", json={"email": email, "password": password, "name": "L"}).status_code == 201

    # A login whose body arrives slowly: the request is in flight when SIGTERM lands.
    first_chunk_sent = threading.Event()
    result: dict[str, object] = {}

    def slow_body() -> Iterator[bytes]:
        yield b'{"email": "' + email.encode() + b'", '
        first_chunk_sent.set()
        time.sleep(1.5)
        yield b'"password": "' + password.encode() + b'"}'

    def slow_login() -> None:
        try:
            with httpx.Client(base_url=server.base_url, timeout=GRACEFUL_SECONDS) as c:
                r = c.post("/api/auth/login", content=slow_body(), headers={"Content-Type": "application/json"})
                result["status"], result["body"] = r.status_code, r.json()
        except Exception as exc:
            result["error"] = repr(exc)

    worker = threading.Thread(target=slow_login)
    worker.start()
    assert first_chunk_sent.wait(5)
    time.sleep(0.5)  # let the server accept the connection and read the first chunk
    server.proc.send_signal(signal.SIGTERM)

    start = time.monotonic()
    code = server.proc.wait(timeout=GRACEFUL_SECONDS + 5)
    worker.join(5)
    assert time.monotonic() - start < GRACEFUL_SECONDS
    assert result.get("status") == 200, result
    assert "token" in result["body"]  # type: ignore[operator]
    assert code == 0, f"exit code {code} (negative: killed by that signal)\n{server.output()}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base_url}/api/open/health", timeout=1)
    assert "Traceback" not in server.output()


def test_sigterm_serves_a_request_arriving_on_a_connection_opened_before_it(server: Server) -> None:
    """A balancer's connection made just before the listener closed, whose request is sent after: served with
    `Connection: close`, not reset (uvicorn alone closes it with the request unread, and the kernel resets it)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=5)
    try:
        time.sleep(0.2)  # accepted by the server, nothing sent yet
        server.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:  # the listener is closed: the shutdown has reached our connection
            with socket.socket() as probe:
                return probe.connect_ex((host, int(port))) != 0

        deadline = time.monotonic() + 5
        while not refused():
            assert time.monotonic() < deadline, "the server kept listening after SIGTERM"
            time.sleep(0.01)
        conn.sendall(f"GET /api/open/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    finally:
        conn.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 200"), answer[:300]
    assert "connection: close" in head
    assert server.proc.wait(timeout=GRACEFUL_SECONDS) == 0, server.output()


def test_production_without_jwt_secret_refuses_to_start(tmp_path: Path) -> None:
    assert POCKITY
    env = server_env(tmp_path, KEY_ENCRYPTION_KEY=base64.b64encode(secrets.token_bytes(32)).decode())
    proc = subprocess.Popen(
        [POCKITY, "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode != 0
    assert "JWT_SECRET" in stderr
    assert "Traceback" not in stdout + stderr
    assert "serving on" not in stdout
