"""The floor for the `core` benchmark: a bare FastAPI endpoint doing one raw asyncpg query.

    uvicorn baseline_app:app --app-dir bench --loop uvloop --http httptools --no-access-log

`GET /row/{user_id}` reads one `users` row by primary key from BASELINE_DATABASE_URL with a plain asyncpg
pool (no ORM, no auth, no middleware) and returns three of its columns as JSON: what a metadata request
would cost if the framework and the driver were all there was.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["BASELINE_DATABASE_URL"], min_size=1, max_size=20)
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/row/{user_id}")
async def row(user_id: str, request: Request) -> dict[str, Any]:
    record = await request.app.state.pool.fetchrow("SELECT id, email, name FROM users WHERE id = $1", user_id)
    if record is None:
        return {"id": None}
    return {"id": record["id"], "email": record["email"], "name": record["name"]}


@app.get("/api/open/health")  # so lib.Server waits for it like for Pockity
async def health() -> dict[str, str]:
    return {"status": "ok"}
