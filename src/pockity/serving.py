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
"""

from __future__ import annotations

import asyncio
import os
import socket

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DRAIN_GRACE_SECONDS = 1.0


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, except that shutdown() does not cut a connection a request may be
    arriving on (see the module docstring)."""

    _draining = False
    _receiving = False  # a request's head has begun to arrive and is not complete yet

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
