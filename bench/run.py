"""`make bench`: start the real server on a throwaway PostgreSQL database and measure it with wrk.

    .venv/bin/python bench/run.py [--only auth] [--workers 1 2] [--duration 10] [--rounds 2]

Each benchmark is a function registered in BENCHMARKS: it gets a running server (lib.Server) and the
options, and returns the figures written to bench/results/<name>.json (one entry per worker count).
Exit status: 0 when every request succeeded (missed performance targets only print FAIL), 1 when any
request failed (non-2xx or socket errors: a benchmark of errors is worthless), 2 on a setup problem.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import core
import fairness
import lib
import s3
import sigv4
from lib import BenchError, Server, WrkRequest, WrkResult, log

import console
import payments
import storage
import usage

PASSWORD = "bench correct horse battery staple"
KEY_VS_JWT_TARGET = 0.9  # API-key auth (one query + AES-GCM open) should keep up with JWT (one query)
EVENT_CONNECTIONS = 32  # wrk connections for the usage benchmark's event runs
JWT_VS_HEALTH_CLOSE = 0.8  # informational: `me` with a JWT does one query, like health


@dataclass
class Outcome:
    """What a benchmark hands back: figures for the JSON file, and the request errors it saw."""

    entry: dict[str, Any]
    errors: list[str]


@contextlib.contextmanager
def _no_environment(_opts: argparse.Namespace) -> Iterator[dict[str, str]]:
    yield {}


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    run: Callable[[Server, argparse.Namespace, str], Outcome]
    server_env: tuple[tuple[str, str], ...] = ()
    # Entered once around all the worker counts of this benchmark (e.g. a private RGW) and always left;
    # yields more server environment variables.
    environment: Callable[[argparse.Namespace], AbstractContextManager[dict[str, str]]] = _no_environment


# ---------------------------------------------------------------------------------------------- auth


def _setup_user(server: Server) -> dict[str, str]:
    """Register, log in (JWT) and create an API key through the public API."""
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    status, body = lib.http_json(
        "POST", server.url("/api/auth/register"), {"email": email, "password": PASSWORD, "name": "bench"}
    )
    lib.expect(status, body, 201, "register")
    status, body = lib.http_json("POST", server.url("/api/auth/login"), {"email": email, "password": PASSWORD})
    token = lib.expect(status, body, 200, "login")["token"]
    status, body = lib.http_json(
        "POST", server.url("/api/apikeys"), {"name": "bench key"}, headers={"Authorization": f"Bearer {token}"}
    )
    key = lib.expect(status, body, 201, "create API key")
    return {"email": email, "token": token, "access_key_id": key["accessKeyId"], "secret_key": key["secretKey"]}


def _preflight(server: Server, name: str, req: WrkRequest, check: Callable[[Any], bool]) -> None:
    """One request before the load: a wrong status or the wrong auth path must stop us, not be measured."""
    status, body = lib.http_json(req.method, server.url(req.path), headers=req.headers)
    if status != 200 or not check(body):
        raise BenchError(f"preflight {name}: HTTP {status}: {body}")


def _timed_bcrypt(rounds: int) -> float:
    """Seconds for one bcrypt verify at `rounds` in this process (best of three), to explain login."""
    import bcrypt

    hashed = bcrypt.hashpw(b"x" * 44, bcrypt.gensalt(rounds))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        bcrypt.checkpw(b"x" * 44, hashed)
        best = min(best, time.perf_counter() - t0)
    return best


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(lib.mean(present), 3) if present else None


def _sum_or_none(values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _summary(results: list[WrkResult]) -> dict[str, Any]:
    return {
        "rps": round(lib.mean([r.rps for r in results]), 1),
        "rps_best": max(r.rps for r in results),
        "p50_ms": round(lib.mean([r.p50_ms for r in results]), 2),
        "p99_ms": round(lib.mean([r.p99_ms for r in results]), 2),
        "server_cpu_ms_per_req": _mean_or_none([r.server_cpu_ms_per_req for r in results]),
        "new_db_sessions": _sum_or_none([r.new_db_sessions for r in results]),
        "requests": sum(r.requests for r in results),
        "samples": [r.as_dict() for r in results],
    }


def bench_auth(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    creds = _setup_user(server)
    endpoints: dict[str, tuple[str, WrkRequest]] = {
        "health": ("GET /api/open/health (database SELECT 1, plus the storage check)", WrkRequest("/api/open/health")),
        "jwt": (
            "GET /api/auth/me, Bearer JWT",
            WrkRequest("/api/auth/me", headers={"Authorization": f"Bearer {creds['token']}"}),
        ),
        "key": (
            "GET /api/auth/me, API key headers",
            WrkRequest(
                "/api/auth/me",
                headers={"X-Access-Key-Id": creds["access_key_id"], "X-Secret-Key": creds["secret_key"]},
            ),
        ),
    }
    _preflight(server, "health", endpoints["health"][1], lambda b: b.get("status") == "ok")
    _preflight(server, "jwt", endpoints["jwt"][1], lambda b: b.get("authMethod") == "jwt")
    _preflight(server, "key", endpoints["key"][1], lambda b: b.get("authMethod") == "api_key")

    errors: list[str] = []

    def one(name: str, req: WrkRequest, *, duration: float, connections: int, warm: bool = False) -> WrkResult:
        label = f"{name} (warm-up)" if warm else name
        result = lib.run_wrk(
            wrk,
            server.base_url,
            req,
            label=label,
            duration=duration,
            connections=connections,
            threads=opts.threads,
            timeout=opts.timeout,
            server=server,
        )
        if result.error_count:
            msg = f"{label}: {lib.describe_errors(result)} out of {result.requests} requests"
            errors.append(msg)
            log(f"  ERROR {msg}")
        return result

    # Interleave: forward, then reverse, ... so drift (other load, thermal, caches) hits every endpoint alike.
    names = list(endpoints)
    order = [n for i in range(opts.rounds) for n in (names if i % 2 == 0 else names[::-1])]
    measured: dict[str, list[WrkResult]] = {n: [] for n in names}
    for i, name in enumerate(order, 1):
        req = endpoints[name][1]
        if opts.warmup > 0:
            one(name, req, duration=opts.warmup, connections=opts.connections, warm=True)
        result = one(name, req, duration=opts.duration, connections=opts.connections)
        measured[name].append(result)
        log(
            f"  [{i}/{len(order)}] {name:<6} {result.rps:>9.1f} req/s  p50 {result.p50_ms:>7.2f} ms  "
            f"p99 {result.p99_ms:>7.2f} ms  server CPU {_fmt(result.server_cpu_ms_per_req, 3)} ms/req  "
            f"new DB sessions {_fmt(result.new_db_sessions)}  machine busy {_fmt(result.machine_busy, 2)}  "
            f"{lib.describe_errors(result)}"
        )

    summary = {n: {"what": endpoints[n][0], **_summary(measured[n])} for n in names}
    health = summary["health"]["rps"] or 1.0
    for n in names:
        summary[n]["vs_health"] = round(summary[n]["rps"] / health, 3)
    key_vs_jwt = summary["key"]["rps"] / (summary["jwt"]["rps"] or 1.0)
    cpu = {n: summary[n]["server_cpu_ms_per_req"] for n in names}
    cpu_ratios = (
        {
            "jwt_vs_health": round(cpu["health"] / cpu["jwt"], 3),
            "key_vs_health": round(cpu["health"] / cpu["key"], 3),
            "key_vs_jwt": round(cpu["jwt"] / cpu["key"], 3),
        }
        if all(cpu.values())
        else None
    )
    per_round = [round(k.rps / j.rps, 3) for k, j in zip(measured["key"], measured["jwt"], strict=True) if j.rps]

    login: dict[str, Any] | None = None
    if opts.login_duration > 0:
        bcrypt_s = _timed_bcrypt(12)
        body = json.dumps({"email": creds["email"], "password": PASSWORD})
        req = WrkRequest("/api/auth/login", method="POST", headers={"Content-Type": "application/json"}, body=body)
        log(f"  login: bcrypt cost 12 verify here = {bcrypt_s * 1000:.0f} ms; {opts.login_connections} connections")
        result = one("login", req, duration=opts.login_duration, connections=opts.login_connections)
        nproc = len(os.sched_getaffinity(0))
        login = {
            "what": "POST /api/auth/login, correct password (bcrypt cost 12)",
            "connections": opts.login_connections,
            "duration_s": opts.login_duration,
            "rps": result.rps,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "vs_health": round(result.rps / health, 4),
            "bcrypt_verify_ms": round(bcrypt_s * 1000, 1),
            "bcrypt_ceiling_rps": round(nproc / bcrypt_s, 1),
            "sample": result.as_dict(),
            "note": (
                "Each login runs one bcrypt verify (cost 12) in a worker thread; bcrypt releases the GIL, so "
                "the machine's ceiling is about nproc / verify time whatever the worker count. Throttling "
                "counts failures only, so a correct password is never throttled here."
            ),
        }
        log(f"  login  {result.rps:>9.1f} req/s  p50 {result.p50_ms:>7.2f} ms  {lib.describe_errors(result)}")

    entry = {
        "connections": opts.connections,
        "threads": opts.threads,
        "rounds": opts.rounds,
        "warmup_s": opts.warmup,
        "order": order,
        "endpoints": summary,
        "ratios": {
            "jwt_vs_health": summary["jwt"]["vs_health"],
            "key_vs_health": summary["key"]["vs_health"],
            "key_vs_jwt": round(key_vs_jwt, 3),
            "key_vs_jwt_per_round": per_round,
            # The same ratios from server CPU per request (inverse): steadier when the machine is shared.
            "by_server_cpu": cpu_ratios,
        },
        "targets": {
            "key_vs_jwt_min": KEY_VS_JWT_TARGET,
            "key_vs_jwt_pass": key_vs_jwt >= KEY_VS_JWT_TARGET,
            "jwt_vs_health_close_min": JWT_VS_HEALTH_CLOSE,
            "jwt_vs_health_close": summary["jwt"]["vs_health"] >= JWT_VS_HEALTH_CLOSE,
        },
        "login": login,
    }
    _print_auth_table(entry, server.workers)
    return Outcome(entry, errors)


def _print_auth_table(entry: dict[str, Any], workers: int) -> None:
    rows = [("health", "health"), ("jwt", "me (JWT)"), ("key", "me (API key)")]
    print()
    print(f"auth benchmark, {workers} worker(s), {entry['connections']} connections, mean of {entry['rounds']} rounds")
    print(
        f"{'endpoint':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs health':>11}{'CPU ms/req':>12}{'new DB conns':>14}"
    )
    for key, label in rows:
        e = entry["endpoints"][key]
        print(
            f"{label:<20}{e['rps']:>9.1f}{e['p50_ms']:>9.2f}{e['p99_ms']:>9.2f}{e['vs_health']:>11.3f}"
            f"{_fmt(e['server_cpu_ms_per_req'], 3):>12}{_fmt(e['new_db_sessions']):>14}"
        )
    login = entry["login"]
    if login:
        label = f"login ({login['connections']} conn)"
        sample = login["sample"]
        print(
            f"{label:<20}{login['rps']:>9.1f}{login['p50_ms']:>9.2f}{login['p99_ms']:>9.2f}{login['vs_health']:>11.4f}"
            f"{_fmt(sample['server_cpu_ms_per_req'], 1):>12}{_fmt(sample['new_db_sessions']):>14}"
        )
    ratios, targets = entry["ratios"], entry["targets"]
    verdict = "PASS" if targets["key_vs_jwt_pass"] else "FAIL"
    print(
        f"key/jwt = {ratios['key_vs_jwt']:.3f} (per round {ratios['key_vs_jwt_per_round']}); "
        f"target >= {KEY_VS_JWT_TARGET}: {verdict}"
    )
    close = "yes" if targets["jwt_vs_health_close"] else "NO"
    print(f"jwt/health = {ratios['jwt_vs_health']:.3f}; close to health (>= {JWT_VS_HEALTH_CLOSE}): {close}")
    if ratios["by_server_cpu"]:
        c = ratios["by_server_cpu"]
        print(
            f"by server CPU per request: jwt/health = {c['jwt_vs_health']:.3f}, key/health = {c['key_vs_health']:.3f}, "
            f"key/jwt = {c['key_vs_jwt']:.3f}"
        )
    if login:
        print(
            f"login: bcrypt cost 12 verify = {login['bcrypt_verify_ms']:.0f} ms here -> ceiling about "
            f"{login['bcrypt_ceiling_rps']:.1f} logins/s on this machine; measured {login['rps']:.1f}/s"
        )
    print(flush=True)


# --------------------------------------------------------------------------------------------- storage


def bench_storage(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    entry, errors = storage.bench_storage(server, opts, wrk)
    return Outcome(entry, errors)


def bench_core(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    entry, errors = core.bench_core(server, opts, wrk)
    return Outcome(entry, errors)


def bench_usage(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    entry, errors = usage.bench_usage(server, opts, wrk)
    return Outcome(entry, errors)


def bench_fairness(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    entry, errors = fairness.bench_fairness(server, opts, wrk)
    return Outcome(entry, errors)


def bench_sigv4(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    entry, errors = sigv4.bench_sigv4(server, opts, wrk)
    return Outcome(entry, errors)


def bench_s3(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    entry, errors = s3.bench_s3(server, opts, wrk)
    return Outcome(entry, errors)


def bench_console(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    entry, errors = console.bench_console(server, opts, wrk)
    return Outcome(entry, errors)


def bench_payments(server: Server, opts: argparse.Namespace, wrk: str) -> Outcome:
    entry, errors = payments.bench_payments(server, opts, wrk)
    return Outcome(entry, errors)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("auth", "health vs GET /api/auth/me with a JWT and with an API key; login", bench_auth),
        Benchmark(
            "core",
            "metadata + presigned URL, me, usage, key list, health (S3 backend) vs a bare FastAPI + asyncpg floor",
            bench_core,
            environment=storage.storage_environment,
        ),
        Benchmark(
            "storage",
            "1 GiB upload and many 64 KiB uploads through Pockity vs straight to RGW; listing 100,000 objects",
            bench_storage,
            environment=storage.storage_environment,
        ),
        Benchmark(
            "usage",
            "reconcile 100,000 objects written straight to S3 vs a list_objects_v2 walk; S3 event ingestion",
            bench_usage,
            environment=usage.usage_environment,
        ),
        Benchmark(
            "payments",
            "signed Stripe webhooks (new and duplicate) vs health; the renewal job with one and two runners",
            bench_payments,
            server_env=payments.SERVER_ENV,
        ),
        Benchmark(
            "fairness",
            "one tenant floods past its request rate while another keeps its pace: the other's p99, limits on/off",
            bench_fairness,
            server_env=fairness.SERVER_ENV,
        ),
        Benchmark(
            "console",
            "server time of the console's heaviest pages: a folder of 1,000 files, the admin list of 10,000 users",
            bench_console,
            server_env=console.SERVER_ENV,
        ),
        Benchmark("sigv4", "the S3 API's signature verification in-process vs one HMAC-SHA256", bench_sigv4),
        Benchmark(
            "s3",
            "64 KiB PutObject/GetObject and a 1 GiB upload through Pockity's S3 API vs straight to RGW, same client",
            bench_s3,
            environment=s3.s3_environment,
        ),
    )
}


# ---------------------------------------------------------------------------------------------- main


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of: {', '.join(BENCHMARKS)}")
    p.add_argument("--workers", type=int, nargs="+", default=[1], help="server worker counts, e.g. 1 2")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each run (0: none)")
    p.add_argument("--rounds", type=int, default=2, help="passes over the endpoints, alternating order")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=5.0, help="wrk per-request timeout, seconds")
    p.add_argument("--login-duration", type=float, default=5.0, help="seconds for the login run (0: skip)")
    p.add_argument("--login-connections", type=int, default=4)
    p.add_argument("--no-write", action="store_true", help="do not update bench/results/*.json")
    g = p.add_argument_group("storage")
    g.add_argument("--objstore", choices=("memstore", "bluestore"), default="memstore", help="the RGW's object store")
    g.add_argument(
        "--storage-parts", default="big,small,list", help="comma list of the storage parts: big, small, list"
    )
    g.add_argument("--big-mib", type=int, default=1024, help="size of the large upload, MiB")
    g.add_argument("--big-rounds", type=int, default=2, help="large-upload rounds (each: direct, raw, pockity)")
    g.add_argument("--small-count", type=int, default=1000, help="small uploads per measured run")
    g.add_argument("--small-kib", type=int, default=64)
    g.add_argument("--small-concurrency", type=int, default=16)
    g.add_argument("--list-objects", type=int, default=100_000, help="objects seeded for the listing user")
    g.add_argument(
        "--delimiter-connections", type=int, default=8, help="wrk connections for the root view with delimiter=/"
    )
    g = p.add_argument_group("usage")
    g.add_argument("--usage-objects", type=int, default=100_000, help="objects written straight to S3")
    g.add_argument("--usage-seed-concurrency", type=int, default=64, help="put_object calls in flight when seeding")
    g.add_argument(
        "--usage-event-connections", type=int, default=EVENT_CONNECTIONS, help="wrk connections for events (0: skip)"
    )
    g.add_argument(
        "--usage-event-adopt-objects", type=int, default=3000, help="objects without rows for the adopt event run"
    )
    g = p.add_argument_group("fairness")
    g.add_argument("--fairness-connections", type=int, default=2, help="tenant B's connections")
    g.add_argument("--fairness-pace-ms", type=int, default=100, help="tenant B's pause between requests")
    g.add_argument("--fairness-flood-connections", type=int, default=64, help="tenant A's connections")
    g.add_argument("--fairness-drain", type=float, default=12.0, help="seconds A floods before B is measured")
    g = p.add_argument_group("sigv4")
    g.add_argument("--sigv4-iterations", type=int, default=5000, help="verifications per timing pass")
    g = p.add_argument_group("s3")
    g.add_argument("--s3-parts", default="small,big", help="comma list of the s3 parts: small, big")
    g.add_argument("--s3-count", type=int, default=1000, help="PutObjects (then GetObjects) per measured run")
    g.add_argument("--s3-kib", type=int, default=64)
    g.add_argument("--s3-concurrency", type=int, default=16)
    g.add_argument(
        "--s3-rounds", type=int, default=1, help="small rounds (each: RGW, Pockity; alternating order from 2)"
    )
    g.add_argument("--s3-big-mib", type=int, default=1024, help="size of the large upload, MiB")
    g.add_argument("--s3-big-rounds", type=int, default=1, help="large-upload rounds (each: RGW, then Pockity)")
    g.add_argument(
        "--s3-big-client",
        default="auto",
        help="comma list of: awscli, boto3 (upload_file); auto = aws-cli if one is found, else boto3",
    )
    g.add_argument("--s3-profile", action="store_true", help="then sample the server with py-spy (PUT, GET runs)")
    g.add_argument(
        "--s3-profile-dir", default="/tmp/pockity-bench-s3-profiles", help="py-spy's speedscope files go here"
    )
    g.add_argument("--s3-profile-rate", type=int, default=200, help="py-spy samples per second")
    g = p.add_argument_group("payments")
    g.add_argument("--payments-parts", default="webhooks,renewals", help="comma list of: webhooks, renewals")
    g.add_argument("--payments-events", type=int, default=6000, help="signed events (top-up invoices) prepared")
    g.add_argument("--payments-users", type=int, default=20, help="users the top-up invoices belong to")
    g.add_argument("--payments-connections", type=int, default=32, help="wrk connections for webhook runs")
    g.add_argument("--payments-renewals", type=int, default=2000, help="subscriptions due in each renewal run")
    opts = p.parse_args(argv)
    opts.only = [n.strip() for n in opts.only.split(",") if n.strip()]
    opts.storage_parts = [n.strip() for n in opts.storage_parts.split(",") if n.strip()]
    opts.payments_parts = [n.strip() for n in opts.payments_parts.split(",") if n.strip()]
    opts.s3_parts = [n.strip() for n in opts.s3_parts.split(",") if n.strip()]
    if set(opts.s3_parts) - {"small", "big"}:
        p.error("--s3-parts takes small, big")
    if set(opts.s3_big_client.split(",")) - {"auto", "awscli", "boto3"}:
        p.error("--s3-big-client takes auto, awscli, boto3")
    if set(opts.storage_parts) - {"big", "small", "list"}:
        p.error("--storage-parts takes big, small, list")
    unknown = [n for n in opts.only if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if opts.rounds < 1 or opts.connections < opts.threads or any(w < 1 for w in opts.workers):
        p.error("need --rounds >= 1, --workers >= 1 and --connections >= --threads")
    return opts


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    opts = _parse(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, _terminate)  # so `finally` stops the server and drops the database
    try:
        wrk = lib.ensure_wrk()
        machine = {**lib.machine_info(wrk), "postgres": lib.postgres_version()}
    except BenchError as exc:
        log(f"setup failed: {exc}")
        return 2
    log(f"machine: {machine['nproc']} CPU(s) {machine['cpu_model']}, Python {machine['python']}, {machine['wrk']}")
    failures: list[str] = []
    try:
        with lib.throwaway_database() as db_url:
            for name in opts.only:
                bench = BENCHMARKS[name]
                with bench.environment(opts) as bench_env:
                    for workers in opts.workers:
                        log(f"== {name}: {bench.description} ({workers} worker(s)) ==")
                        started = lib.utc_now_iso()
                        server_env = {**dict(bench.server_env), **bench_env}
                        with Server(db_url, workers=workers, extra_env=server_env) as server:
                            outcome = bench.run(server, opts, wrk)
                        if outcome.errors:
                            failures += [f"{name}/{workers}w: {e}" for e in outcome.errors]
                            log(f"{name} with {workers} worker(s) had request errors; results not written")
                            continue
                        entry = {
                            "date": started,
                            "machine": machine,
                            "workers": workers,
                            "duration_s": opts.duration,
                            **outcome.entry,
                        }
                        if not opts.no_write:
                            path = lib.write_results(name, f"workers={workers}", entry)
                            log(f"wrote {path.relative_to(lib.ROOT)} (runs['workers={workers}'])")
    except BenchError as exc:
        log(f"benchmark failed: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    if failures:
        log("FAILED: requests failed during the benchmark, so its figures are worthless:")
        for f in failures:
            log(f"  - {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
