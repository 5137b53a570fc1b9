"""`Expect: 100-continue` answered early: close the connection, or the next request is read as this one's body.

A client that sends `Expect: 100-continue` (boto3 for every PutObject, curl for large uploads) waits for
`100 Continue` before sending the body. A server that answers at once with a final status — a quota error, a
bad signature — never asked for the body, so the client does not send it. uvicorn nonetheless keeps the
connection open expecting `Content-Length` bytes of body, and the client's next request on that connection is
taken as those bytes: it gets `400 Invalid HTTP request`. This middleware adds `Connection: close` to a response
that goes out before the body was asked for, so the connection ends cleanly and the client opens a new one.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ExpectContinueGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(
            name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return
        asked = False

        async def receive_body() -> Message:
            nonlocal asked
            asked = True  # uvicorn sends 100 Continue on the first receive()
            return await receive()

        async def send_response(message: Message) -> None:
            if message["type"] == "http.response.start" and not asked:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive_body, send_response)
