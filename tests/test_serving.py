"""serving.py without a `pockity serve` process: adopting the connections queued on a listener, and TLS on one
listener of two (a DrainingServer in a thread, on uvloop and on asyncio's loop)."""

from __future__ import annotations

import pickle
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trustme

from pockity.serving import DrainingServer, ListenerTls, ServingConfig, _accept_queued
from tests.fixtures.s3api import TlsFiles, write_tls_files


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


def test_connections_queued_on_the_listener_are_accepted_before_it_closes() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(3)]
        try:
            server: Any = SimpleNamespace(sockets=[listener])
            accepted = _accept_queued(server)
            assert len(accepted) == 3  # completed by the kernel, never accepted by anyone: all adopted
            for conn in accepted:
                conn.close()
            assert _accept_queued(server) == []  # an empty queue: nothing, no blocking
            listener.getsockname()  # the listener itself is still open
        finally:
            for c in clients:
                c.close()


# --- TLS on one listener (S3_API_TLS_CERT/S3_API_TLS_KEY) ----------------------------------------------------


async def _scheme_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the scheme and the listener's port uvicorn put in the scope."""
    if scope["type"] != "http":
        return
    body = f"{scope['scheme']} {scope['server'][1]}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def _serving(tls: TlsFiles, loop: str) -> Iterator[tuple[int, int]]:
    """A DrainingServer (in a thread) on two sockets, the second one TLS; yields (plain port, TLS port)."""
    plain, secure = (socket.create_server(("127.0.0.1", 0)) for _ in range(2))
    ports = (plain.getsockname()[1], secure.getsockname()[1])
    config = ServingConfig(
        _scheme_app,
        listener_tls=ListenerTls(ports[1], tls.cert, tls.key),
        loop=loop,
        http="pockity.serving:DrainingHttpToolsProtocol",
        lifespan="off",
        log_level="warning",
    )
    server = DrainingServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [plain, secure]})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield ports
    finally:
        server.should_exit = True
        thread.join(10)
        plain.close()
        secure.close()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_one_listener_serves_https_and_the_other_stays_plain_http(tls_files: TlsFiles, loop: str) -> None:
    trusted = ssl.create_default_context(cafile=tls_files.ca)
    with _serving(tls_files, loop) as (plain, secure):
        assert httpx.get(f"http://127.0.0.1:{plain}/").text == f"http {plain}"
        with httpx.Client(verify=trusted) as client:  # two requests on one connection, then a new one
            assert [client.get(f"https://127.0.0.1:{secure}/").text for _ in range(2)] == [f"https {secure}"] * 2
        assert httpx.get(f"https://localhost:{secure}/", verify=trusted).text == f"https {secure}"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # the system CAs: unknown
            httpx.get(f"https://127.0.0.1:{secure}/", verify=ssl.create_default_context())
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP to the TLS listener: closed, never served
            httpx.get(f"http://127.0.0.1:{secure}/")
        with pytest.raises(httpx.ConnectError):  # TLS to the plain listener
            httpx.get(f"https://127.0.0.1:{plain}/", verify=trusted)
        assert httpx.get(f"https://127.0.0.1:{secure}/", verify=trusted).text == f"https {secure}"  # still serving


def test_each_worker_process_builds_its_own_tls_context(tls_files: TlsFiles) -> None:
    config = ServingConfig(_scheme_app, listener_tls=ListenerTls(1, tls_files.cert, tls_files.key), workers=2)
    copy = pickle.loads(pickle.dumps(config))  # what uvicorn's Multiprocess hands each worker, before load()
    assert (copy.listener_tls, copy.tls_context) == (config.listener_tls, None)
    copy.load()
    assert isinstance(copy.tls_context, ssl.SSLContext)


def test_a_certificate_that_does_not_match_its_key_is_refused(tls_files: TlsFiles, tmp_path: Path) -> None:
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(tmp_path / "other.key")
    with pytest.raises(ssl.SSLError):
        ListenerTls(1, tls_files.cert, tmp_path / "other.key").context()
