"""Which request-rate limits apply to a principal, and spending one request of each (see limiter.py).

A user's requests all count against the user's limit (its tier's, or the defaults), whichever key or token
they come with; a key linked to a tier also has that tier's limit of its own, so one key cannot use up what
the user's other keys need. A key without a tier shares the user's limit only.
"""

from __future__ import annotations

import hashlib

from pockity.auth.schemas import Principal
from pockity.ratelimit.limiter import Rate, RateLimited, RequestLimiter, refusal


def credential_id(value: str) -> bytes:
    """What the limiter remembers of a refused credential: a digest, never the secret or token itself."""
    return hashlib.blake2b(value.encode(), digest_size=16).digest()


async def spend(limiter: RequestLimiter, principal: Principal, default: Rate) -> RateLimited | None:
    """Count one request of the principal (its key's limit first, then the user's): the refusal, or None."""
    checks: list[tuple[str, str, Rate]] = []
    key = principal.key
    if key is not None and key.rate is not None:
        checks.append(("key", f"key:{key.id}", Rate.resolve(key.rate.per_second, key.rate.burst, default)))
    rate = Rate.resolve(principal.rate.per_second, principal.rate.burst, default)
    checks.append(("user", f"user:{principal.user_id}", rate))
    for scope, subject, limit in checks:
        retry_after = await limiter.admit(subject, limit)
        if retry_after is not None:
            return refusal(retry_after, {"scope": scope, "limit": limit.burst, "windowSeconds": limit.window})
    return None
