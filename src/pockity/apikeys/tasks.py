"""Key activity (last use, last IP, request count) gathered in memory and flushed in batches.

A write per authenticated request would double the cost of every API call; instead each process
adds its counts to the row about once a minute and on shutdown. Counts from several processes add up.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from pockity.apikeys import repository
from pockity.db import Database

log = logging.getLogger("pockity.apikeys")


@dataclass
class _Use:
    count: int
    last_used_at: datetime
    last_ip: str | None


class ActivityTracker:
    def __init__(self) -> None:
        self._pending: dict[str, _Use] = {}

    def note(self, key_id: str, ip: str | None, at: datetime) -> None:
        use = self._pending.get(key_id)
        if use is None:
            self._pending[key_id] = _Use(1, at, ip)
        else:
            use.count += 1
            if at >= use.last_used_at:
                use.last_used_at, use.last_ip = at, ip

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, db: Database) -> int:
        """Write what has accumulated; on failure the counts are kept for the next try."""
        batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            async with db.sessions() as session, session.begin():
                for key_id in sorted(batch):  # a fixed order avoids lock cycles between processes
                    use = batch[key_id]
                    await repository.add_activity(
                        session, key_id, count=use.count, last_used_at=use.last_used_at, last_ip=use.last_ip
                    )
        except Exception:
            for key_id, use in batch.items():
                self._merge(key_id, use)
            raise
        return len(batch)

    def _merge(self, key_id: str, use: _Use) -> None:
        cur = self._pending.get(key_id)
        if cur is None:
            self._pending[key_id] = use
            return
        cur.count += use.count
        if use.last_used_at > cur.last_used_at:
            cur.last_used_at, cur.last_ip = use.last_used_at, use.last_ip

    async def run(self, db: Database, interval: float) -> None:
        """Flush every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush(db)
            except Exception:
                log.exception("flushing API key activity failed; will retry")
