"""How `pockity serve` ends a connection on SIGTERM, so a rolling restart behind a balancer fails no request.

uvicorn's graceful shutdown stops listening, lets requests in progress finish, and closes every connection that
has no request in progress at once. A connection the balancer opened just before the listener closed, whose
request has been sent but not yet read, is then closed with unread data, which the kernel answers with a reset:
the balancer sees "connection reset" after sending the request, and since an unbuffered body cannot be sent
again it answers 502. Here such a connection gets a short grace instead: a request that arrives in it is served
(with `Connection: close`); a connection that stays silent is closed when the grace ends.

Connections the kernel has completed but the server has not accepted yet are reset the same way when the
listener closes. `DrainingServer` (one worker per process) accepts whatever is queued right before closing the
listener, in the same step, so only a connection completing within those microseconds can still be reset.

TLS for one listener only (the S3 API's, `S3_API_TLS_CERT`/`S3_API_TLS_KEY`): uvicorn's own `ssl_*` options
apply to every socket a server serves, and its worker processes build uvicorn's Server themselves, so a
per-socket context cannot be handed to `create_server`. Instead `ServingConfig` names the TLS port, and a
connection accepted on it is put behind the loop's own TLS protocol (uvloop's, what `create_server(ssl=...)`
sets up on accept) before it becomes an HTTP connection. The same code serves one process, N workers and the
connections `DrainingServer` adopts at shutdown; a connection on the other port costs an isinstance check.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvloop.loop import SSLProtocol as UvloopSSLProtocol  # type: ignore[attr-defined]

DRAIN_GRACE_SECONDS = 1.0
TLS_HANDSHAKE_TIMEOUT_SECONDS = 30.0
# Closing a TLS connection waits for the peer's close_notify; a pooled client that is not reading its idle
# connection never sends one, and would otherwise hold a graceful shutdown for the loop's default 30 s. The same
# time bounds flushing what is still buffered at close: at most the transport's high-water mark (uvicorn pauses
# the app above it), which a live client takes in far less.
TLS_SHUTDOWN_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class ListenerTls:
    """The listener on `port` serves HTTPS with this certificate chain and key (PEM files)."""

    port: int
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A server context (the ssl module's defaults: TLS 1.2+, no compression); OSError/SSLError if unusable."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


class ServingConfig(uvicorn.Config):
    """uvicorn's Config, plus the listener that speaks TLS. uvicorn pickles it to each worker process before
    `load()`; the SSLContext, which cannot be pickled, is built by `load()` in the process that serves."""

    def __init__(self, app: Any, *, listener_tls: ListenerTls | None = None, **options: Any) -> None:
        super().__init__(app, **options)
        self.listener_tls = listener_tls
        self.tls_context: ssl.SSLContext | None = None

    def load(self) -> None:
        if self.listener_tls is not None and self.tls_context is None:
            self.tls_context = self.listener_tls.context()
        super().load()


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, except that shutdown() does not cut a connection a request may be
    arriving on (see the module docstring)."""

    _draining = False
    _receiving = False  # a request's head has begun to arrive and is not complete yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """An HTTP connection; one accepted on the TLS listener first gets a TLS layer in front of it."""
        context = _tls_context_for(self.config, transport)
        if context is None:
            super().connection_made(transport)
            return
        # What create_server(ssl=...) does on accept: the loop's TLS protocol takes the transport now, before the
        # loop starts reading it (uvloop starts reading right after this returns, whatever pause_reading said),
        # and calls connection_made again with the TLS transport once the handshake is done. A failed handshake
        # closes the connection there; this protocol never hears of it.
        tls = _ssl_protocol_class(self.loop)(
            self.loop,
            self,
            context,
            None,
            server_side=True,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_SECONDS,
            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_SECONDS,
        )
        transport.set_protocol(tls)
        tls.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:  # None: lost during the TLS handshake, before it was an HTTP connection
            super().connection_lost(exc)

    def shutdown(self) -> None:
        """Called by uvicorn when the graceful shutdown begins."""
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a request in progress: close after its response, as uvicorn does
            return
        self.loop.call_later(DRAIN_GRACE_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.transport.is_closing():
            return
        if self._receiving or (self.cycle is not None and not self.cycle.response_complete):
            self.loop.call_later(DRAIN_GRACE_SECONDS, self._close_if_idle)  # its response closes it
            return
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._receiving = False
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, except that closing the listener first adopts the connections queued on it."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Accept what is queued, close the listeners in the same step, then shut down as uvicorn does."""
        queued = [conn for server in self.servers for conn in _accept_queued(server)]
        for server in self.servers:
            server.close()  # before any await: nothing can queue between the last accept and this
        loop = asyncio.get_running_loop()
        for conn in queued:
            await loop.connect_accepted_socket(self._protocol, conn)
        await super().shutdown(sockets)  # calls shutdown() on every connection, the adopted ones included

    def _protocol(self) -> asyncio.Protocol:
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


def _tls_context_for(config: uvicorn.Config, transport: asyncio.BaseTransport) -> ssl.SSLContext | None:
    """The TLS context when `transport` was accepted on the TLS listener and is not TLS yet, else None."""
    if not isinstance(config, ServingConfig) or config.tls_context is None or config.listener_tls is None:
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sockname = transport.get_extra_info("sockname")
    return config.tls_context if sockname and sockname[1] == config.listener_tls.port else None


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's own TLS protocol: uvloop's (C) under `pockity serve`, asyncio's otherwise."""
    return UvloopSSLProtocol if isinstance(loop, uvloop.Loop) else asyncio.sslproto.SSLProtocol


def _accept_queued(server: asyncio.base_events.Server) -> list[socket.socket]:
    accepted: list[socket.socket] = []
    for listener in server.sockets:
        # A duplicate of the listening descriptor: accepting on it takes from the same queue.
        with socket.socket(fileno=os.dup(listener.fileno())) as dup:
            dup.setblocking(False)
            while True:
                try:
                    conn, _ = dup.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                accepted.append(conn)
    return accepted
