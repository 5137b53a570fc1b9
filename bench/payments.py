"""The `payments` benchmark: signed Stripe webhooks end to end, and the renewal job at scale.

webhooks  N top-up invoices (rows inserted for a few users registered through the API); one signed
          `checkout.session.completed` per invoice, sent by wrk with threads striding over the events so each
          is new: verify the signature (the stripe package), store in the inbox, lock it, confirm the payment,
          pay the invoice, add the credit. Then the same events again (each a duplicate: verify, insert nothing,
          read the processed row), and GET /api/open/health (the framework plus one query) as the baseline, in
          the same run. Afterwards: every applied event paid exactly one invoice, and the ledger adds up.
renewals  M paid subscriptions whose period ended (users, subscriptions and credits inserted with SQL; half
          renew from credits, half go PAST_DUE with an invoice): the life-cycle job in one process, then
          re-seeded and run by two processes at once. Renewals/s, and exactly-once checks.

`python bench/payments.py renew` is the job subprocess (DATABASE_URL from the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lib
from lib import BenchError, Server, WrkRequest, WrkResult, log

import storage

WEBHOOK_SECRET = "whsec_bench_" + uuid.uuid4().hex
SERVER_ENV = (("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET), ("STRIPE_SECRET_KEY", "sk_test_bench"))
TOPUP_CENTS = 1000


async def _sql(database_url: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _new_id() -> str:
    from pockity.kit.ids import new_id

    return new_id()


# --------------------------------------------------------------------------------------------- webhooks


async def _insert_topups(database_url: str, user_ids: list[str], count: int) -> list[str]:
    import asyncpg

    now = datetime.now(UTC)
    ids = [_new_id() for _ in range(count)]
    records = [
        (
            invoice_id,
            user_ids[i % len(user_ids)],
            TOPUP_CENTS,
            "USD",
            "PENDING",
            "topup",
            0,
            "bench top-up",
            now + timedelta(days=7),
            now,
            now,
        )
        for i, invoice_id in enumerate(ids)
    ]
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await conn.copy_records_to_table(
            "invoices",
            records=records,
            columns=[
                "id",
                "user_id",
                "amount_cents",
                "currency",
                "status",
                "kind",
                "refunded_cents",
                "description",
                "due_at",
                "created_at",
                "updated_at",
            ],
        )
    finally:
        await conn.close()
    return ids


def _signed(invoice_id: str, run: str) -> tuple[str, str]:
    body = json.dumps(
        {
            "id": f"evt_{run}_{invoice_id}",
            "object": "event",
            "type": "checkout.session.completed",
            "data": {
                "object": {
                    "id": f"cs_{run}_{invoice_id}",
                    "object": "checkout.session",
                    "payment_status": "paid",
                    "payment_intent": f"pi_{run}_{invoice_id}",
                    "amount_total": TOPUP_CENTS,
                    "currency": "usd",
                    "client_reference_id": invoice_id,
                    "metadata": {"invoiceId": invoice_id},
                }
            },
        },
        separators=(",", ":"),
    )
    t = int(time.time())
    sig = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return body, f"t={t},v1={sig}"


_EVENTS_LUA = """
local events = {%s}
local n = #events
local nthreads = %d
local i = 0
function request()
  local idx = ((i * nthreads + (thread_index or 1) - 1) %% n) + 1
  i = i + 1
  wrk.headers["Stripe-Signature"] = events[idx][2]
  return wrk.format("POST", nil, nil, events[idx][1])
end
"""


def _events_request(signed: list[tuple[str, str]], threads: int) -> WrkRequest:
    table = ",".join(f"{{{lib.lua_string(b)},{lib.lua_string(s)}}}" for b, s in signed)
    return WrkRequest(
        "/api/billing/webhooks/stripe",
        "POST",
        {"Content-Type": "application/json"},
        lua=_EVENTS_LUA % (table, threads),
    )


def _row(result: WrkResult) -> dict[str, Any]:
    return {
        "rps": result.rps,
        "requests": result.requests,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "server_cpu_ms_per_req": result.server_cpu_ms_per_req,
        "server_cpu_cores": result.server_cpu_cores,
        "machine_busy": result.machine_busy,
    }


def _webhooks(server: Server, opts: argparse.Namespace, wrk: str, errors: list[str]) -> dict[str, Any]:
    users = [storage._register(server, f"pay{i}").user_id for i in range(opts.payments_users)]
    invoices = asyncio.run(_insert_topups(server.database_url, users, opts.payments_events))
    run = uuid.uuid4().hex[:8]
    threads = min(opts.threads, opts.payments_connections)
    conns = opts.payments_connections
    results: dict[str, Any] = {}

    def one(label: str, req: WrkRequest) -> WrkResult:
        storage.settle(server)
        result = lib.run_wrk(
            wrk,
            server.base_url,
            req,
            label=label,
            duration=opts.duration,
            connections=conns,
            threads=threads,
            timeout=opts.timeout,
            server=server,
        )
        if result.error_count:
            errors.append(f"{label}: {lib.describe_errors(result)}")
        log(f"  {label}: {result.rps} req/s, p50 {result.p50_ms} ms, CPU {result.server_cpu_ms_per_req} ms/req")
        return result

    for _ in range(opts.rounds):
        results.setdefault("health", []).append(_row(one("health", WrkRequest("/api/open/health"))))
    before = asyncio.run(_sql(server.database_url, "SELECT count(*) FROM payment_events"))[0][0]
    new = one("new events", _events_request([_signed(i, run) for i in invoices], threads))
    storage.settle(server)  # requests still queued when wrk stopped finish before counting
    applied = asyncio.run(_sql(server.database_url, "SELECT count(*) FROM payment_events"))[0][0] - before
    if applied >= len(invoices):
        errors.append(f"all {len(invoices)} events were used up: raise --payments-events")
    results["new"] = {**_row(new), "events_applied": applied, "events_s": round(applied / new.duration_s, 1)}
    # The same events again (re-signed: Stripe's tolerance is 5 minutes): every one is a duplicate.
    done = asyncio.run(
        _sql(
            server.database_url,
            "SELECT i.id FROM invoices i WHERE i.kind = 'topup' AND i.status = 'PAID' ORDER BY i.id",
        )
    )
    dup_signed = [_signed(r[0], run) for r in done]
    results["duplicate"] = _row(one("duplicate events", _events_request(dup_signed, threads)))
    storage.settle(server)
    after = asyncio.run(_sql(server.database_url, "SELECT count(*) FROM payment_events"))[0][0] - before
    checks = asyncio.run(
        _sql(
            server.database_url,
            """SELECT
                 (SELECT count(*) FROM invoices WHERE kind = 'topup' AND status = 'PAID'),
                 (SELECT count(*) FROM payments WHERE provider = 'stripe' AND status = 'CONFIRMED'),
                 (SELECT coalesce(sum(amount_cents), 0) FROM credit_entries WHERE reason = 'topup'),
                 (SELECT coalesce(sum(balance_cents), 0) FROM credit_accounts),
                 (SELECT count(*) FROM payment_events WHERE outcome = 'applied')""",
        )
    )[0]
    paid, confirmed, credited, accounts, outcome_applied = (int(v) for v in checks)
    results["checks"] = {
        "events_stored": after,
        "invoices_paid": paid,
        "payments_confirmed": confirmed,
        "credited_cents": credited,
        "ok": after == applied == paid == confirmed == outcome_applied and credited == accounts == paid * TOPUP_CENTS,
    }
    if not results["checks"]["ok"]:
        errors.append(f"exactly-once check failed: {results['checks']}")
    health = lib.mean([r["rps"] for r in results["health"]])
    results["new_vs_health"] = round(results["new"]["events_s"] / health, 3) if health else None
    results["duplicate_vs_health"] = round(results["duplicate"]["rps"] / health, 3) if health else None
    results["connections"] = conns
    return results


# --------------------------------------------------------------------------------------------- renewals


async def _seed_renewals(database_url: str, count: int, tag: str) -> list[str]:
    """`count` users on Starter whose paid period ended a minute ago; even ones renew from 500 cents credit."""
    import asyncpg

    now = datetime.now(UTC)
    users, subs, entries, accounts = [], [], [], []
    for i in range(count):
        uid, sid = _new_id(), _new_id()
        users.append((uid, f"renew-{tag}-{i}@example.com", "renew", "x" * 60, "USER", True, "tier_starter", now, now))
        auto = i % 2 == 0
        subs.append(
            (
                sid,
                uid,
                "tier_starter",
                "ACTIVE",
                True,
                "manual",
                now - timedelta(days=31),
                now - timedelta(minutes=1),
                False,
                auto,
                now,
                now,
            )
        )
        if auto:
            entries.append((_new_id(), uid, 500, "USD", "grant", f"bench:{tag}:{i}", now))
            accounts.append((uid, "USD", 500))
    conn = await asyncpg.connect(database_url, timeout=30)
    try:
        await conn.copy_records_to_table(
            "users",
            records=users,
            columns=[
                "id",
                "email",
                "name",
                "password_hash",
                "role",
                "is_active",
                "tier_id",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "subscriptions",
            records=subs,
            columns=[
                "id",
                "user_id",
                "tier_id",
                "status",
                "is_current",
                "provider",
                "current_period_start",
                "current_period_end",
                "cancel_at_period_end",
                "auto_renew_from_credits",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "credit_entries",
            records=entries,
            columns=["id", "user_id", "amount_cents", "currency", "reason", "idempotency_key", "created_at"],
        )
        await conn.copy_records_to_table(
            "credit_accounts", records=accounts, columns=["user_id", "currency", "balance_cents"]
        )
    finally:
        await conn.close()
    return [s[0] for s in subs]


def _run_renewers(server: Server, processes: int) -> dict[str, Any]:
    env = {**server.env, "DATABASE_URL": server.database_url, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "renew"], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    outs = [p.communicate(timeout=3600)[0] for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise BenchError(f"renewal runner failed: {outs}")
    runs = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    return {"processes": processes, "wall_s": round(wall, 2), "runs": runs}


async def _renewal_checks(database_url: str, sub_ids: list[str]) -> dict[str, Any]:
    rows = await _sql(
        database_url,
        """SELECT
             (SELECT count(*) FROM invoices WHERE kind = 'renewal' AND subscription_id = ANY($1::text[])),
             (SELECT count(DISTINCT subscription_id) FROM invoices
               WHERE kind = 'renewal' AND subscription_id = ANY($1::text[])),
             (SELECT count(*) FROM invoices WHERE kind = 'renewal' AND status = 'PAID'
               AND subscription_id = ANY($1::text[])),
             (SELECT count(*) FROM subscriptions WHERE status = 'PAST_DUE' AND id = ANY($1::text[])),
             (SELECT count(*) FROM credit_entries WHERE reason = 'renewal'
               AND user_id IN (SELECT user_id FROM subscriptions WHERE id = ANY($1::text[])))""",
        sub_ids,
    )
    invoices, distinct, paid, past_due, debits = (int(v) for v in rows[0])
    n = len(sub_ids)
    return {
        "renewal_invoices": invoices,
        "paid_from_credits": paid,
        "past_due": past_due,
        "debits": debits,
        "ok": invoices == distinct == n and paid == debits == (n + 1) // 2 and past_due == n // 2,
    }


def _renewals(server: Server, opts: argparse.Namespace, errors: list[str]) -> dict[str, Any]:
    n = opts.payments_renewals
    out: dict[str, Any] = {"subscriptions": n}
    for processes in (1, 2):
        subs = asyncio.run(_seed_renewals(server.database_url, n, f"{processes}p{uuid.uuid4().hex[:6]}"))
        storage.settle(server)
        run = _run_renewers(server, processes)
        checks = asyncio.run(_renewal_checks(server.database_url, subs))
        if not checks["ok"]:
            errors.append(f"renewals with {processes} runner(s) not exactly once: {checks}")
        run["renewals_s"] = round(n / run["wall_s"], 1)
        out[f"runners={processes}"] = {**run, "checks": checks}
        log(f"  renewals, {processes} runner(s): {n} in {run['wall_s']} s = {run['renewals_s']}/s; {checks}")
    one, two = out["runners=1"]["wall_s"], out["runners=2"]["wall_s"]
    out["two_vs_one_wall"] = round(two / one, 3) if one else None
    return out


async def _renew_once() -> dict[str, Any]:
    """The job subprocess: one pass of billing.apply_period_ends against DATABASE_URL."""
    from pockity.billing.tasks import apply_period_ends
    from pockity.config import Settings
    from pockity.db import create_database
    from pockity.kit.jobs import JobContext

    settings = Settings(database_url=os.environ["DATABASE_URL"], _env_file=None)  # type: ignore[call-arg]
    db = create_database(settings.async_database_url, pool_size=4)
    try:
        t0 = time.perf_counter()
        done = await apply_period_ends(JobContext(db=db, storage=None, settings=settings))  # type: ignore[arg-type]
        return {"done": done, "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        await db.dispose()


# --------------------------------------------------------------------------------------------- entry


def bench_payments(server: Server, opts: argparse.Namespace, wrk: str) -> tuple[dict[str, Any], list[str]]:
    errors: list[str] = []
    entry: dict[str, Any] = {}
    if "webhooks" in opts.payments_parts:
        entry["webhooks"] = _webhooks(server, opts, wrk, errors)
    if "renewals" in opts.payments_parts:
        entry["renewals"] = _renewals(server, opts, errors)
    print_table(entry)
    return entry, errors


def print_table(entry: dict[str, Any]) -> None:
    w = entry.get("webhooks")
    if w:
        health = lib.mean([r["rps"] for r in w["health"]])
        print(f"\nStripe webhooks, {w['connections']} connections")
        print(f"{'run':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}")
        print(f"{'health (baseline)':<22}{health:>9.1f}")
        for name in ("new", "duplicate"):
            r = w[name]
            print(
                f"{name + ' events':<22}{r['rps']:>9.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                f"{r['server_cpu_ms_per_req'] or 0:>12.3f}"
            )
        print(
            f"new events applied: {w['new']['events_applied']} ({w['new']['events_s']}/s, "
            f"{w['new_vs_health']} x health); duplicates {w['duplicate_vs_health']} x health; checks {w['checks']}"
        )
    r = entry.get("renewals")
    if r:
        print(f"\nrenewal job, {r['subscriptions']} subscriptions due (half from credits, half PAST_DUE)")
        for p in (1, 2):
            x = r[f"runners={p}"]
            print(f"  {p} runner(s): {x['wall_s']} s wall, {x['renewals_s']}/s, exactly once: {x['checks']['ok']}")
        print(f"  two runners vs one (wall): {r['two_vs_one_wall']}")
    print(flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "renew":
        print(json.dumps(asyncio.run(_renew_once())))
    else:
        sys.exit("usage: payments.py renew   (the benchmark itself: bench/run.py --only payments)")
