"""Which request-rate limits apply to a principal, and spending one request of each (see limiter.py).

A user's requests all count against the user's limit (its tier's, or the defaults), whichever key or token
they come with; a key linked to a tier also has that tier's limit of its own, so one key cannot use up what
the user's other keys need. A key without a tier shares the user's limit only.

A request that finds its bucket empty waits for its turn when that comes within `patience`
(RATE_LIMIT_PATIENCE_SECONDS), so a client slightly over its rate is slowed down rather than refused; past
that it gets 429 after the whole patience, so a client retrying in a tight loop costs the server little.
"""

from __future__ import annotations

import asyncio
import hashlib

from pockity.auth.schemas import Principal
from pockity.ratelimit.limiter import Rate, RateLimited, RequestLimiter, refusal


def credential_id(value: str) -> bytes:
    """What the limiter remembers of a refused credential: a digest, never the secret or token itself."""
    return hashlib.blake2b(value.encode(), digest_size=16).digest()


def limits(principal: Principal, default: Rate) -> list[tuple[str, str, Rate]]:
    """(scope, subject, rate) for each limit the principal's request counts against: its key's, then its user's."""
    checks: list[tuple[str, str, Rate]] = []
    key = principal.key
    if key is not None and key.rate is not None:
        checks.append(("key", f"key:{key.id}", Rate.resolve(key.rate.per_second, key.rate.burst, default)))
    rate = Rate.resolve(principal.rate.per_second, principal.rate.burst, default)
    checks.append(("user", f"user:{principal.user_id}", rate))
    return checks


async def spend(limiter: RequestLimiter, principal: Principal, default: Rate, patience: float) -> RateLimited | None:
    """Count one request of the principal against each of its limits: the refusal, or None.

    A refusal comes after `patience` seconds, so a client retrying in a tight loop costs the server little;
    its `wait` is how long from then until a request could queue within the patience again."""
    for scope, subject, limit in limits(principal, default):
        wait = await limiter.admit(subject, limit, patience)
        if wait is not None:
            if patience > 0:
                await asyncio.sleep(patience)
            details = {"scope": scope, "perSecond": limit.per_second, "burst": limit.burst}
            return refusal(max(0.0, wait - 2 * patience), details)
    return None
