"""Unsubscribe links: a token signed with a key derived from JWT_SECRET, naming one user and one notice kind.
Only kinds that are not essential have one (billing notices always go out). Pure functions: the job signs
while rendering, the route verifies."""

from __future__ import annotations

import base64
import hashlib
import hmac

# The optional kinds, with the words the unsubscribe page uses for them.
OPTIONAL_KINDS = {"usage.alert": "storage usage alerts (80 % and 100 % of your quota)"}
_PURPOSE = b"pockity mail unsubscribe v1"


def unsubscribe_key(jwt_secret: str) -> bytes:
    """The signing key, separate from the JWT key itself (a token of one kind never verifies as the other)."""
    return hmac.new(jwt_secret.encode(), _PURPOSE, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, b"unsubscribe:" + payload.encode(), hashlib.sha256).digest()[:18])


def unsubscribe_token(key: bytes, user_id: str, kind: str) -> str:
    payload = _b64(f"{user_id}:{kind}".encode())
    return f"{payload}.{_signature(key, payload)}"


def verify_unsubscribe_token(key: bytes, token: str) -> tuple[str, str] | None:
    """(user id, kind) of a token this server signed for an optional kind; None for anything else."""
    payload, _, signature = token.partition(".")
    if not payload or not hmac.compare_digest(signature.encode(), _signature(key, payload).encode()):
        return None
    try:
        user_id, _, kind = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user_id, kind) if user_id and kind in OPTIONAL_KINDS else None


# Links that act on an account (verify an address, reset a password, confirm a new address). The outbox keeps
# only the token's id and the rendered bodies keep a placeholder: the link itself is derived here, with a key
# of its own, when the message is sent, so neither the database nor an admin's view of the outbox holds it.
ACTION_PLACEHOLDER = "{{pockity-action-link}}"
_ACTION_PURPOSE = b"pockity account action links v1"


def action_key(jwt_secret: str) -> bytes:
    return hmac.new(jwt_secret.encode(), _ACTION_PURPOSE, hashlib.sha256).digest()


def action_token(key: bytes, token_id: str) -> str:
    """The secret a link carries for account token `token_id`: the id and 144 bits of HMAC."""
    return f"{token_id}.{_b64(hmac.new(key, b'action:' + token_id.encode(), hashlib.sha256).digest()[:18])}"


def action_token_id(key: bytes, token: str) -> str | None:
    """The account token id of a link's token this server made (compared in constant time), else None."""
    token_id, _, _signature = token.partition(".")
    if not token_id or len(token_id) > 40 or not token_id.isalnum():
        return None
    return token_id if hmac.compare_digest(token.encode(), action_token(key, token_id).encode()) else None


def action_url(console_url: str, key: bytes, action: dict[str, str]) -> str:
    """The console page an action link opens, with its token."""
    return f"{console_url}{action['path']}?token={action_token(key, action['token_id'])}"
