"""How `pockity serve` ends a connection on SIGTERM, so a rolling restart behind a balancer fails no request.

uvicorn's graceful shutdown stops listening, lets requests in progress finish, and closes every connection that
has no request in progress at once. A connection the balancer opened just before the listener closed, whose
request has been sent but not yet read, is then closed with unread data, which the kernel answers with a reset:
the balancer sees "connection reset" after sending the request, and since an unbuffered body cannot be sent
again it answers 502. Here such a connection gets a short grace instead: a request that arrives in it is served
(with `Connection: close`); a connection that stays silent is closed when the grace ends.
"""

from __future__ import annotations

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
