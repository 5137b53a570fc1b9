"""The `core` benchmark: the small requests every client makes, against a floor measured in the same run.

Brings up its own RGW (the storage benchmark's `storage_environment`: free ports, never 7480/3300), starts
the server with the S3 backend (so the metadata URL is a real SigV4 presigned GET), stores a few files
through the API, and also starts a **baseline**: a bare FastAPI endpoint doing one raw asyncpg primary-key
query (`bench/baseline_app.py`, uvicorn with uvloop + httptools, no access log) on the same database. Then
wrk runs, in alternating order (each after a warm-up):

  baseline   GET /row/{user_id} on the baseline app
  health     GET /api/open/health
  me_key     GET /api/auth/me with API key headers
  me_jwt     GET /api/auth/me with a login JWT (user ⋈ session ⋈ tier: one query)
  metadata   GET /api/storage/files/{key} with API key headers (Lua: one of several names per request)
  download   GET /api/storage/files/{key}/content with API key headers: a 1 KiB file streamed from S3
  usage      GET /api/storage/usage with API key headers
  keys       GET /api/apikeys with a JWT

Reported per endpoint: req/s, p50/p99, **server CPU ms per request** (the steadier figure on a shared
machine) and req/s as a ratio to the baseline of the same run. Targets from issue 13 (printed, never fail
the run): metadata CPU <= 0.6 ms and >= 0.4x the baseline's req/s; health / me (key and JWT) / usage / keys <= 0.5 ms;
download <= 1.5 ms.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import lib
from lib import BenchError, Server, WrkRequest, WrkResult, log

PASSWORD = "bench correct horse battery staple"
# Names stored for the metadata runs: plain, nested, spaces, unicode, characters that need quoting.
NAMES = (
    "report.pdf",
    "docs/2026/summary.txt",
    "photos/holiday pic 01.jpg",
    "données/été ☀.png",
    "odd/a+b=c&d;e,f(1)!~*'.bin",
    "deep/a/b/c/d/e/f/g/file.json",
)
METADATA_CPU_TARGET_MS = 0.6
METADATA_VS_BASELINE_TARGET = 0.4
OTHER_CPU_TARGET_MS = 0.5
DOWNLOAD_CPU_TARGET_MS = 1.5


class BaselineServer(Server):
    """bench/baseline_app.py under uvicorn, in its own session like the real server (same CPU accounting)."""

    def start(self, ready_timeout: float = 60.0) -> None:
        import shutil
        import tempfile
        from pathlib import Path

        self.port = self.port or lib.free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="pockity-bench-baseline-"))
        shutil.copy(lib.ROOT / "bench" / "baseline_app.py", self.workdir / "baseline_app.py")
        self.env = {**os.environ, "BASELINE_DATABASE_URL": self.database_url}
        cmd = [
            str(lib.VENV_BIN / "uvicorn"),
            "baseline_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "--workers",
            str(self.workers),
        ]
        log(f"starting baseline: {' '.join(cmd)}  (log: {self.log_path})")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(ready_timeout)


def _put(server: Server, name: str, body: bytes, headers: dict[str, str]) -> None:
    parts = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("PUT", "/api/storage/files/" + quote(name), body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 201:
            raise BenchError(f"upload {name!r}: HTTP {resp.status}: {payload[:500]!r}")
    finally:
        conn.close()


def _setup(server: Server) -> dict[str, Any]:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    status, body = lib.http_json(
        "POST", server.url("/api/auth/register"), {"email": email, "password": PASSWORD, "name": "bench"}
    )
    user = lib.expect(status, body, 201, "register")
    status, body = lib.http_json("POST", server.url("/api/auth/login"), {"email": email, "password": PASSWORD})
    token = lib.expect(status, body, 200, "login")["token"]
    jwt = {"Authorization": f"Bearer {token}"}
    status, body = lib.http_json("POST", server.url("/api/apikeys"), {"name": "bench key"}, headers=jwt)
    key = lib.expect(status, body, 201, "create API key")
    key_headers = {"X-Access-Key-Id": key["accessKeyId"], "X-Secret-Key": key["secretKey"]}
    for i, name in enumerate(NAMES):
        _put(server, name, os.urandom(1024 + i), {**key_headers, "Content-Type": "application/octet-stream"})
    user_id = user.get("id") or user.get("user", {}).get("id")
    if not user_id:
        status, me = lib.http_json("GET", server.url("/api/auth/me"), headers=jwt)
        user_id = lib.expect(status, me, 200, "me")["id"]
    return {"user_id": user_id, "jwt": jwt, "key": key_headers}


def _metadata_lua() -> str:
    paths = ", ".join(lib.lua_string("/api/storage/files/" + quote(n)) for n in NAMES)
    return (
        f"local paths = {{{paths}}}\n"
        "local n = 0\n"
        "function request()\n"
        "  n = n + 1\n"
        "  return wrk.format(nil, paths[(n % #paths) + 1])\n"
        "end\n"
    )


def _preflight(base_url: str, name: str, req: WrkRequest, check: Any) -> None:
    status, body = lib.http_json(req.method, base_url + req.path, headers=req.headers)
    if status != 200 or not check(body):
        raise BenchError(f"preflight {name}: HTTP {status}: {body}")


def _summary(results: list[WrkResult]) -> dict[str, Any]:
    cpu = [r.server_cpu_ms_per_req for r in results if r.server_cpu_ms_per_req is not None]
    return {
        "rps": round(lib.mean([r.rps for r in results]), 1),
        "p50_ms": round(lib.mean([r.p50_ms for r in results]), 2),
        "p99_ms": round(lib.mean([r.p99_ms for r in results]), 2),
        "server_cpu_ms_per_req": round(lib.mean(cpu), 3) if cpu else None,
        "server_cpu_ms_per_req_min": min(cpu) if cpu else None,
        "requests": sum(r.requests for r in results),
        "samples": [r.as_dict() for r in results],
    }


def bench_core(server: Server, opts: argparse.Namespace, wrk: str) -> tuple[dict[str, Any], list[str]]:
    setup = _setup(server)
    key, jwt = setup["key"], setup["jwt"]
    endpoints: dict[str, tuple[str, WrkRequest, Any]] = {
        "baseline": (
            "bare FastAPI + one raw asyncpg primary-key SELECT (bench/baseline_app.py)",
            WrkRequest(f"/row/{setup['user_id']}"),
            lambda b: b.get("id") == setup["user_id"],
        ),
        "health": (
            "GET /api/open/health (database SELECT 1 + storage state)",
            WrkRequest("/api/open/health"),
            lambda b: b.get("status") == "ok",
        ),
        "me_key": ("GET /api/auth/me, API key", WrkRequest("/api/auth/me", headers=key), lambda b: "id" in b),
        "me_jwt": (
            "GET /api/auth/me, JWT (its session checked)",
            WrkRequest("/api/auth/me", headers=jwt),
            lambda b: "id" in b,
        ),
        "metadata": (
            "GET /api/storage/files/{key}, API key: metadata + SigV4 presigned URL (S3 backend)",
            WrkRequest("/api/storage/files/" + quote(NAMES[0]), headers=key, lua=_metadata_lua()),
            lambda b: b.get("key") == NAMES[0] and "X-Amz-Signature=" in b.get("url", ""),
        ),
        "download": (
            "GET /api/storage/files/{key}/content, API key: 1 KiB streamed from S3 through the server",
            WrkRequest("/api/storage/files/" + quote(NAMES[0]) + "/content", headers=key),
            lambda b: isinstance(b, str) and len(b) > 0,
        ),
        "usage": ("GET /api/storage/usage, API key", WrkRequest("/api/storage/usage", headers=key), lambda b: True),
        "keys": ("GET /api/apikeys, JWT", WrkRequest("/api/apikeys", headers=jwt), lambda b: True),
    }
    errors: list[str] = []
    with BaselineServer(server.database_url, workers=server.workers) as baseline:
        targets = {n: (baseline if n == "baseline" else server) for n in endpoints}
        for n, (_, req, check) in endpoints.items():
            _preflight(targets[n].base_url, n, req, check)
        names = list(endpoints)
        order = [n for i in range(opts.rounds) for n in (names if i % 2 == 0 else names[::-1])]
        measured: dict[str, list[WrkResult]] = {n: [] for n in names}
        for i, name in enumerate(order, 1):
            target, req = targets[name], endpoints[name][1]
            for warm in (True, False) if opts.warmup > 0 else (False,):
                label = f"{name} (warm-up)" if warm else name
                result = lib.run_wrk(
                    wrk,
                    target.base_url,
                    req,
                    label=label,
                    duration=opts.warmup if warm else opts.duration,
                    connections=opts.connections,
                    threads=opts.threads,
                    timeout=opts.timeout,
                    server=target,
                )
                if result.error_count:
                    errors.append(f"{label}: {lib.describe_errors(result)} out of {result.requests} requests")
                    log(f"  ERROR {errors[-1]}")
            measured[name].append(result)
            log(
                f"  [{i}/{len(order)}] {name:<9} {result.rps:>9.1f} req/s  p50 {result.p50_ms:>7.2f} ms  "
                f"p99 {result.p99_ms:>7.2f} ms  server CPU {result.server_cpu_ms_per_req} ms/req  "
                f"machine busy {result.machine_busy}"
            )
    summary = {n: {"what": endpoints[n][0], **_summary(measured[n])} for n in names}
    base_rps = summary["baseline"]["rps"] or 1.0
    base_cpu = summary["baseline"]["server_cpu_ms_per_req"]
    for n in names:
        summary[n]["vs_baseline_rps"] = round(summary[n]["rps"] / base_rps, 3)
        cpu = summary[n]["server_cpu_ms_per_req"]
        summary[n]["vs_baseline_by_cpu"] = round(base_cpu / cpu, 3) if base_cpu and cpu else None
    meta = summary["metadata"]
    target_results = {
        "metadata_cpu_ms_max": METADATA_CPU_TARGET_MS,
        "metadata_cpu_pass": (meta["server_cpu_ms_per_req"] or 99) <= METADATA_CPU_TARGET_MS,
        "metadata_vs_baseline_min": METADATA_VS_BASELINE_TARGET,
        "metadata_vs_baseline_pass": meta["vs_baseline_rps"] >= METADATA_VS_BASELINE_TARGET,
        "others_cpu_ms_max": OTHER_CPU_TARGET_MS,
        "download_cpu_ms_max": DOWNLOAD_CPU_TARGET_MS,
        "download_cpu_pass": (summary["download"]["server_cpu_ms_per_req"] or 99) <= DOWNLOAD_CPU_TARGET_MS,
        **{
            f"{n}_cpu_pass": (summary[n]["server_cpu_ms_per_req"] or 99) <= OTHER_CPU_TARGET_MS
            for n in ("health", "me_key", "me_jwt", "usage", "keys")
        },
    }
    entry = {
        "connections": opts.connections,
        "threads": opts.threads,
        "rounds": opts.rounds,
        "warmup_s": opts.warmup,
        "order": order,
        "names": list(NAMES),
        "endpoints": summary,
        "targets": target_results,
    }
    _print(entry, server.workers)
    return entry, errors


def _print(entry: dict[str, Any], workers: int) -> None:
    print()
    print(f"core benchmark, {workers} worker(s), {entry['connections']} connections, mean of {entry['rounds']} rounds")
    print(f"{'endpoint':<12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'vs baseline':>13}{'by CPU':>9}")
    for name, e in entry["endpoints"].items():
        cpu = e["server_cpu_ms_per_req"]
        by_cpu = e["vs_baseline_by_cpu"]
        print(
            f"{name:<12}{e['rps']:>9.1f}{e['p50_ms']:>9.2f}{e['p99_ms']:>9.2f}"
            f"{'n/a' if cpu is None else f'{cpu:.3f}':>12}{e['vs_baseline_rps']:>13.3f}"
            f"{'n/a' if by_cpu is None else f'{by_cpu:.3f}':>9}"
        )
    t = entry["targets"]
    verdict = {True: "PASS", False: "FAIL"}
    print(
        f"metadata: CPU <= {t['metadata_cpu_ms_max']} ms: {verdict[t['metadata_cpu_pass']]}; "
        f">= {t['metadata_vs_baseline_min']}x baseline req/s: {verdict[t['metadata_vs_baseline_pass']]}"
    )
    others = ", ".join(f"{n} {verdict[t[f'{n}_cpu_pass']]}" for n in ("health", "me_key", "me_jwt", "usage", "keys"))
    print(f"CPU <= {t['others_cpu_ms_max']} ms: {others}")
    print(f"download: CPU <= {t['download_cpu_ms_max']} ms: {verdict[t['download_cpu_pass']]}")
    print(flush=True)
