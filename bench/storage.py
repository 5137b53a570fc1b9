"""The `storage` benchmark: Pockity's storage API against the same Ceph RGW uploaded to directly.

One run brings up its own RGW (scripts/s3-test-server in a temporary directory, on free ports), starts the
server with STORAGE_BACKEND=s3 on a fresh bucket, and measures side by side:

  big     one large upload (default 1 GiB): `PUT /api/storage/files/<name>` with a generated, streamed body
          vs the same bytes sent straight to RGW by S3Backend.put_stream (the server's own code, in this
          process) and by a plain aiobotocore multipart loop (8 MiB parts, 2 in flight); plus the server's
          peak RSS during its uploads;
  small   many small uploads (default 1,000 x 64 KiB, 16 at a time) through Pockity vs put_object;
  list    GET /api/storage/files pages for a user with 100,000 objects (rows seeded straight into the
          database: a listing reads only the database), with wrk and a Lua script that varies the page.

Unlike lib.py this module imports pockity (for the S3Backend baseline) and aiobotocore; the server itself
still runs as a separate process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import lib
from lib import BenchError, Server, WrkRequest, WrkResult, log

MIB = 1024 * 1024
GIB = 1024 * MIB
PART_SIZE = 8 * MIB  # the server's S3_PART_SIZE default; the baselines use the same
PARTS_IN_FLIGHT = 2  # as pockity.storage.backends.s3.MAX_PARTS_IN_FLIGHT
WARMUP_MIB = 24  # one direct and one Pockity upload of this size before the measured ones (3 parts)
CLIENT_CHUNK = 1 * MIB  # how the generated body is written to the socket / fed to put_stream

BIG_RATIO_TARGET = 0.8  # Pockity upload throughput / direct S3 throughput
RSS_TARGET_MIB = 150  # the server process's peak resident memory during a large upload

PASSWORD = "bench correct horse battery staple"
SCRIPT = lib.ROOT / "scripts" / "s3-test-server"


# ------------------------------------------------------------------------------------------------ RGW


@dataclass
class Rgw:
    """A private Ceph RGW started with scripts/s3-test-server in its own directory and ports."""

    objstore: str
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pockity-bench-rgw-")))
    rgw_port: int = 0
    mon_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    start_seconds: float = 0.0

    @property
    def conf(self) -> Path:
        return self.directory / "ceph.conf"

    @property
    def endpoint(self) -> str:
        return self.env["S3_ENDPOINT_URL"]

    def _script_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RGW_PORT": str(self.rgw_port),
            "MON_PORT": str(self.mon_port),
            "OBJSTORE": self.objstore,
        }

    def start(self) -> None:
        # Never the test run's 7480/3300: two free ports of our own.
        self.rgw_port = self.rgw_port or lib.free_port()
        self.mon_port = self.mon_port or lib.free_port()
        log(f"starting RGW ({self.objstore}) in {self.directory} on port {self.rgw_port} (mon {self.mon_port})")
        t0 = time.monotonic()
        out = subprocess.run(
            [str(SCRIPT), "start", str(self.directory)],
            env=self._script_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if out.returncode != 0:
            raise BenchError(f"scripts/s3-test-server start failed ({out.returncode}):\n{out.stderr[-3000:]}")
        self.start_seconds = round(time.monotonic() - t0, 1)
        for line in (self.directory / "env").read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                self.env[name.strip()] = value.strip()
        log(f"RGW up at {self.endpoint} in {self.start_seconds} s")

    def stop(self) -> None:
        out = subprocess.run(
            [str(SCRIPT), "stop", str(self.directory)],
            env=self._script_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if out.returncode != 0:
            log(f"WARNING: scripts/s3-test-server stop failed ({out.returncode}): {out.stderr[-2000:]}")
        else:
            log(f"RGW stopped ({self.directory})")
            shutil.rmtree(self.directory, ignore_errors=True)

    def gc(self) -> None:
        """Run RGW's garbage collection now: deleted multipart data is otherwise kept for hours (in RAM
        with memstore), and a few GiB of uploads would fill the 4 GiB object store."""
        out = subprocess.run(
            ["radosgw-admin", "-c", str(self.conf), "gc", "process", "--include-all"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if out.returncode != 0:
            log(f"WARNING: radosgw-admin gc process failed: {out.stderr[-500:]}")

    def daemon_pids(self) -> list[int]:
        pids = []
        for f in sorted((self.directory / "run").glob("*.fgpid")):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(f.read_text().strip()))
        return pids

    def cpu_seconds(self) -> float:
        return sum(_proc_cpu(pid) for pid in self.daemon_pids())

    def osd_rss_mib(self) -> float | None:
        f = self.directory / "run" / "osd.0.fgpid"
        with contextlib.suppress(OSError, ValueError):
            return _status_kib(int(f.read_text().strip()), "VmRSS") / 1024
        return None

    def version(self) -> str:
        out = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "unknown"


_CURRENT_RGW: Rgw | None = None  # set while storage_environment() is active; bench_storage reads it


def current_rgw() -> Rgw | None:
    """The RGW of the storage_environment() being run (for other benchmarks that use it: core, s3)."""
    return _CURRENT_RGW


@contextlib.contextmanager
def storage_environment(opts: argparse.Namespace) -> Iterator[dict[str, str]]:
    """Bring up a private RGW for the whole benchmark (every worker count); always stop it.

    Yields the server environment: STORAGE_BACKEND=s3, a fresh S3_BUCKET (S3_CREATE_BUCKET defaults to
    true, so the server creates it) and the endpoint and credentials from the RGW's env file.
    """
    global _CURRENT_RGW
    rgw = Rgw(objstore=opts.objstore)
    try:
        rgw.start()
        _CURRENT_RGW = rgw
        yield {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": f"pockity-bench-{uuid.uuid4().hex[:10]}",
            "S3_ENDPOINT_URL": rgw.env["S3_ENDPOINT_URL"],
            "AWS_ACCESS_KEY_ID": rgw.env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": rgw.env["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": rgw.env.get("AWS_REGION", "us-east-1"),
        }
    finally:
        _CURRENT_RGW = None
        rgw.stop()


# ------------------------------------------------------------------------------------ process figures


def _proc_cpu(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL process on the machine (the benchmark's database shares the server)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _proc_cpu(int(entry.name))
    return total


def _status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise ValueError(f"{name} not in /proc/{pid}/status")


def app_pids(server: Server) -> list[int]:
    """The processes that run the app. With --workers 1, uvicorn serves in the process we started (no
    child); with more, in its spawned children (the supervisor only watches them)."""
    assert server.proc is not None
    children = []
    for pid in server.worker_pids():
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"resource_tracker" not in cmd:
                children.append(pid)
    if server.workers == 1 and not children:
        return [server.proc.pid]
    return children


class RssSampler:
    """Polls VmRSS of the app processes every 20 ms in a thread; VmHWM (the kernel's own peak, which
    cannot be reset) is read before and after as well."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_kib: dict[int, int] = dict.fromkeys(pids, 0)
        self.hwm_before = {p: _status_kib(p, "VmHWM") for p in pids}
        self.rss_before = {p: _status_kib(p, "VmRSS") for p in pids}
        self.hwm_after: dict[int, int] = {}
        self.rss_after: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.pids:
                with contextlib.suppress(OSError, ValueError):
                    self.peak_kib[p] = max(self.peak_kib[p], _status_kib(p, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for p in self.pids:
            with contextlib.suppress(OSError, ValueError):
                self.hwm_after[p] = _status_kib(p, "VmHWM")
                self.rss_after[p] = _status_kib(p, "VmRSS")

    def summary(self) -> dict[str, Any]:
        mib = 1024
        # If VmHWM rose during the upload, it is this upload's exact peak; otherwise the sampled peak is
        # the best figure (the true peak lies between it and the old VmHWM).
        peaks = {
            p: max(self.peak_kib[p], self.hwm_after.get(p, 0) if self.hwm_after.get(p, 0) > self.hwm_before[p] else 0)
            for p in self.pids
        }
        return {
            "pids": self.pids,
            "rss_before_mib": round(max(self.rss_before.values()) / mib, 1),
            "rss_after_mib": round(max(self.rss_after.values(), default=0) / mib, 1),
            "rss_peak_sampled_mib": round(max(self.peak_kib.values()) / mib, 1),
            "vmhwm_before_mib": round(max(self.hwm_before.values()) / mib, 1),
            "vmhwm_after_mib": round(max(self.hwm_after.values(), default=0) / mib, 1),
            "peak_mib": round(max(peaks.values()) / mib, 1),
        }


@dataclass
class Meter:
    """CPU of this process, the server and RGW, and how busy the machine was, across one measurement."""

    server: Server
    rgw: Rgw
    t0: float = 0.0
    client0: float = 0.0
    server0: float = 0.0
    rgw0: float = 0.0
    pg0: float = 0.0
    busy0: tuple[int, int] = (0, 0)
    figures: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> Meter:
        self.busy0 = lib.machine_busy()
        self.client0, self.server0, self.rgw0 = time.process_time(), self.server.cpu_seconds(), self.rgw.cpu_seconds()
        self.pg0 = postgres_cpu_seconds()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.t0
        busy1 = lib.machine_busy()
        total = busy1[0] - self.busy0[0]
        self.figures = {
            "seconds": round(seconds, 3),
            "client_cpu_s": round(time.process_time() - self.client0, 2),
            "server_cpu_s": round(self.server.cpu_seconds() - self.server0, 2),
            "rgw_cpu_s": round(self.rgw.cpu_seconds() - self.rgw0, 2),
            "postgres_cpu_s": round(postgres_cpu_seconds() - self.pg0, 2),
            "machine_busy": round(1 - (busy1[1] - self.busy0[1]) / total, 3) if total > 0 else None,
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


def settle(server: Server, rgw: Rgw | None = None, *, idle_cores: float = 0.1, limit: float = 60.0) -> float:
    """Wait until the server (and RGW) are idle: requests still queued from a closed wrk connection must
    not be billed to the next run. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        c0 = server.cpu_seconds() + (rgw.cpu_seconds() if rgw else 0.0)
        time.sleep(0.5)
        if (server.cpu_seconds() + (rgw.cpu_seconds() if rgw else 0.0) - c0) / 0.5 < idle_cores:
            break
    return round(time.monotonic() - t0, 1)


# ------------------------------------------------------------------------------------- HTTP (raw, lean)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return status, bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return status, await reader.read()


def _request_head(method: str, host: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


class HttpConnection:
    """One keep-alive HTTP/1.1 connection with nearly no client CPU: the load generator must not compete
    with the server for the machine's few cores more than it has to."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> HttpConnection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        hdrs = dict(headers)
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        self.writer.write(_request_head(method, f"{self.host}:{self.port}", path, hdrs) + (body or b""))
        await self.writer.drain()
        return await _read_response(self.reader)

    async def put_stream(self, path: str, headers: dict[str, str], total: int, block: bytes) -> tuple[int, bytes]:
        """PUT `total` bytes generated on the fly (the random `block`, over and over), Content-Length set."""
        assert self.reader is not None and self.writer is not None
        hdrs = {**headers, "Content-Length": str(total)}
        self.writer.write(_request_head("PUT", f"{self.host}:{self.port}", path, hdrs))
        view = memoryview(block)
        sent = 0
        try:
            while sent < total:
                n = min(CLIENT_CHUNK, total - sent)
                start = sent % len(block)
                if start + n <= len(block):
                    self.writer.write(view[start : start + n])
                else:
                    self.writer.write(bytes(view[start:]) + bytes(view[: n - (len(block) - start)]))
                sent += n
                await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            # The server may answer early (413, 401...) and close: its answer says why.
            with contextlib.suppress(Exception):
                return await asyncio.wait_for(_read_response(self.reader), 5)
            raise BenchError(f"upload connection failed after {sent} bytes: {exc}") from exc
        return await _read_response(self.reader)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body[:300].decode(errors="replace")


# ------------------------------------------------------------------------------------------ S3 direct


def _s3_client(env: dict[str, str], pool: int = 32) -> Any:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession

    # The same client settings as pockity.storage.backends.s3.S3Backend.
    config = AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5.0,
        read_timeout=60.0,
        max_pool_connections=pool,
    )
    return AioSession().create_client(
        "s3",
        region_name=env.get("AWS_REGION", "us-east-1"),
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )


async def _chunks(total: int, block: bytes) -> AsyncIterator[bytes]:
    view = memoryview(block)
    sent = 0
    while sent < total:
        n = min(CLIENT_CHUNK, total - sent, len(block) - sent % len(block))
        start = sent % len(block)
        yield bytes(view[start : start + n])
        sent += n


async def _direct_backend_upload(
    env: dict[str, str], bucket: str, key: str, total: int, block: bytes, meter: Meter
) -> None:
    """The server's own S3Backend.put_stream, in this process: Pockity minus HTTP, auth and quota.
    The client is created (and the bucket checked) before the clock starts, as in the running server."""
    from pockity.storage.backends.s3 import S3Backend

    backend = S3Backend(
        bucket=bucket,
        region=env.get("AWS_REGION", "us-east-1"),
        endpoint_url=env["S3_ENDPOINT_URL"],
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        part_size=PART_SIZE,
    )
    await backend.start()
    try:
        with meter:
            info = await backend.put_stream(
                key, _chunks(total, block), content_type="application/octet-stream", size_hint=total
            )
        if info.size != total:
            raise BenchError(f"S3Backend stored {info.size} bytes, expected {total}")
    finally:
        await backend.close()


async def _direct_raw_timed(env: dict[str, str], bucket: str, key: str, total: int, block: bytes, meter: Meter) -> None:
    async with _s3_client(env) as client:
        await client.head_bucket(Bucket=bucket)  # connected before the clock starts
        with meter:
            await _direct_raw_upload(client, bucket, key, total, block)


async def _direct_raw_upload(client: Any, bucket: str, key: str, total: int, block: bytes) -> None:
    """Plain aiobotocore: CreateMultipartUpload, UploadPart (8 MiB, 2 in flight), Complete."""
    created = await client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="application/octet-stream")
    upload_id = created["UploadId"]
    parts: list[dict[str, Any]] = []
    in_flight: list[asyncio.Task[dict[str, Any]]] = []

    async def part(number: int, data: bytes) -> dict[str, Any]:
        resp = await client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
        return {"ETag": resp["ETag"], "PartNumber": number}

    try:
        offset, number = 0, 0
        while offset < total:
            n = min(PART_SIZE, total - offset)
            start = offset % len(block)
            data = (
                block[start : start + n] if start + n <= len(block) else block[start:] + block[: start + n - len(block)]
            )
            if len(in_flight) >= PARTS_IN_FLIGHT:
                parts.append(await in_flight.pop(0))
            number += 1
            in_flight.append(asyncio.create_task(part(number, data)))
            offset += n
        for task in in_flight:
            parts.append(await task)
        await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        for task in in_flight:
            task.cancel()
        with contextlib.suppress(Exception):
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


async def _direct_delete(env: dict[str, str], bucket: str, keys: list[str]) -> None:
    async with _s3_client(env) as client:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            await client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


# ------------------------------------------------------------------------------------------------ setup


@dataclass
class User:
    email: str
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _register(server: Server, label: str) -> User:
    email = f"bench-{label}-{uuid.uuid4().hex[:8]}@example.com"
    status, body = lib.http_json(
        "POST", server.url("/api/auth/register"), {"email": email, "password": PASSWORD, "name": label}
    )
    lib.expect(status, body, 201, f"register {label}")
    status, body = lib.http_json("POST", server.url("/api/auth/login"), {"email": email, "password": PASSWORD})
    token = lib.expect(status, body, 200, f"login {label}")["token"]
    status, body = lib.http_json("GET", server.url("/api/auth/me"), headers={"Authorization": f"Bearer {token}"})
    me = lib.expect(status, body, 200, f"me {label}")
    user_id = me.get("id") or me.get("user", {}).get("id")
    if not user_id:
        raise BenchError(f"cannot find the user id in /api/auth/me: {me}")
    return User(email, user_id, token)


async def _grant_big_tier(database_url: str, user_ids: list[str]) -> str:
    """A private tier with room for the benchmark (the default Free tier is 1 GiB and 1,000 objects).

    Copies the default tier row and overrides the limits, so columns added later by migrations keep
    their values without this code knowing them.
    """
    import asyncpg  # type: ignore[import-untyped]

    tier_id = f"bench{uuid.uuid4().hex[:21]}"
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        overrides = {
            "id": tier_id,
            "name": f"Bench {tier_id[-8:]}",
            "description": "storage benchmark",
            "storage_bytes": 1024**4,  # 1 TiB
            "max_objects": 10_000_000,
            "max_object_size_bytes": None,
            "is_public": False,
            "is_default": False,
            "is_archived": False,
        }
        inserted = await conn.execute(
            "INSERT INTO tiers SELECT (jsonb_populate_record(t, $1::jsonb)).* FROM tiers t WHERE t.is_default LIMIT 1",
            json.dumps(overrides),
        )
        if inserted != "INSERT 0 1":
            raise BenchError(f"could not create the benchmark tier (no default tier to copy?): {inserted}")
        await conn.execute("UPDATE users SET tier_id = $1 WHERE id = ANY($2::text[])", tier_id, user_ids)
    finally:
        await conn.close()
    return tier_id


def _listing_names(count: int) -> list[str]:
    return [f"dir{i % 100}/file{i:06d}.bin" for i in range(count)]


async def _seed_objects(database_url: str, user_id: str, names: list[str]) -> float:
    """COPY `names` into storage_objects for the user (rows only: nothing in S3). Returns seconds."""
    import asyncpg

    t0 = time.perf_counter()
    now = datetime.now(UTC)
    size = 4096
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        records = [
            (uuid.uuid4().hex[:26], user_id, name, size, "0" * 32, "application/octet-stream", None, now, now)
            for name in names
        ]
        await conn.copy_records_to_table(
            "storage_objects",
            records=records,
            columns=[
                "id",
                "user_id",
                "name",
                "size",
                "etag",
                "content_type",
                "api_key_id",
                "created_at",
                "updated_at",
            ],
        )
        # Keep the usage counter consistent with the rows (the listing itself does not read it).
        await conn.execute(
            """INSERT INTO usage_counters (scope, bytes_used, object_count, bytes_reserved, objects_reserved,
                                           updated_at)
               VALUES ($1, $2, $3, 0, 0, now())
               ON CONFLICT (scope) DO UPDATE SET bytes_used = usage_counters.bytes_used + $2,
                                                 object_count = usage_counters.object_count + $3""",
            f"user:{user_id}",
            size * len(names),
            len(names),
        )
        await conn.execute("ANALYZE storage_objects")
    finally:
        await conn.close()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ big upload


def _mb_s(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1) if seconds else 0.0


def _big_uploads(server: Server, rgw: Rgw, opts: argparse.Namespace, user: User, errors: list[str]) -> dict[str, Any]:
    bucket = server.extra_env["S3_BUCKET"]
    env = dict(server.extra_env)
    block = os.urandom(PART_SIZE + 4096)  # not a multiple of the part size: parts differ from each other
    # Alternating: the drift of a shared machine hits both sides alike.
    order = ["direct", "direct_raw", "pockity", "pockity", "direct_raw", "direct"][: 6 if opts.big_rounds >= 2 else 3]
    for _ in range(2, opts.big_rounds):
        order += order[-3:][::-1]
    pids = app_pids(server)
    rss_idle = max(_status_kib(p, "VmRSS") for p in pids) / 1024
    log(f"  big upload: {opts.big_mib} MiB each, order {order}; app process(es) {pids}, idle RSS {rss_idle:.1f} MiB")

    def one(who: str, mib: int, label: str) -> dict[str, Any] | None:
        total = mib * MIB
        name = f"big/{label}-{uuid.uuid4().hex[:6]}.bin"
        rss: dict[str, Any] | None = None
        osd_before = rgw.osd_rss_mib()
        if who == "pockity":
            path = "/api/storage/files/" + quote(name)
            headers = {**user.auth, "Content-Type": "application/octet-stream"}

            async def send() -> tuple[int, bytes]:
                async with HttpConnection(server.base_url) as conn:
                    return await conn.put_stream(path, headers, total, block)

            with RssSampler(pids) as sampler, Meter(server, rgw) as meter:
                status, body = asyncio.run(send())
            rss = sampler.summary()
            if status != 201:
                errors.append(f"big upload through Pockity: HTTP {status}: {_json(body)}")
                log(f"  ERROR big upload: HTTP {status}: {_json(body)}")
                return None
            stored = _json(body)
            if stored.get("size") != total:
                errors.append(f"big upload through Pockity stored {stored.get('size')} bytes, expected {total}")
            status, body = lib.http_json("DELETE", server.url(path), headers=user.auth)
            if status != 200:
                errors.append(f"delete after the big upload: HTTP {status}: {body}")
        else:
            key = f"bench-direct/{name}"
            meter = Meter(server, rgw)
            upload = _direct_backend_upload if who == "direct" else _direct_raw_timed
            asyncio.run(upload(env, bucket, key, total, block, meter))
            asyncio.run(_direct_delete(env, bucket, [key]))
        rgw.gc()
        f = meter.figures
        return {
            "who": who,
            "bytes": total,
            "mb_s": _mb_s(total, f["seconds"]),
            **f,
            "client_cpu_ms_per_mib": round(1000 * f["client_cpu_s"] / mib, 2),
            "server_cpu_ms_per_mib": round(1000 * f["server_cpu_s"] / mib, 2),
            "rgw_cpu_ms_per_mib": round(1000 * f["rgw_cpu_s"] / mib, 2),
            "osd_rss_mib_before": osd_before,
            "rss": rss,
        }

    # Warm-up, not measured: RGW's first writes, the server's first multipart upload, the S3 connections.
    warm = WARMUP_MIB
    for who in ("direct", "pockity"):
        one(who, warm, f"warm-{who}")
    samples: list[dict[str, Any]] = []
    for i, who in enumerate(order, 1):
        sample = one(who, opts.big_mib, f"{who}-{i}")
        if sample is None:
            continue
        samples.append(sample)
        f, rss = sample, sample["rss"]
        extra = f"  server RSS {rss['rss_before_mib']} -> peak {rss['peak_mib']} MiB" if rss else ""
        log(
            f"  [{i}/{len(order)}] {who:<10} {sample['mb_s']:>7.1f} MB/s  {f['seconds']:>6.1f} s  "
            f"CPU s: client {f['client_cpu_s']:.1f} server {f['server_cpu_s']:.1f} RGW {f['rgw_cpu_s']:.1f}  "
            f"machine busy {f['machine_busy']}{extra}"
        )

    def of(who: str) -> list[dict[str, Any]]:
        return [s for s in samples if s["who"] == who]

    def mean_mb_s(who: str) -> float | None:
        got = of(who)
        return round(lib.mean([s["mb_s"] for s in got]), 1) if got else None

    direct, raw, pockity = mean_mb_s("direct"), mean_mb_s("direct_raw"), mean_mb_s("pockity")
    peak = max((s["rss"]["peak_mib"] for s in of("pockity")), default=None)
    ratio = round(pockity / direct, 3) if pockity and direct else None
    ratio_raw = round(pockity / raw, 3) if pockity and raw else None
    return {
        "what": (
            f"{opts.big_mib} MiB: PUT /api/storage/files/<name> (raw HTTP/1.1 client, body generated on the fly, "
            "Content-Length set) vs S3Backend.put_stream in the benchmark process (direct) and a plain "
            f"aiobotocore multipart loop (direct_raw); {PART_SIZE // MIB} MiB parts, {PARTS_IN_FLIGHT} in flight"
        ),
        "size_mib": opts.big_mib,
        "order": order,
        "samples": samples,
        "direct_mb_s": direct,
        "direct_raw_mb_s": raw,
        "pockity_mb_s": pockity,
        "ratio_vs_direct": ratio,
        "ratio_vs_direct_raw": ratio_raw,
        "server_cpu_ms_per_mib": round(lib.mean([s["server_cpu_ms_per_mib"] for s in of("pockity")]), 2)
        if of("pockity")
        else None,
        "direct_client_cpu_ms_per_mib": round(lib.mean([s["client_cpu_ms_per_mib"] for s in of("direct")]), 2)
        if of("direct")
        else None,
        "server_peak_rss_mib": peak,
        "server_idle_rss_mib": round(rss_idle, 1),
        "server_upload_working_set_mib": round(peak - rss_idle, 1) if peak is not None else None,
        "targets": {
            "ratio_min": BIG_RATIO_TARGET,
            "ratio_pass": ratio is not None and ratio >= BIG_RATIO_TARGET,
            "rss_max_mib": RSS_TARGET_MIB,
            "rss_pass": peak is not None and peak <= RSS_TARGET_MIB,
        },
    }


# ---------------------------------------------------------------------------------------- small uploads


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


async def _pockity_small(
    server: Server, user: User, names: list[str], body: bytes, concurrency: int
) -> tuple[float, list[float], list[str]]:
    queue = iter(names)
    latencies: list[float] = []
    failures: list[str] = []
    headers = {**user.auth, "Content-Type": "application/octet-stream"}

    async def worker() -> None:
        async with HttpConnection(server.base_url) as conn:
            for name in queue:
                t0 = time.perf_counter()
                status, resp = await conn.request("PUT", "/api/storage/files/" + quote(name), headers, body)
                latencies.append(time.perf_counter() - t0)
                if status != 201:
                    failures.append(f"PUT {name}: HTTP {status}: {_json(resp)}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, failures


async def _direct_small(
    env: dict[str, str], bucket: str, keys: list[str], body: bytes, concurrency: int, warmup: list[str], meter: Meter
) -> tuple[float, list[float]]:
    async with _s3_client(env, pool=max(concurrency, 10)) as client:
        sem = asyncio.Semaphore(concurrency)

        async def put(key: str) -> None:
            async with sem:
                await client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/octet-stream")

        await asyncio.gather(*(put(k) for k in warmup))  # opens the connections, warms the client
        queue = iter(keys)
        latencies: list[float] = []

        async def worker() -> None:
            for key in queue:
                t0 = time.perf_counter()
                await client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/octet-stream")
                latencies.append(time.perf_counter() - t0)

        with meter:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            seconds = time.perf_counter() - t0
        return seconds, latencies


def _pockity_delete(server: Server, user: User, names: list[str], errors: list[str]) -> None:
    for i in range(0, len(names), 1000):
        status, body = lib.http_json(
            "POST", server.url("/api/storage/files/delete"), {"keys": names[i : i + 1000]}, headers=user.auth
        )
        if status != 200 or body.get("failed"):
            errors.append(f"batch delete: HTTP {status}: {str(body)[:300]}")


def _small_uploads(server: Server, rgw: Rgw, opts: argparse.Namespace, user: User, errors: list[str]) -> dict[str, Any]:
    env = dict(server.extra_env)
    bucket = env["S3_BUCKET"]
    n, conc = opts.small_count, opts.small_concurrency
    body = os.urandom(opts.small_kib * 1024)
    order = [("direct", "pockity")[(i + 1) // 2 % 2] for i in range(2 * opts.rounds)]  # d p p d d p ...
    log(f"  small uploads: {n} x {opts.small_kib} KiB, concurrency {conc}, order {order}")

    # Warm-up of the server path (compiled statements, pools, S3 connections): not measured.
    warm = [f"small/warm/f{i:04d}.bin" for i in range(2 * conc)]
    _, _, failures = asyncio.run(_pockity_small(server, user, warm, body, conc))
    if failures:
        errors += failures[:5]
        return {"error": failures[:5]}
    _pockity_delete(server, user, warm, errors)

    samples: list[dict[str, Any]] = []
    for r, who in enumerate(order, 1):
        if who == "pockity":
            names = [f"small/r{r}/f{i:05d}.bin" for i in range(n)]
            with Meter(server, rgw) as meter:
                seconds, latencies, failures = asyncio.run(_pockity_small(server, user, names, body, conc))
            if failures:
                errors += failures[:5]
                log(f"  ERROR small uploads: {len(failures)} failed, first: {failures[0]}")
            _pockity_delete(server, user, names, errors)
        else:
            keys = [f"bench-direct/small/r{r}/f{i:05d}" for i in range(n)]
            warm_keys = [f"bench-direct/small/warm{r}/f{i:04d}" for i in range(2 * conc)]
            meter = Meter(server, rgw)
            seconds, latencies = asyncio.run(_direct_small(env, bucket, keys, body, conc, warm_keys, meter))
            asyncio.run(_direct_delete(env, bucket, keys + warm_keys))
        f = meter.figures
        sample = {
            "who": who,
            "uploads": n,
            "seconds": round(seconds, 3),
            "uploads_s": round(n / seconds, 1),
            "p50_ms": round(1000 * _percentile(latencies, 50), 2),
            "p99_ms": round(1000 * _percentile(latencies, 99), 2),
            "server_cpu_ms_per_upload": round(1000 * f["server_cpu_s"] / n, 2),
            "rgw_cpu_ms_per_upload": round(1000 * f["rgw_cpu_s"] / n, 2),
            "postgres_cpu_ms_per_upload": round(1000 * f["postgres_cpu_s"] / n, 2),
            "client_cpu_ms_per_upload": round(1000 * f["client_cpu_s"] / n, 2),
            "machine_busy": f["machine_busy"],
            "loadavg_1m": f["loadavg_1m"],
        }
        samples.append(sample)
        log(
            f"  [{r}/{len(order)}] {who:<8} {sample['uploads_s']:>7.1f} uploads/s  p50 {sample['p50_ms']:>7.2f} ms  "
            f"p99 {sample['p99_ms']:>7.2f} ms  CPU ms/upload: server {sample['server_cpu_ms_per_upload']} "
            f"RGW {sample['rgw_cpu_ms_per_upload']} PostgreSQL {sample['postgres_cpu_ms_per_upload']} "
            f"client {sample['client_cpu_ms_per_upload']}  "
            f"machine busy {f['machine_busy']}"
        )
    rgw.gc()

    def mean_of(who: str, key: str) -> float:
        return round(lib.mean([s[key] for s in samples if s["who"] == who]), 2)

    direct, pockity = mean_of("direct", "uploads_s"), mean_of("pockity", "uploads_s")
    return {
        "what": (
            f"{n} PUTs of {opts.small_kib} KiB, {conc} at a time: PUT /api/storage/files/<name> (raw keep-alive "
            "HTTP/1.1 connections) vs aiobotocore put_object straight to RGW"
        ),
        "count": n,
        "size_kib": opts.small_kib,
        "concurrency": conc,
        "order": order,
        "samples": samples,
        "direct_uploads_s": direct,
        "pockity_uploads_s": pockity,
        "ratio": round(pockity / direct, 3) if direct else None,
        "direct_p50_ms": mean_of("direct", "p50_ms"),
        "pockity_p50_ms": mean_of("pockity", "p50_ms"),
        "direct_p99_ms": mean_of("direct", "p99_ms"),
        "pockity_p99_ms": mean_of("pockity", "p99_ms"),
        "server_cpu_ms_per_upload": mean_of("pockity", "server_cpu_ms_per_upload"),
        "rgw_cpu_ms_per_upload_direct": mean_of("direct", "rgw_cpu_ms_per_upload"),
        "rgw_cpu_ms_per_upload_pockity": mean_of("pockity", "rgw_cpu_ms_per_upload"),
        "postgres_cpu_ms_per_upload_pockity": mean_of("pockity", "postgres_cpu_ms_per_upload"),
    }


# ---------------------------------------------------------------------------------------------- listing


def _cursor(name: str) -> str:
    """pockity.storage.service._encode_cursor (checked against the server's own cursor in the preflight)."""
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


_LIST_LUA = """
local paths = {%s}
local seeded = false
function request()
  if not seeded then
    math.randomseed((thread_index or 1) * 7919 + os.time())
    seeded = true
  end
  return wrk.format(nil, paths[math.random(#paths)])
end
"""


def _lua_paths(paths: list[str]) -> str:
    return _LIST_LUA % ",".join(lib.lua_string(p) for p in paths)


def _listing(server: Server, opts: argparse.Namespace, wrk: str, errors: list[str]) -> dict[str, Any]:
    count = opts.list_objects
    reader = _register(server, "lister")
    asyncio.run(_grant_big_tier(server.database_url, [reader.user_id]))
    names = _listing_names(count)
    seconds = asyncio.run(_seed_objects(server.database_url, reader.user_id, names))
    log(f"  listing: seeded {count} storage_objects rows for one user in {seconds:.1f} s (COPY; nothing in S3)")
    ordered = sorted(names)  # byte order = the server's order ("C" collation)
    rng = random.Random(1234)
    base = "/api/storage/files"

    # Preflight: the pages are what we think they are, and our cursors are the server's cursors.
    status, page = lib.http_json("GET", server.url(f"{base}?limit=100"), headers=reader.auth)
    page = lib.expect(status, page, 200, "list first page")
    if [i["key"] for i in page["items"]] != ordered[:100] or page["nextCursor"] != _cursor(ordered[99]):
        raise BenchError(f"first page is not the first 100 names: {str(page)[:300]}")
    status, page = lib.http_json(
        "GET", server.url(f"{base}?limit=100&cursor={page['nextCursor']}"), headers=reader.auth
    )
    page = lib.expect(status, page, 200, "list second page")
    if [i["key"] for i in page["items"]] != ordered[100:200]:
        raise BenchError("the second page does not follow the first")
    status, page = lib.http_json("GET", server.url(f"{base}?delimiter=/&limit=100"), headers=reader.auth)
    page = lib.expect(status, page, 200, "list root with delimiter")
    if len(page["folders"]) != min(100, count) or page["items"]:
        raise BenchError(f"root view: expected 100 folders, got {len(page['folders'])} and {len(page['items'])} items")

    by_dir: dict[int, list[str]] = {}
    for name in ordered:
        by_dir.setdefault(int(name[3 : name.index("/")]), []).append(name)
    # Random deep pages: cursors anywhere in the 100,000 names.
    cursor_paths = [f"{base}?limit=100&cursor={_cursor(n)}" for n in rng.sample(ordered[:-100], 1000)]
    # A random folder's listing: its first page, or a page from a random point inside it.
    prefix_paths = []
    for _ in range(1000):
        d = rng.randrange(100)
        inside = by_dir[d]
        if rng.random() < 0.5 or len(inside) <= 100:
            prefix_paths.append(f"{base}?prefix=dir{d}/&limit=100")
        else:
            prefix_paths.append(f"{base}?prefix=dir{d}/&limit=100&cursor={_cursor(rng.choice(inside[:-100]))}")
    for path in (cursor_paths[0], *prefix_paths[:4]):
        status, page = lib.http_json("GET", server.url(path), headers=reader.auth)
        page = lib.expect(status, page, 200, f"preflight {path}")
        if not page["items"] or len(page["items"]) > 100 or page["folders"]:
            raise BenchError(f"{path}: expected up to 100 items, got {len(page['items'])} and folders")

    # The root view with a delimiter costs ~100 queries per request: with 64 connections every request
    # would wait longer than wrk's timeout, so it runs with fewer connections and a longer timeout.
    special = {"delimiter_root": (opts.delimiter_connections, max(opts.timeout, 30.0))}
    runs: dict[str, tuple[str, WrkRequest]] = {
        "me": ("GET /api/auth/me (JWT): auth alone, for reference", WrkRequest("/api/auth/me", headers=reader.auth)),
        "first_page": (
            "GET /api/storage/files?limit=100 (always the first page)",
            WrkRequest(f"{base}?limit=100", headers=reader.auth),
        ),
        "cursor_pages": (
            "?limit=100&cursor=<one of 1,000 random positions>: a different deep page each request",
            WrkRequest(f"{base}?limit=100", headers=reader.auth, lua=_lua_paths(cursor_paths)),
        ),
        "prefix_pages": (
            "?prefix=dirNN/&limit=100 (random folder of 1,000; half with a cursor inside it)",
            WrkRequest(f"{base}?limit=100", headers=reader.auth, lua=_lua_paths(prefix_paths)),
        ),
        "delimiter_root": (
            "?delimiter=/&limit=100 at the root: 100 folders, one range query each (~101 queries)",
            WrkRequest(f"{base}?delimiter=/&limit=100", headers=reader.auth),
        ),
        "delimiter_folder": (
            "?prefix=dirNN/&delimiter=/&limit=100 (random folder; no subfolders, so one query)",
            WrkRequest(
                f"{base}?limit=100",
                headers=reader.auth,
                lua=_lua_paths([f"{base}?prefix=dir{d}/&delimiter=/&limit=100" for d in range(100)]),
            ),
        ),
    }
    names_order = list(runs)
    order = [n for i in range(opts.rounds) for n in (names_order if i % 2 == 0 else names_order[::-1])]
    measured: dict[str, list[WrkResult]] = {n: [] for n in names_order}
    for i, name in enumerate(order, 1):
        req = runs[name][1]
        connections, timeout = special.get(name, (opts.connections, opts.timeout))
        settle(server)
        if opts.warmup > 0:
            warm = lib.run_wrk(
                wrk,
                server.base_url,
                req,
                label=f"{name} (warm-up)",
                duration=opts.warmup,
                connections=connections,
                threads=min(opts.threads, connections),
                timeout=timeout,
                server=server,
            )
            if warm.error_count:
                errors.append(f"list {name} (warm-up): {lib.describe_errors(warm)} out of {warm.requests} requests")
            settle(server)
        result = lib.run_wrk(
            wrk,
            server.base_url,
            req,
            label=name,
            duration=opts.duration,
            connections=connections,
            threads=min(opts.threads, connections),
            timeout=timeout,
            server=server,
        )
        if result.error_count:
            errors.append(f"list {name}: {lib.describe_errors(result)} out of {result.requests} requests")
        measured[name].append(result)
        log(
            f"  [{i}/{len(order)}] {name:<16} {result.rps:>8.1f} req/s  p50 {result.p50_ms:>7.2f} ms  "
            f"p99 {result.p99_ms:>7.2f} ms  server CPU {result.server_cpu_ms_per_req} ms/req  "
            f"machine busy {result.machine_busy}  {lib.describe_errors(result)}"
        )
    summary: dict[str, Any] = {}
    for name in names_order:
        rs = measured[name]
        summary[name] = {
            "what": runs[name][0],
            "connections": special.get(name, (opts.connections,))[0],
            "rps": round(lib.mean([r.rps for r in rs]), 1),
            "p50_ms": round(lib.mean([r.p50_ms for r in rs]), 2),
            "p99_ms": round(lib.mean([r.p99_ms for r in rs]), 2),
            "server_cpu_ms_per_req": round(lib.mean([r.server_cpu_ms_per_req or 0.0 for r in rs]), 3),
            "requests": sum(r.requests for r in rs),
            "samples": [r.as_dict() for r in rs],
        }
    me = summary["me"]["rps"] or 1.0
    for name in names_order:
        summary[name]["vs_me"] = round(summary[name]["rps"] / me, 3)
    return {
        "what": (
            f"one user with {count} objects named dir{{i%100}}/file{{i:06d}}.bin, rows seeded with COPY straight "
            "into storage_objects (a listing reads only the database, never S3); wrk "
            f"{opts.connections} connections ({opts.delimiter_connections} for delimiter_root), "
            f"{opts.duration:g} s per run, mean of {opts.rounds} rounds"
        ),
        "objects": count,
        "seed_seconds": round(seconds, 1),
        "connections": opts.connections,
        "delimiter_root_connections": opts.delimiter_connections,
        "order": order,
        "endpoints": summary,
    }


# ------------------------------------------------------------------------------------------------ bench


def bench_storage(server: Server, opts: argparse.Namespace, wrk: str) -> tuple[dict[str, Any], list[str]]:
    rgw = _CURRENT_RGW
    if rgw is None:
        raise BenchError("storage benchmark run without its RGW (storage_environment)")
    errors: list[str] = []
    uploader = _register(server, "uploader")
    tier = asyncio.run(_grant_big_tier(server.database_url, [uploader.user_id]))
    log(f"  users on tier {tier} (1 TiB, 10M objects); RGW {rgw.endpoint} ({rgw.objstore})")

    entry: dict[str, Any] = {
        "rgw": {
            "objstore": rgw.objstore,
            "endpoint": rgw.endpoint,
            "version": rgw.version(),
            "start_seconds": rgw.start_seconds,
            "bucket": server.extra_env["S3_BUCKET"],
            "note": "private RGW from scripts/s3-test-server in a temporary directory; GC forced after deletes",
        }
    }
    parts = set(opts.storage_parts)
    if "big" in parts and opts.big_mib > 0:
        entry["big_upload"] = _big_uploads(server, rgw, opts, uploader, errors)
    if "small" in parts and opts.small_count > 0:
        entry["small_uploads"] = _small_uploads(server, rgw, opts, uploader, errors)
    if "list" in parts and opts.list_objects > 0:
        entry["listing"] = _listing(server, opts, wrk, errors)
    big = entry.get("big_upload", {}).get("targets", {})
    entry["targets"] = {
        "big_ratio_min": BIG_RATIO_TARGET,
        "big_ratio_pass": big.get("ratio_pass"),
        "rss_max_mib": RSS_TARGET_MIB,
        "rss_pass": big.get("rss_pass"),
    }
    print_storage_table(entry, server.workers)
    return entry, errors


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def print_storage_table(entry: dict[str, Any], workers: int) -> None:
    print()
    rgw = entry["rgw"]
    print(f"storage benchmark, {workers} worker(s), RGW {rgw['objstore']} ({rgw['version']})")
    big = entry.get("big_upload")
    if big:
        print(f"\n{big['size_mib']} MiB upload ({PART_SIZE // MIB} MiB parts, {PARTS_IN_FLIGHT} in flight), in order:")
        print(
            f"{'run':<12}{'MB/s':>8}{'s':>8}{'client CPU s':>14}{'server CPU s':>14}{'RGW CPU s':>11}{'busy':>7}"
            f"{'peak RSS MiB':>14}"
        )
        for s in big["samples"]:
            rss = f"{s['rss']['peak_mib']:.0f}" if s["rss"] else "-"
            print(
                f"{s['who']:<12}{s['mb_s']:>8.1f}{s['seconds']:>8.1f}{s['client_cpu_s']:>14.1f}{s['server_cpu_s']:>14.1f}"
                f"{s['rgw_cpu_s']:>11.1f}{s['machine_busy'] or 0:>7.2f}{rss:>14}"
            )
        t = big["targets"]
        print(
            f"mean: direct (S3Backend) {big['direct_mb_s']} MB/s, direct (aiobotocore loop) "
            f"{big['direct_raw_mb_s']} MB/s, Pockity {big['pockity_mb_s']} MB/s"
        )
        print(
            f"Pockity/direct = {big['ratio_vs_direct']} (vs aiobotocore loop {big['ratio_vs_direct_raw']}); "
            f"target >= {BIG_RATIO_TARGET}: {_verdict(t['ratio_pass'])}"
        )
        print(
            f"server peak RSS during its uploads = {big['server_peak_rss_mib']} MiB (idle {big['server_idle_rss_mib']} "
            f"MiB before any upload); target <= {RSS_TARGET_MIB} MiB: {_verdict(t['rss_pass'])}; "
            f"server CPU {big['server_cpu_ms_per_mib']} ms/MiB"
        )
    small = entry.get("small_uploads")
    if small and "samples" in small:
        print(f"\n{small['count']} x {small['size_kib']} KiB uploads, concurrency {small['concurrency']}, in order:")
        print(
            f"{'run':<10}{'uploads/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU ms/up':>15}{'RGW CPU ms/up':>15}"
            f"{'busy':>7}"
        )
        for s in small["samples"]:
            print(
                f"{s['who']:<10}{s['uploads_s']:>11.1f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                f"{s['server_cpu_ms_per_upload']:>15.2f}{s['rgw_cpu_ms_per_upload']:>15.2f}"
                f"{s['machine_busy'] or 0:>7.2f}"
            )
        print(
            f"mean: direct {small['direct_uploads_s']} uploads/s, Pockity {small['pockity_uploads_s']} uploads/s, "
            f"ratio {small['ratio']} (no target; informational)"
        )
    listing = entry.get("listing")
    if listing:
        print(
            f"\nlisting, {listing['objects']} objects (rows seeded in the database; listing never reads S3), "
            f"{listing['connections']} connections:"
        )
        print(f"{'endpoint':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'vs me':>8}")
        for name, e in listing["endpoints"].items():
            print(
                f"{name:<18}{e['rps']:>9.1f}{e['p50_ms']:>9.2f}{e['p99_ms']:>9.2f}"
                f"{e['server_cpu_ms_per_req']:>12.3f}{e['vs_me']:>8.3f}"
            )
    print(flush=True)
