"""The CounterStore in Redis (REDIS_URL): the only module that imports the redis client.

The GCRA step of limiter.grant() as a Lua script, so it runs atomically in Redis in one round trip. The key
expires when its bucket would be full again (a missing key is a full bucket), so Redis cleans up by itself.
Epoch microseconds stay below 2^53, so Lua's doubles hold them exactly.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from pockity.ratelimit.limiter import Lease, Rate, lease_from

_TAKE = """
local now, n, interval, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local base = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local granted = math.max(0, math.min(n, math.floor((now + cap - base) / interval)))
local tat = base + granted * interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
return {granted, string.format('%d', tat)}
"""


class RedisCounters:
    def __init__(self, url: str, prefix: str) -> None:
        self.client: Redis = Redis.from_url(url)
        self.prefix = prefix
        self._take: Any = self.client.register_script(_TAKE)

    async def take(self, subject: str, now_us: int, n: int, rate: Rate) -> Lease:
        args = [now_us, n, rate.interval_us, rate.capacity_us]
        granted, tat = await self._take(keys=[f"{self.prefix}rl:{subject}"], args=args)
        return lease_from(int(granted), int(tat), now_us, n, rate)

    async def close(self) -> None:
        await self.client.aclose()
