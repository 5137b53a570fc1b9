"""The `usage` benchmark: reconciliation of a large bucket prefix, and S3 event ingestion.

One run brings up its own RGW (storage.storage_environment: scripts/s3-test-server on free ports) and the
server with STORAGE_BACKEND=s3 and an S3_EVENTS_TOKEN, registers one user (through the API) and then:

  seed       writes N objects (default 100,000; 0-1 KiB bodies) under users/<id>/ straight to RGW with
             aiobotocore put_object, 64 in flight: the user has objects and no rows;
  walk       a plain aiobotocore list_objects_v2 walk of users/<id>/ (count keys only), in a subprocess:
             the floor under any reconciliation (wall time, peak RSS);
  reconcile  `pockity reconcile --user <id>` in a subprocess with the server's environment: adopts all N;
             then again (nothing to repair: the pure walk + merge-join cost). Wall time, the subprocess's
             peak RSS (ru_maxrss from wait4), CPU, and the run's own started_at..finished_at from its report;
  events     POST /api/storage/events with single-record bodies via wrk: ObjectCreated:Put for existing
             objects with distinct sequencers (each: store the event, HEAD, compare -> unchanged), for
             objects without rows (-> adopted), and the same event over and over (-> duplicate).

`python bench/usage.py walk <prefix>` is the walk subprocess (S3_* / AWS_* from the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lib
from lib import BenchError, Server, WrkRequest, WrkResult, log

import storage

EVENTS_TOKEN = "bench-events-" + uuid.uuid4().hex
EVENT_CONNECTIONS = 32


@contextlib.contextmanager
def usage_environment(opts: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The storage benchmark's private RGW, plus an S3 events token for the server."""
    with storage.storage_environment(opts) as env:
        yield {**env, "S3_EVENTS_TOKEN": EVENTS_TOKEN}


# -------------------------------------------------------------------------------------------- helpers


def object_name(i: int) -> str:
    return f"d{i % 100:02d}/f{i:06d}.bin"


def _rusage_run(cmd: list[str], env: dict[str, str], cwd: Path | str | None = None) -> dict[str, Any]:
    """Run cmd to completion; wall time and the child's peak RSS and CPU from wait4 (no polling needed)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(ru.ru_maxrss / 1024, 1),  # KiB on Linux
        "user_cpu_s": round(ru.ru_utime, 2),
        "sys_cpu_s": round(ru.ru_stime, 2),
        "output": text[-3000:],
    }


async def _seed(env: dict[str, str], bucket: str, prefix: str, count: int, concurrency: int, offset: int = 0) -> float:
    """count put_objects of 0-1 KiB under prefix, `concurrency` in flight. Returns seconds."""
    rng = random.Random(42 + offset)
    blob = os.urandom(1024)
    sizes = [rng.randint(0, 1024) for _ in range(count)]
    done = 0
    t_log = time.monotonic()
    async with storage._s3_client(env, pool=concurrency) as client:
        await client.head_bucket(Bucket=bucket)
        t0 = time.perf_counter()
        queue = iter(range(count))

        async def worker() -> None:
            nonlocal done, t_log
            for i in queue:
                await client.put_object(Bucket=bucket, Key=prefix + object_name(offset + i), Body=blob[: sizes[i]])
                done += 1
                if time.monotonic() - t_log > 15:
                    t_log = time.monotonic()
                    el = time.perf_counter() - t0
                    log(f"    seeded {done}/{count} in {el:.0f} s ({done / el:.0f}/s)")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0


async def _walk(prefix: str) -> int:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    env = os.environ
    config = AioConfig(signature_version="s3v4", s3={"addressing_style": "path"})
    async with AioSession().create_client(
        "s3",
        region_name=env.get("AWS_REGION", "us-east-1"),
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=config,
    ) as client:
        kwargs: dict[str, Any] = {"Bucket": env["S3_BUCKET"], "Prefix": prefix, "MaxKeys": 1000}
        n = 0
        while True:
            page = await client.list_objects_v2(**kwargs)
            n += len(page.get("Contents", []))
            if not page.get("IsTruncated"):
                return n
            kwargs["ContinuationToken"] = page["NextContinuationToken"]


async def _db_rows(database_url: str, sql: str, *args: Any) -> list[Any]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds else 0.0


# ------------------------------------------------------------------------------------------ reconcile


def _walk_run(server: Server, prefix: str, expect: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "walk", prefix]
    r = _rusage_run(cmd, {**server.env, "PYTHONUNBUFFERED": "1"})
    if r["rc"] != 0:
        raise BenchError(f"list walk failed ({r['rc']}): {r['output']}")
    keys = int(r["output"].strip().splitlines()[-1])
    if keys != expect:
        raise BenchError(f"list walk counted {keys} keys, expected {expect}")
    r.pop("output")
    r["keys"] = keys
    r["objects_s"] = _rate(keys, r["wall_s"])
    return r


def _reconcile_run(server: Server, user_id: str, label: str) -> dict[str, Any]:
    cmd = [str(lib.VENV_BIN / "pockity"), "reconcile", "--user", user_id]
    r = _rusage_run(cmd, {**server.env, "LOG_LEVEL": "WARNING"}, cwd=server.workdir)
    if r["rc"] != 0:
        raise BenchError(f"pockity reconcile ({label}) failed ({r['rc']}): {r['output']}")
    rows = asyncio.run(
        _db_rows(
            server.database_url,
            "SELECT id, status, objects_seen, adopted, removed, corrected, "
            "extract(epoch FROM finished_at - started_at) AS seconds "
            "FROM reconciliation_reports ORDER BY started_at DESC LIMIT 1",
        )
    )
    rep = dict(rows[0])
    r["report"] = {k: (float(v) if k == "seconds" and v is not None else v) for k, v in rep.items()}
    r["reconcile_s"] = round(r["report"]["seconds"], 2) if r["report"]["seconds"] is not None else None
    r["output"] = r["output"].strip().splitlines()[0][:300] if r["output"].strip() else ""
    return r


def _reconciliation(server: Server, opts: argparse.Namespace, user: storage.User) -> dict[str, Any]:
    env = dict(server.extra_env)
    bucket = env["S3_BUCKET"]
    prefix = f"users/{user.user_id}/"
    n = opts.usage_objects
    log(f"  seeding {n} objects (0-1 KiB) under {prefix} with put_object, {opts.usage_seed_concurrency} in flight")
    seed_s = asyncio.run(_seed(env, bucket, prefix, n, opts.usage_seed_concurrency))
    log(f"  seeded {n} objects in {seed_s:.1f} s ({n / seed_s:.0f} PUT/s)")
    rows = asyncio.run(
        _db_rows(server.database_url, "SELECT count(*) FROM storage_objects WHERE user_id = $1", user.user_id)
    )
    if rows[0][0] != 0:
        raise BenchError(f"the user already has {rows[0][0]} rows")

    walk1 = _walk_run(server, prefix, n)
    log(f"  list walk: {walk1['wall_s']} s, peak RSS {walk1['peak_rss_mib']} MiB ({walk1['objects_s']} keys/s)")
    first = _reconcile_run(server, user.user_id, "adopt")
    if first["report"]["adopted"] != n or first["report"]["status"] != "DONE":
        raise BenchError(f"first reconcile did not adopt {n}: {first['report']}")
    first["objects_s"] = _rate(n, first["wall_s"])
    first["objects_s_in_run"] = _rate(n, first["reconcile_s"] or 0)
    log(
        f"  reconcile (adopt {n}): {first['wall_s']} s wall ({first['reconcile_s']} s in the run), peak RSS "
        f"{first['peak_rss_mib']} MiB, CPU {first['user_cpu_s']}+{first['sys_cpu_s']} s"
    )
    second = _reconcile_run(server, user.user_id, "no drift")
    rep = second["report"]
    if rep["status"] != "DONE" or rep["adopted"] or rep["removed"] or rep["corrected"] or rep["objects_seen"] != n:
        raise BenchError(f"second reconcile was not a no-op: {rep}")
    second["objects_s"] = _rate(n, second["wall_s"])
    second["objects_s_in_run"] = _rate(n, second["reconcile_s"] or 0)
    log(
        f"  reconcile (no drift): {second['wall_s']} s wall ({second['reconcile_s']} s in the run), peak RSS "
        f"{second['peak_rss_mib']} MiB"
    )
    walk2 = _walk_run(server, prefix, n)
    log(f"  list walk again: {walk2['wall_s']} s, peak RSS {walk2['peak_rss_mib']} MiB")
    # `pockity reconcile` with nothing to do at all: the CLI's fixed cost (imports, migrations check, clients).
    empty = storage._register(server, "empty")
    fixed = _reconcile_run(server, empty.user_id, "empty user")
    log(f"  reconcile of an empty user (fixed cost): {fixed['wall_s']} s, peak RSS {fixed['peak_rss_mib']} MiB")
    return {
        "what": (
            f"one user with {n} objects (0-1 KiB) written straight to RGW and no rows; `pockity reconcile --user` "
            "in a subprocess (adopts all), then again (nothing to repair); baseline: aiobotocore list_objects_v2 "
            "walk of the same prefix in a subprocess. Peak RSS = ru_maxrss of the subprocess."
        ),
        "objects": n,
        "seed": {
            "seconds": round(seed_s, 1),
            "puts_s": _rate(n, seed_s),
            "concurrency": opts.usage_seed_concurrency,
            "body_bytes": "0-1024",
        },
        "list_walk": walk1,
        "list_walk_again": walk2,
        "reconcile_adopt": first,
        "reconcile_no_drift": second,
        "reconcile_empty_user": fixed,
    }


# --------------------------------------------------------------------------------------------- events


_EVENT_LUA = """
local user = %s
local bucket = %s
local count = %d
local stride_base = %d
local run = %s
local i = -1
local seq = 0
function request()
  if i < 0 then
    i = (thread_index or 1) - 1
    math.randomseed((thread_index or 1) * 7919 + os.time())
  end
  local idx
  if stride_base > 0 then
    idx = i %% count
    i = i + stride_base
  else
    idx = math.random(0, count - 1)
  end
  seq = seq + 1
  local key = string.format("users/%%s/%s", user, idx %% 100, idx + %d)
  local body = string.format(
    '{"Records":[{"eventVersion":"2.2","eventSource":"ceph:s3","eventName":"ObjectCreated:Put",' ..
    '"s3":{"bucket":{"name":"%%s"},"object":{"key":"%%s","size":0,"sequencer":"%%s-%%d-%%d"}}}]}',
    bucket, key, run, thread_index or 1, seq)
  return wrk.format(nil, nil, nil, body)
end
"""


def _event_body(bucket: str, key: str, sequencer: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventVersion": "2.2",
                "eventSource": "ceph:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 0, "sequencer": sequencer}},
            }
        ]
    }


def _events(
    server: Server, opts: argparse.Namespace, wrk: str, user: storage.User, errors: list[str]
) -> dict[str, Any]:
    env = dict(server.extra_env)
    bucket = env["S3_BUCKET"]
    n = opts.usage_objects
    headers = {"Authorization": f"Bearer {EVENTS_TOKEN}", "Content-Type": "application/json"}
    path = "/api/storage/events"
    # Objects with no rows, for the adopt path: each event adopts one (threads stride over them).
    fresh = opts.usage_event_adopt_objects
    fresh_base = 1_000_000
    if fresh:
        secs = asyncio.run(_seed(env, bucket, f"users/{user.user_id}/", fresh, opts.usage_seed_concurrency, fresh_base))
        log(f"  events: seeded {fresh} more objects without rows in {secs:.1f} s")

    # Preflight: the outcome of each kind is what we measure.
    key = f"users/{user.user_id}/{object_name(0)}"
    s, b = lib.http_json("POST", server.url(path), _event_body(bucket, key, "pre-1"), headers=headers)
    if lib.expect(s, b, 200, "event preflight")["outcomes"] != {"unchanged": 1}:
        raise BenchError(f"event for an existing object: expected unchanged, got {b}")
    s, b = lib.http_json("POST", server.url(path), _event_body(bucket, key, "pre-1"), headers=headers)
    if lib.expect(s, b, 200, "event preflight (duplicate)")["outcomes"] != {"duplicate": 1}:
        raise BenchError(f"repeated event: expected duplicate, got {b}")

    def lua(count: int, stride: int, base: int, run: str) -> str:
        return _EVENT_LUA % (
            lib.lua_string(user.user_id),
            lib.lua_string(bucket),
            count,
            stride,
            lib.lua_string(run),
            "d%02d/f%06d.bin",
            base,
        )

    conns = opts.usage_event_connections
    threads = min(opts.threads, conns)
    runs: dict[str, tuple[str, WrkRequest]] = {
        "existing": (
            "ObjectCreated:Put for a random existing object (row present), distinct sequencer: insert event, "
            "lock name, HEAD, compare -> unchanged",
            WrkRequest(path, "POST", headers, lua=lua(n, 0, 0, uuid.uuid4().hex[:8])),
        ),
        "duplicate": (
            "the same event over and over: dedupe-key conflict -> duplicate",
            WrkRequest(path, "POST", headers, body=json.dumps(_event_body(bucket, key, "pre-1"))),
        ),
    }
    if fresh:
        runs["adopt"] = (
            f"ObjectCreated:Put for objects with no row ({fresh} seeded; threads stride over them, so each is "
            "new until they run out): HEAD + adopt",
            WrkRequest(path, "POST", headers, lua=lua(fresh, threads, fresh_base, uuid.uuid4().hex[:8])),
        )
    results: dict[str, Any] = {}
    for name, (what, req) in runs.items():
        storage.settle(server)
        before = asyncio.run(
            _db_rows(server.database_url, "SELECT outcome, count(*) FROM storage_events GROUP BY outcome")
        )
        result: WrkResult = lib.run_wrk(
            wrk,
            server.base_url,
            req,
            label=f"events {name}",
            duration=opts.duration,
            connections=conns,
            threads=threads,
            timeout=opts.timeout,
            server=server,
        )
        storage.settle(server)
        after = asyncio.run(
            _db_rows(server.database_url, "SELECT outcome, count(*) FROM storage_events GROUP BY outcome")
        )
        b0 = {r[0]: r[1] for r in before}
        stored = {r[0]: r[1] - b0.get(r[0], 0) for r in after if r[1] - b0.get(r[0], 0)}
        if result.error_count:
            errors.append(f"events {name}: {lib.describe_errors(result)} out of {result.requests} requests")
        log(
            f"  events {name:<9} {result.rps:>8.1f} events/s  p50 {result.p50_ms:>7.2f} ms  p99 {result.p99_ms:>7.2f} "
            f"ms  server CPU {result.server_cpu_ms_per_req} ms/event  new event rows {stored}  "
            f"{lib.describe_errors(result)}"
        )
        results[name] = {
            "what": what,
            "events_s": result.rps,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "server_cpu_ms_per_event": result.server_cpu_ms_per_req,
            "stored_outcomes": stored,
            "sample": result.as_dict(),
        }
    return {
        "what": f"POST /api/storage/events, one record per request, wrk {conns} connections, {opts.duration:g} s each",
        "connections": conns,
        "runs": results,
    }


# ---------------------------------------------------------------------------------------------- bench


def bench_usage(server: Server, opts: argparse.Namespace, wrk: str) -> tuple[dict[str, Any], list[str]]:
    rgw = storage._CURRENT_RGW
    if rgw is None:
        raise BenchError("usage benchmark run without its RGW")
    errors: list[str] = []
    user = storage._register(server, "usage")
    asyncio.run(storage._grant_big_tier(server.database_url, [user.user_id]))
    entry: dict[str, Any] = {
        "rgw": {"objstore": rgw.objstore, "version": rgw.version(), "start_seconds": rgw.start_seconds},
    }
    try:
        entry["reconcile"] = _reconciliation(server, opts, user)
        if opts.usage_event_connections > 0:
            entry["events"] = _events(server, opts, wrk, user, errors)
    except OSError as exc:  # e.g. the server went away: a setup failure, not a traceback
        alive = server.proc is not None and server.proc.poll() is None
        raise BenchError(f"{type(exc).__name__}: {exc} (server alive: {alive})\n{server.log_tail()}") from exc
    print_usage_table(entry)
    return entry, errors


def print_usage_table(entry: dict[str, Any]) -> None:
    rec = entry["reconcile"]
    n = rec["objects"]
    print()
    print(f"usage benchmark, RGW {entry['rgw']['objstore']} ({entry['rgw']['version']})")
    seed = rec["seed"]
    print(
        f"seed: {n} put_object (0-1 KiB), {seed['concurrency']} in flight: {seed['seconds']} s = {seed['puts_s']} PUT/s"
    )
    print(f"\n{'run (subprocess)':<28}{'wall s':>9}{'in-run s':>10}{'objects/s':>11}{'peak RSS MiB':>14}{'CPU s':>8}")
    for label, key in (
        ("list_objects_v2 walk", "list_walk"),
        ("reconcile: adopt all", "reconcile_adopt"),
        ("reconcile: nothing to do", "reconcile_no_drift"),
        ("list_objects_v2 walk again", "list_walk_again"),
        ("reconcile: empty user", "reconcile_empty_user"),
    ):
        r = rec[key]
        in_run = r.get("reconcile_s")
        print(
            f"{label:<28}{r['wall_s']:>9.2f}{'-' if in_run is None else f'{in_run:.2f}':>10}"
            f"{r.get('objects_s', 0):>11.1f}{r['peak_rss_mib']:>14.1f}{r['user_cpu_s'] + r['sys_cpu_s']:>8.1f}"
        )
    ev = entry.get("events")
    if ev:
        print(f"\nevents, {ev['connections']} connections:")
        print(f"{'run':<12}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/ev':>11}  stored outcomes")
        for name, r in ev["runs"].items():
            print(
                f"{name:<12}{r['events_s']:>10.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                f"{r['server_cpu_ms_per_event'] or 0:>11.3f}  {r['stored_outcomes']}"
            )
    print(flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "walk":
        print(asyncio.run(_walk(sys.argv[2])))
    else:
        sys.exit("usage: usage.py walk <prefix>   (the benchmark itself: bench/run.py --only usage)")
