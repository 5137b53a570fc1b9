"""serving.py's piece that needs no server process: adopting the connections queued on a listener."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

from pockity.serving import _accept_queued


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
