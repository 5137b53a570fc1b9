"""The CounterStore in Redis (REDIS_URL): the only module that imports the redis client.

INCRBY and EXPIRE in one MULTI/EXEC round trip: the key lives a minute past its window, so Redis cleans up.
"""

from __future__ import annotations

from redis.asyncio import Redis


class RedisCounters:
    def __init__(self, url: str, prefix: str) -> None:
        self.client: Redis = Redis.from_url(url)
        self.prefix = prefix

    def key(self, subject: str, window_start: int) -> str:
        return f"{self.prefix}rl:{subject}:{window_start}"

    async def take(self, subject: str, window_start: int, n: int, ttl: int) -> int:
        key = self.key(subject, window_start)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incrby(key, n)
            pipe.expire(key, ttl)
            count, _ = await pipe.execute()
        return int(count)

    async def close(self) -> None:
        await self.client.aclose()
