"""Security headers on every response (pure ASGI: two precomputed header lists, one chosen per request).

- `X-Content-Type-Options: nosniff`: a browser never guesses a more active type than the one sent.
- `Referrer-Policy: no-referrer`: signed URLs and ids in our URLs never leak to other sites.
- `Strict-Transport-Security` only on HTTPS requests (HSTS over plain HTTP is ignored by browsers and would be
  wrong behind no TLS). The scheme is uvicorn's: `https` when the connection is TLS, or when a trusted proxy
  (FORWARDED_ALLOW_IPS) says so in X-Forwarded-Proto — never a client's own header.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS_VALUE = "max-age=31536000"
BASE = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def headers_for(scheme: str) -> dict[str, str]:
    """The same headers as a dict, for responses sent outside the middleware (the 500 handler)."""
    return {**BASE, "Strict-Transport-Security": HSTS_VALUE} if scheme == "https" else dict(BASE)


_HTTP = [(k.lower().encode(), v.encode()) for k, v in headers_for("http").items()]
_HTTPS = [(k.lower().encode(), v.encode()) for k, v in headers_for("https").items()]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _HTTPS if scope.get("scheme") == "https" else _HTTP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
