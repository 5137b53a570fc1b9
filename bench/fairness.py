"""Fair sharing: one tenant floods the server while another keeps its usual pace.

Tenant A runs wrk closed-loop on many connections, far past its tier's request rate, so once its burst is
used up (`--fairness-drain` seconds of flooding before B is measured) its requests wait their turn or get
429. Tenant B sends a steady trickle well within its limits (a few connections, each waiting
`--fairness-pace-ms` between requests). B's p99 latency is measured quiet (A idle), flooded with fair sharing on
(the server under test) and flooded with fair sharing off (a second server, RATE_LIMIT_ENABLED=false, same
database), all in one run. Target: B's flooded p99 within 2x of its quiet p99 with the limits on.
Also measured: the server CPU per request of A alone (admitted and refused), what a flood costs.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

import lib
from lib import Server, WrkRequest, WrkResult, log

P99_TARGET = 2.0  # B's flooded p99 / quiet p99, fair sharing on
# The server's default limits (100 requests/s, a burst of 2,000) for both tenants: B's pace stays within them.
SERVER_ENV = (("RATE_LIMIT_REQUESTS_PER_SECOND", "100"), ("RATE_LIMIT_BURST", "2000"))


def _tenant(server: Server, tag: str) -> dict[str, str]:
    email = f"fair-{tag}-{uuid.uuid4().hex[:8]}@example.com"
    password = "bench correct horse battery staple"
    status, body = lib.http_json(
        "POST", server.url("/api/auth/register"), {"email": email, "password": password, "name": tag}
    )
    lib.expect(status, body, 201, f"register {tag}")
    status, body = lib.http_json("POST", server.url("/api/auth/login"), {"email": email, "password": password})
    token = lib.expect(status, body, 200, f"login {tag}")["token"]
    status, body = lib.http_json(
        "POST", server.url("/api/apikeys"), {"name": tag}, headers={"Authorization": f"Bearer {token}"}
    )
    key = lib.expect(status, body, 201, f"key {tag}")
    return {"X-Access-Key-Id": key["accessKeyId"], "X-Secret-Key": key["secretKey"]}


def _paced(headers: dict[str, str], pace_ms: int) -> WrkRequest:
    return WrkRequest("/api/auth/me", headers=headers, lua=f"function delay() return {pace_ms} end")


def _measure(
    wrk: str, server: Server, opts: argparse.Namespace, b: WrkRequest, a: WrkRequest | None, label: str
) -> tuple[WrkResult, WrkResult | None, float]:
    """B's run, with A flooding at the same time when given; the server CPU per request of both together."""
    flood: list[WrkResult] = []
    thread = None
    drain = opts.fairness_drain if a is not None else 0.0
    if a is not None:
        thread = threading.Thread(
            target=lambda: flood.append(
                lib.run_wrk(
                    wrk,
                    server.base_url,
                    a,
                    label=f"{label}: A floods",
                    duration=drain + opts.duration + 2,
                    connections=opts.fairness_flood_connections,
                    threads=opts.threads,
                    timeout=opts.timeout,
                )
            )
        )
        thread.start()
        time.sleep(drain)  # A's burst is used up first: measured is a flood that outlasts it
    cpu0 = server.cpu_seconds()
    quiet = lib.run_wrk(
        wrk,
        server.base_url,
        b,
        label=f"{label}: B",
        duration=opts.duration,
        connections=opts.fairness_connections,
        threads=min(opts.threads, opts.fairness_connections),
        timeout=opts.timeout,
    )
    cpu1 = server.cpu_seconds()
    if thread is not None:
        thread.join()
    total = quiet.requests + (round(flood[0].rps * quiet.duration_s) if flood else 0)  # A's share, estimated
    cpu_ms = 1000 * (cpu1 - cpu0) / total if total else 0.0
    return quiet, (flood[0] if flood else None), cpu_ms


def _row(b: WrkResult, a: WrkResult | None, cpu_ms: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "b_rps": b.rps,
        "b_p50_ms": b.p50_ms,
        "b_p99_ms": b.p99_ms,
        "b_errors": b.error_count,
        "server_cpu_ms_per_req": round(cpu_ms, 3),
    }
    if a is not None:
        row |= {"a_rps": a.rps, "a_refused": a.non2xx, "a_requests": a.requests, "a_p99_ms": a.p99_ms}
    return row


def bench_fairness(server: Server, opts: argparse.Namespace, wrk: str) -> tuple[dict[str, Any], list[str]]:
    a_headers, b_headers = _tenant(server, "a"), _tenant(server, "b")
    b = _paced(b_headers, opts.fairness_pace_ms)
    a = WrkRequest("/api/auth/me", headers=a_headers)
    errors: list[str] = []
    runs: dict[str, dict[str, Any]] = {}

    def record(name: str, result: tuple[WrkResult, WrkResult | None, float]) -> None:
        runs[name] = _row(*result)
        bres, ares = result[0], result[1]
        if bres.error_count:
            errors.append(f"{name}: tenant B got {lib.describe_errors(bres)} of {bres.requests}")
        if ares is not None and sum(ares.socket_errors.values()):
            errors.append(f"{name}: tenant A had socket errors {ares.socket_errors}")
        extra = f"  A {ares.rps:.0f} req/s ({ares.non2xx} refused)" if ares else ""
        log(f"  {name:<18} B p50 {bres.p50_ms:6.2f} ms  p99 {bres.p99_ms:7.2f} ms  {bres.rps:6.1f} req/s{extra}")

    record("quiet", _measure(wrk, server, opts, b, None, "quiet"))
    record("flooded", _measure(wrk, server, opts, b, a, "flooded"))
    # The same flood against a server without fair sharing, on the same database.
    same = {k: server.env[k] for k in ("JWT_SECRET", "KEY_ENCRYPTION_KEY")}  # the same tenants' credentials
    with Server(server.database_url, workers=server.workers, extra_env={**same, "RATE_LIMIT_ENABLED": "false"}) as off:
        record("flooded_limits_off", _measure(wrk, off, opts, b, a, "flooded, limits off"))
    # What a refusal costs: A alone, nearly everything refused.
    cpu0 = server.cpu_seconds()
    alone = lib.run_wrk(
        wrk,
        server.base_url,
        a,
        label="A alone",
        duration=opts.duration,
        connections=opts.fairness_flood_connections,
        threads=opts.threads,
        timeout=opts.timeout,
    )
    cpu1 = server.cpu_seconds()
    refused_cpu = 1000 * (cpu1 - cpu0) / alone.requests if alone.requests else None
    ratio = runs["flooded"]["b_p99_ms"] / max(runs["quiet"]["b_p99_ms"], 0.01)
    ratio_off = runs["flooded_limits_off"]["b_p99_ms"] / max(runs["quiet"]["b_p99_ms"], 0.01)
    verdict = "ok" if ratio <= P99_TARGET else "FAIL"
    log(
        f"  B p99 flooded/quiet: {ratio:.2f} with fair sharing ({verdict}, target <= {P99_TARGET}), "
        f"{ratio_off:.2f} without; server CPU per flood request (A alone) {refused_cpu or 0:.3f} ms"
    )
    entry = {
        "what": "tenant B (paced GET /api/auth/me, API key) while tenant A floods the same endpoint",
        "b_connections": opts.fairness_connections,
        "b_pace_ms": opts.fairness_pace_ms,
        "a_connections": opts.fairness_flood_connections,
        "runs": runs,
        "a_alone": {
            "rps": alone.rps,
            "refused": alone.non2xx,
            "requests": alone.requests,
            "server_cpu_ms_per_req": round(refused_cpu, 3) if refused_cpu is not None else None,
        },
        "b_p99_flooded_vs_quiet": round(ratio, 2),
        "b_p99_flooded_vs_quiet_limits_off": round(ratio_off, 2),
        "target": f"<= {P99_TARGET}",
        "verdict": verdict,
    }
    return entry, errors
