"""Deleting files: a flow, because the backend deletes between two units of work.

1. take each name's write lock (committed, so no upload of the name can start meanwhile);
2. delete the objects in the backend;
3. drop the rows of the names the backend confirmed, and the locks. If the backend failed outright, every
   row stays (a file is never forgotten while its bytes may still be there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pockity.auth.schemas import Principal
from pockity.db import Database, unit_of_work
from pockity.errors import PockityError
from pockity.storage import repository as repo
from pockity.storage.backends import StorageBackend, StorageUnavailable
from pockity.storage.keys import physical_key
from pockity.storage.service import FileNotFound, checked_name, forget, lock_name
from pockity.storage.uploads import ObjectBusy


async def _lock_names(session: AsyncSession, user_id: str, names: Sequence[str]) -> dict[str, str]:
    """Take each name's write lock; returns name -> lock id for those taken."""
    locks: dict[str, str] = {}
    for name in names:
        lock = await lock_name(session, user_id, name)
        if lock is not None:
            locks[name] = lock.id
    return locks


async def delete_objects(
    db: Database, backend: StorageBackend, principal: Principal, names: Sequence[str]
) -> dict[str, PockityError | None]:
    """Delete names (backend first, then rows); per name None for deleted or the error that stopped it."""
    results: dict[str, PockityError | None] = {}
    valid: list[str] = []
    for name in dict.fromkeys(names):
        try:
            valid.append(checked_name(principal, name, "delete"))
        except PockityError as exc:
            results[name] = exc
    async with unit_of_work(db) as session:
        existing = {o.name for o in await repo.get_objects(session, principal.user_id, valid)}
        locks = await _lock_names(session, principal.user_id, [n for n in valid if n in existing])
    for name in valid:
        if name not in existing:
            results[name] = FileNotFound(details={"key": name})
        elif name not in locks:
            results[name] = ObjectBusy()
    failures: dict[str, str] | None = None
    try:
        failures = await backend.delete_many([physical_key(principal.user_id, n) for n in locks]) if locks else {}
    finally:
        async with unit_of_work(db) as session:
            for lock_id in locks.values():
                await repo.take_reservation(session, lock_id)
            # Rows go only for names the backend confirmed; if it failed outright, every row stays.
            gone = [n for n in locks if failures is not None and physical_key(principal.user_id, n) not in failures]
            for obj in await repo.get_objects(session, principal.user_id, gone):
                await forget(session, obj)
    assert failures is not None
    for name in locks:
        results[name] = StorageUnavailable() if physical_key(principal.user_id, name) in failures else None
    return {name: results[name] for name in dict.fromkeys(names)}


@dataclass(frozen=True)
class NameDeleted:
    key: str
    deleted: bool
    error: dict[str, Any] | None


@dataclass(frozen=True)
class BatchDeleted:
    """Each name's outcome, in the order asked (duplicates once), and the counts."""

    results: list[NameDeleted]

    @property
    def deleted(self) -> int:
        return sum(1 for r in self.results if r.deleted)

    @property
    def failed(self) -> int:
        return len(self.results) - self.deleted


async def delete_batch(
    db: Database, backend: StorageBackend, principal: Principal, names: Sequence[str]
) -> BatchDeleted:
    """`delete_objects` for many names at once, every name with its own outcome."""
    outcomes = await delete_objects(db, backend, principal, names)
    return BatchDeleted(
        [
            NameDeleted(
                key=name,
                deleted=error is None,
                error=None if error is None else {"code": error.code, "message": error.message, "status": error.status},
            )
            for name, error in outcomes.items()
        ]
    )
