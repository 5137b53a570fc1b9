"""The `s3` benchmark: Pockity's S3 API against the same Ceph RGW spoken to directly, by the same client.

Brings up its own RGW (storage.storage_environment: free ports, never 7480/3300) and starts the server with the
S3 backend on it and the S3 listener on a free port (S3_API_PORT). Then, each target in alternating order:

  small   1,000 PutObjects of 64 KiB, 16 in flight, then 1,000 GetObjects of the same objects: through Pockity's
          S3 API with a Pockity key pair vs straight to RGW with its own. The requests are boto3's own — built
          and signed by a boto3 client before the clock starts (a before-send hook keeps them instead of sending
          them) — and replayed on 16 keep-alive HTTP/1.1 connections, `Expect: 100-continue` handshake included
          as boto3 does it. So both targets get the same requests (SigV4, signed SHA-256 payload, CRC32 header)
          and the client spends almost no CPU while the clock runs: the two-core machine's CPU goes to the
          servers being compared.
  big     a 1 GiB file uploaded with aws-cli `s3 cp` (var/awscli-venv, from scripts/ensure-s3-tools) and/or
          boto3's `upload_file` (the default TransferConfig: multipart, 8 MiB parts, 10 threads — what `aws s3
          cp` does too), through Pockity vs straight to RGW; the Pockity server's peak RSS above its RSS just
          before the upload (sampled from /proc every 20 ms, and VmHWM).

Reported: req/s or MB/s, p50/p99, the Pockity server's CPU per request (user+system time of its processes from
/proc over the run, divided by the requests), RGW's and PostgreSQL's CPU per request, and Pockity/RGW ratios.
Targets (issue 14; printed, never fail the run): small PUT and GET >= 0.5x, big >= 0.8x, peak RSS <= idle +
60 MiB. With `--s3-profile`, extra Pockity PUT and GET runs (after the measured ones, not counted) are sampled
with py-spy and the frames with the most own time are kept in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lib
from lib import BenchError, Server, log

import storage
from storage import MIB, Meter, Rgw, RssSampler

SMALL_RATIO_TARGET = 0.5
BIG_RATIO_TARGET = 0.8
RSS_ABOVE_IDLE_TARGET_MIB = 60
BUCKET = "pockity"  # S3_API_BUCKET's default: the bucket every tenant sees
SPEEDSCOPE = ("--format", "speedscope", "--output")
PROFILE_BIG_MIB = 256  # the profiled large upload (upload_file), at most this
BIG_BLOCK = 8 * MIB + 4096  # the big file repeats one random block of this size (parts differ from each other)


# ------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """Where S3 requests go: Pockity's S3 listener with a Pockity key pair, or RGW with its own credentials."""

    name: str  # "pockity" or "rgw"
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    prefix: str  # key prefix of this benchmark's objects

    def client(self, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            # No retries: a failed request must show as a failure, not as a slower success.
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}, **config),
        )


@contextlib.contextmanager
def s3_environment(opts: argparse.Namespace) -> Iterator[dict[str, str]]:
    """The storage benchmark's private RGW, plus the S3 listener on a free port."""
    with storage.storage_environment(opts) as env:
        yield {**env, "S3_API_PORT": str(lib.free_port())}


def _targets(server: Server, key: dict[str, str]) -> dict[str, Target]:
    env = server.extra_env
    return {
        "pockity": Target(
            "pockity", f"http://127.0.0.1:{env['S3_API_PORT']}", BUCKET, key["accessKeyId"], key["secretKey"], ""
        ),
        "rgw": Target(
            "rgw",
            env["S3_ENDPOINT_URL"],
            env["S3_BUCKET"],
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            "bench-direct/",
        ),
    }


# ------------------------------------------------------------------------------- boto3's own requests


@dataclass(frozen=True)
class Signed:
    """One request exactly as boto3 would have sent it."""

    method: str
    target: str  # path and query, as on the request line
    headers: list[tuple[str, str]]
    body: bytes | None

    @property
    def expects_continue(self) -> bool:
        return any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in self.headers)


class _NoBody:
    def stream(self, **_: Any) -> Iterator[bytes]:
        return iter(())


def signed_requests(
    client: Any, operation: str, calls: list[dict[str, Any]], body: bytes | None = None
) -> list[Signed]:
    """Call `operation` once per parameter set with a before-send hook that keeps the signed request and answers
    a fake 200 instead of sending it: boto3's serialization, checksums, headers and SigV4, nothing on the wire."""
    from botocore.awsrequest import AWSResponse

    kept: list[Signed] = []

    def keep(request: Any, **_: Any) -> AWSResponse:
        url = urlsplit(request.url)
        headers = [(k, v.decode("latin-1") if isinstance(v, bytes) else str(v)) for k, v in request.headers.items()]
        kept.append(Signed(request.method, url.path + (f"?{url.query}" if url.query else ""), headers, body))
        return AWSResponse(request.url, 200, {"ETag": '"0"', "Content-Length": "0"}, _NoBody())

    client.meta.events.register_first("before-send.s3", keep)
    try:
        for params in calls:
            getattr(client, operation)(**params)
    finally:
        client.meta.events.unregister("before-send.s3", keep)
    if body is not None:
        for req in kept:
            length = dict((k.lower(), v) for k, v in req.headers).get("content-length")
            if length != str(len(body)):
                raise BenchError(f"boto3 signed a body of {length} bytes, expected {len(body)}")
    return kept


# ------------------------------------------------------------------------------------- the replayer


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


async def _read_body(reader: asyncio.StreamReader, status: int, headers: dict[str, str], method: str) -> int:
    """Read (and drop) the body; its length."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    if "content-length" in headers:
        n = int(headers["content-length"])
        while n > 0:  # in pieces: nothing as large as the body is built
            n -= len(await reader.readexactly(min(n, 1 << 16)))
        return int(headers["content-length"])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return total
            total += len(await reader.readexactly(size))
            await reader.readexactly(2)
    return len(await reader.read())


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests, Expect: 100-continue as boto3 does."""

    def __init__(self, endpoint: str) -> None:
        url = urlsplit(endpoint)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def send(self, req: Signed) -> tuple[int, int]:
        """(status, body length) of the answer."""
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        head = f"{req.method} {req.target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in req.headers) + "\r\n"
        self.writer.write(head.encode("latin-1"))
        if req.body is not None:
            if req.expects_continue:
                await self.writer.drain()
                status, headers = await _read_head(self.reader)
                if status != 100:  # answered before the body was asked for: the server closes this connection
                    length = await _read_body(self.reader, status, headers, req.method)
                    await self.close()
                    return status, length
            self.writer.write(req.body)
        await self.writer.drain()
        status, headers = await _read_head(self.reader)
        while 100 <= status < 200:
            status, headers = await _read_head(self.reader)
        length = await _read_body(self.reader, status, headers, req.method)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, length


@dataclass
class Replay:
    seconds: float
    latencies: list[float]
    failures: list[str]
    body_bytes: int


async def replay(endpoint: str, requests: list[Signed], concurrency: int, expect_bytes: int | None) -> Replay:
    """Send `requests` on `concurrency` connections, each taking the next one as soon as it has its answer."""
    queue = iter(requests)
    latencies: list[float] = []
    failures: list[str] = []
    received = 0

    async def worker() -> None:
        nonlocal received
        conn = Connection(endpoint)
        try:
            for req in queue:
                t0 = time.perf_counter()
                try:
                    status, length = await conn.send(req)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    failures.append(f"{req.method} {req.target}: {type(exc).__name__}: {exc}")
                    await conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                received += length
                if not 200 <= status < 300:
                    failures.append(f"{req.method} {req.target}: HTTP {status}")
                elif expect_bytes is not None and length != expect_bytes:
                    failures.append(f"{req.method} {req.target}: {length} bytes, expected {expect_bytes}")
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Replay(time.perf_counter() - t0, latencies, failures, received)


# ------------------------------------------------------------------------------------------ small


def _percentile_ms(values: list[float], pct: float) -> float:
    return round(1000 * storage._percentile(values, pct), 2)


def _delete_all(client: Any, bucket: str, keys: list[str], errors: list[str]) -> None:
    for i in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[i : i + 1000]]
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if answer.get("Errors"):
            errors.append(f"delete_objects: {answer['Errors'][:3]}")


@dataclass
class SmallRun:
    keys: list[str]
    puts: list[Signed]
    gets: list[Signed]


def _prepare_small(target: Target, client: Any, label: str, n: int, body: bytes) -> SmallRun:
    keys = [f"{target.prefix}s3bench/{label}/f{i:05d}.bin" for i in range(n)]
    puts = signed_requests(
        client,
        "put_object",
        [{"Bucket": target.bucket, "Key": k, "Body": body, "ContentType": "application/octet-stream"} for k in keys],
        body,
    )
    gets = signed_requests(client, "get_object", [{"Bucket": target.bucket, "Key": k} for k in keys])
    return SmallRun(keys, puts, gets)


def _small_sample(op: str, target: str, r: int, n: int, result: Replay, figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "op": op,
        "who": target,
        "round": r,
        "requests": n,
        "seconds": round(result.seconds, 3),
        "rps": round(n / result.seconds, 1),
        "p50_ms": _percentile_ms(result.latencies, 50),
        "p99_ms": _percentile_ms(result.latencies, 99),
        "server_cpu_ms_per_req": round(1000 * figures["server_cpu_s"] / n, 3),
        "server_cpu_cores": round(figures["server_cpu_s"] / result.seconds, 2) if result.seconds else None,
        "rgw_cpu_ms_per_req": round(1000 * figures["rgw_cpu_s"] / n, 3),
        "postgres_cpu_ms_per_req": round(1000 * figures["postgres_cpu_s"] / n, 3),
        "client_cpu_ms_per_req": round(1000 * figures["client_cpu_s"] / n, 3),
        "machine_busy": figures["machine_busy"],
        "loadavg_1m": figures["loadavg_1m"],
    }


def _small(
    server: Server, rgw: Rgw, opts: argparse.Namespace, targets: dict[str, Target], errors: list[str]
) -> dict[str, Any]:
    n, conc = opts.s3_count, opts.s3_concurrency
    body = os.urandom(opts.s3_kib * 1024)
    order = [("rgw", "pockity")[(i + 1) // 2 % 2] for i in range(2 * opts.s3_rounds)]  # r p p r r p ...
    log(f"  small: {n} PutObjects then {n} GetObjects of {opts.s3_kib} KiB, {conc} in flight, order {order}")
    clients = {name: t.client() for name, t in targets.items()}

    # Warm-up of both paths (connections, compiled statements, caches), and one object read back whole with
    # boto3 itself: what the replayed requests store is what boto3 gets back.
    for name, target in targets.items():
        warm = _prepare_small(target, clients[name], "warm", 2 * conc, body)
        for op, reqs, size in (("PUT", warm.puts, None), ("GET", warm.gets, len(body))):
            result = asyncio.run(replay(target.endpoint, reqs, conc, size))
            if result.failures:
                raise BenchError(f"warm-up {op} on {name}: {len(result.failures)} failed, first: {result.failures[0]}")
        got = clients[name].get_object(Bucket=target.bucket, Key=warm.keys[0])["Body"].read()
        if got != body:
            raise BenchError(f"{name}: boto3 read back {len(got)} bytes that differ from what was stored")
        _delete_all(clients[name], target.bucket, warm.keys, errors)

    samples: list[dict[str, Any]] = []
    for r, who in enumerate(order, 1):
        target = targets[who]
        run = _prepare_small(target, clients[who], f"r{r}", n, body)
        for op, reqs, size in (("put", run.puts, None), ("get", run.gets, len(body))):
            storage.settle(server, rgw)
            with Meter(server, rgw) as meter:
                result = asyncio.run(replay(target.endpoint, reqs, conc, size))
            if result.failures:
                errors += [f"{op} {who}: {f}" for f in result.failures[:5]]
                log(f"  ERROR {op} {who}: {len(result.failures)} failed, first: {result.failures[0]}")
            sample = _small_sample(op, who, r, n, result, meter.figures)
            samples.append(sample)
            log(
                f"  [{r}/{len(order)}] {op:<3} {who:<8} {sample['rps']:>7.1f} req/s  p50 {sample['p50_ms']:>7.2f} ms  "
                f"p99 {sample['p99_ms']:>7.2f} ms  CPU ms/req: server {sample['server_cpu_ms_per_req']} "
                f"RGW {sample['rgw_cpu_ms_per_req']} PostgreSQL {sample['postgres_cpu_ms_per_req']} "
                f"client {sample['client_cpu_ms_per_req']}  machine busy {sample['machine_busy']}"
            )
        _delete_all(clients[who], target.bucket, run.keys, errors)
        rgw.gc()

    summary: dict[str, Any] = {}
    for op in ("put", "get"):
        of = {w: [s for s in samples if s["op"] == op and s["who"] == w] for w in ("rgw", "pockity")}

        def mean(who: str, field: str, of: dict[str, list[dict[str, Any]]] = of) -> float:
            return round(lib.mean([s[field] for s in of[who]]), 3)

        rgw_rps, pockity_rps = mean("rgw", "rps"), mean("pockity", "rps")
        ratio = round(pockity_rps / rgw_rps, 3) if rgw_rps else None
        summary[op] = {
            "rgw_rps": rgw_rps,
            "pockity_rps": pockity_rps,
            "ratio": ratio,
            "ratio_per_round": [
                round(p["rps"] / d["rps"], 3) for p, d in zip(of["pockity"], of["rgw"], strict=False) if d["rps"]
            ],
            "rgw_p50_ms": mean("rgw", "p50_ms"),
            "pockity_p50_ms": mean("pockity", "p50_ms"),
            "rgw_p99_ms": mean("rgw", "p99_ms"),
            "pockity_p99_ms": mean("pockity", "p99_ms"),
            "server_cpu_ms_per_req": mean("pockity", "server_cpu_ms_per_req"),
            "rgw_cpu_ms_per_req_direct": mean("rgw", "rgw_cpu_ms_per_req"),
            "rgw_cpu_ms_per_req_via_pockity": mean("pockity", "rgw_cpu_ms_per_req"),
            "postgres_cpu_ms_per_req_via_pockity": mean("pockity", "postgres_cpu_ms_per_req"),
            "client_cpu_ms_per_req": mean("pockity", "client_cpu_ms_per_req"),
            "target_min": SMALL_RATIO_TARGET,
            "pass": ratio is not None and ratio >= SMALL_RATIO_TARGET,
        }
    return {
        "what": (
            f"{n} PutObjects of {opts.s3_kib} KiB, then {n} GetObjects of them, {conc} in flight: boto3's requests "
            "(SigV4, signed SHA-256 payload, CRC32, Expect: 100-continue), signed before the clock starts and "
            "replayed on keep-alive connections, through Pockity's S3 API vs straight to RGW"
        ),
        "count": n,
        "size_kib": opts.s3_kib,
        "concurrency": conc,
        "order": order,
        "samples": samples,
        **summary,
    }


# -------------------------------------------------------------------------------------------- big


def aws_cli(install: bool) -> str | None:
    """The aws-cli to run: $BENCH_AWS_CLI, else the project's own (var/awscli-venv, $AWSCLI_VENV), installed by
    scripts/ensure-s3-tools when `install` (PyPI's awscli pins a botocore that aiobotocore does not allow, so it
    lives in a virtualenv of its own). None if there is none to be had."""
    given = os.environ.get("BENCH_AWS_CLI")
    venv = Path(os.environ.get("AWSCLI_VENV", "var/awscli-venv"))
    own = (venv if venv.is_absolute() else lib.ROOT / venv) / "bin" / "aws"
    if given is None and not own.exists() and install:
        log("  no aws-cli yet: scripts/ensure-s3-tools installs it (var/awscli-venv)")
        out = subprocess.run(
            [str(lib.ROOT / "scripts" / "ensure-s3-tools")], cwd=lib.ROOT, capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            log(f"  WARNING: scripts/ensure-s3-tools failed ({out.returncode}): {out.stderr[-500:]}")
    found = given or (str(own) if own.exists() else None)
    if found is None:
        return None
    out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False, timeout=60)
    return found if out.returncode == 0 else None


def _aws_cli_version(aws: str) -> str:
    out = subprocess.run([aws, "--version"], capture_output=True, text=True, check=False, timeout=60)
    return (out.stdout or out.stderr).strip()


def _big_file(directory: Path, mib: int) -> Path:
    path = directory / f"big-{mib}MiB.bin"
    block = os.urandom(BIG_BLOCK)
    total, written = mib * MIB, 0
    with open(path, "wb") as f:
        while written < total:
            n = min(len(block), total - written)
            f.write(block[:n])
            written += n
    return path


class AwsCliUpload:
    """`aws s3 cp FILE s3://bucket/key --endpoint-url ...` with a config of its own (path-style addressing)."""

    def __init__(self, aws: str, target: Target, workdir: Path) -> None:
        config = workdir / f"aws-config-{target.name}"
        config.write_text("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
        self.aws, self.target = aws, target
        self.env = {
            **os.environ,
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(workdir / "no-credentials"),
            "AWS_ACCESS_KEY_ID": target.access_key,
            "AWS_SECRET_ACCESS_KEY": target.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
        }

    def __call__(self, path: Path, key: str) -> None:
        cmd = [
            self.aws,
            "s3",
            "cp",
            str(path),
            f"s3://{self.target.bucket}/{key}",
            "--endpoint-url",
            self.target.endpoint,
            "--only-show-errors",
            "--no-progress",
        ]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=False, timeout=900)
        if out.returncode != 0:
            raise BenchError(f"aws s3 cp to {self.target.name} failed ({out.returncode}): {out.stderr[-2000:]}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _big(
    server: Server, rgw: Rgw, opts: argparse.Namespace, targets: dict[str, Target], errors: list[str]
) -> dict[str, Any]:
    clients = [c.strip() for c in opts.s3_big_client.split(",")]
    aws = aws_cli(install=True) if {"auto", "awscli"} & set(clients) else None
    if "awscli" in clients and aws is None:
        raise BenchError("--s3-big-client awscli: no aws-cli (scripts/ensure-s3-tools failed; or set BENCH_AWS_CLI)")
    if aws is None and "auto" in clients:
        log("  no aws-cli to be had: the large upload uses boto3's upload_file")
    wanted = [c for c in ("awscli", "boto3") if c in clients] or (["awscli"] if aws else ["boto3"])
    mib = opts.s3_big_mib
    order = [("rgw", "pockity")[(i + 1) // 2 % 2] for i in range(2 * opts.s3_big_rounds)]
    pids = storage.app_pids(server)
    workdir = Path(tempfile.mkdtemp(prefix="pockity-bench-s3-"))
    result: dict[str, Any] = {
        "size_mib": mib,
        "order": order,
        "aws_cli": _aws_cli_version(aws) if aws else None,
        "server_idle_rss_mib_at_start": round(max(storage._status_kib(p, "VmRSS") for p in pids) / 1024, 1),
    }
    try:
        path = _big_file(workdir, mib)
        warm_path = _big_file(workdir, 24)  # 3 parts
        size = path.stat().st_size
        log(
            f"  big: {mib} MiB file with {', '.join(wanted)}, order {order}; server idle RSS "
            f"{result['server_idle_rss_mib_at_start']} MiB"
        )
        boto = {name: t.client() for name, t in targets.items()}
        for client_name in wanted:
            uploaders = {
                name: (AwsCliUpload(aws, t, workdir) if client_name == "awscli" and aws else None)
                for name, t in targets.items()
            }
            samples = []
            for who in ("rgw", "pockity"):  # warm-up (not measured): first multipart upload on each side
                warm_key = f"{targets[who].prefix}s3bench/big/warm-{client_name}.bin"
                boto[who].upload_file(str(warm_path), targets[who].bucket, warm_key)
                boto[who].delete_object(Bucket=targets[who].bucket, Key=warm_key)
            for i, who in enumerate(order, 1):
                target = targets[who]
                key = f"{target.prefix}s3bench/big/{client_name}-{i}-{uuid.uuid4().hex[:6]}.bin"
                storage.settle(server, rgw)
                sampler = RssSampler(pids) if who == "pockity" else None
                child0 = _children_cpu()
                with contextlib.ExitStack() as stack:
                    if sampler is not None:
                        stack.enter_context(sampler)
                    meter = stack.enter_context(Meter(server, rgw))
                    try:
                        uploader = uploaders[who]
                        if uploader is not None:
                            uploader(path, key)
                        else:  # the default TransferConfig
                            boto[who].upload_file(str(path), target.bucket, key)
                    except Exception as exc:
                        errors.append(f"big upload ({client_name}) to {who}: {type(exc).__name__}: {exc}")
                        log(f"  ERROR {errors[-1]}")
                        continue
                child_cpu = _children_cpu() - child0
                head = boto[who].head_object(Bucket=target.bucket, Key=key)
                if head["ContentLength"] != size:
                    errors.append(f"big upload to {who} stored {head['ContentLength']} bytes, expected {size}")
                boto[who].delete_object(Bucket=target.bucket, Key=key)
                rgw.gc()
                f = meter.figures
                rss = sampler.summary() if sampler is not None else None
                sample = {
                    "client": client_name,
                    "who": who,
                    "bytes": size,
                    "mb_s": storage._mb_s(size, f["seconds"]),
                    **f,
                    "client_cpu_s": round(f["client_cpu_s"] + child_cpu, 2),
                    "server_cpu_ms_per_mib": round(1000 * f["server_cpu_s"] / mib, 2),
                    # Cores the server used on average: on a loaded machine a one-thread server gets its share
                    # of the CPU only, and that share, over its CPU per MiB, caps its MB/s.
                    "server_cpu_cores": round(f["server_cpu_s"] / f["seconds"], 2) if f["seconds"] else None,
                    "rgw_cpu_ms_per_mib": round(1000 * f["rgw_cpu_s"] / mib, 2),
                    "rss": rss,
                    "rss_above_idle_mib": round(rss["peak_mib"] - rss["rss_before_mib"], 1) if rss else None,
                }
                samples.append(sample)
                extra = (
                    f"  server RSS {rss['rss_before_mib']} -> peak {rss['peak_mib']} MiB "
                    f"(+{sample['rss_above_idle_mib']})"
                    if rss
                    else ""
                )
                log(
                    f"  [{i}/{len(order)}] {client_name:<6} {who:<8} {sample['mb_s']:>7.1f} MB/s  "
                    f"{f['seconds']:>6.1f} s  CPU s: client {sample['client_cpu_s']:.1f} server "
                    f"{f['server_cpu_s']:.1f} RGW {f['rgw_cpu_s']:.1f}  machine busy {f['machine_busy']}{extra}"
                )
            result[client_name] = _big_summary(client_name, samples)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["clients"] = wanted
    return result


def _big_summary(client_name: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    def of(who: str) -> list[dict[str, Any]]:
        return [s for s in samples if s["who"] == who]

    def mean(who: str, field: str) -> float | None:
        got = [s[field] for s in of(who)]
        return round(lib.mean(got), 2) if got else None

    rgw_mb_s, pockity_mb_s = mean("rgw", "mb_s"), mean("pockity", "mb_s")
    ratio = round(pockity_mb_s / rgw_mb_s, 3) if rgw_mb_s and pockity_mb_s else None
    above = max((s["rss_above_idle_mib"] for s in of("pockity")), default=None)
    peak = max((s["rss"]["peak_mib"] for s in of("pockity")), default=None)
    how = (
        "aws s3 cp (its default: multipart, 8 MiB parts, 10 requests in flight)"
        if client_name == "awscli"
        else "boto3 upload_file with the default TransferConfig (multipart, 8 MiB parts, 10 threads)"
    )
    return {
        "what": how,
        "samples": samples,
        "rgw_mb_s": rgw_mb_s,
        "pockity_mb_s": pockity_mb_s,
        "ratio": ratio,
        "server_cpu_ms_per_mib": mean("pockity", "server_cpu_ms_per_mib"),
        "rgw_cpu_ms_per_mib_direct": mean("rgw", "rgw_cpu_ms_per_mib"),
        "rgw_cpu_ms_per_mib_via_pockity": mean("pockity", "rgw_cpu_ms_per_mib"),
        "server_peak_rss_mib": peak,
        "server_rss_above_idle_mib": above,
        "targets": {
            "ratio_min": BIG_RATIO_TARGET,
            "ratio_pass": ratio is not None and ratio >= BIG_RATIO_TARGET,
            "rss_above_idle_max_mib": RSS_ABOVE_IDLE_TARGET_MIB,
            "rss_pass": above is not None and above <= RSS_ABOVE_IDLE_TARGET_MIB,
        },
    }


# ---------------------------------------------------------------------------------------- profile


def _py_spy() -> str:
    found = shutil.which("py-spy", path=str(lib.VENV_BIN)) or shutil.which("py-spy")
    if not found:
        raise BenchError("--s3-profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def _package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/src/pockity/" in path:
        return "pockity." + path.split("/src/pockity/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/lib/python3" in path:
        return "stdlib"
    return path.rsplit("/", 1)[-1]


_AREAS = (  # the module of the innermost Pockity frame of a sample -> where that time is spent
    ("pockity/storage/backends/", "storage backend: aiobotocore/aiohttp requests to RGW"),
    ("pockity/apikeys/", "key lookup: the signing key's row (SQL) and its AES-GCM open"),
    ("pockity/s3api/", "S3 layer: addressing, SigV4, body hashes and checksums, XML, headers"),
    ("pockity/storage/", "storage flow: reservation, quota, recording (SQL statements)"),
    ("pockity/tiers/", "storage flow: reservation, quota, recording (SQL statements)"),
    ("pockity/ratelimit/", "rate limiter"),
    ("pockity/kit/jobs", "background jobs"),
    ("pockity/apikeys/tasks", "background jobs"),
)
_PASS_THROUGH = ("pockity/kit/", "pockity/db.py", "pockity/app.py", "pockity/cli.py", "pockity/serving.py")


def _area(files: list[str]) -> str:
    """Where one sample's time goes, from its stack's files (root first)."""
    for path in reversed(files):
        if "/src/pockity/" not in path:
            continue
        where = "pockity/" + path.split("/src/pockity/", 1)[1]
        if where.startswith(("pockity/kit/jobs", "pockity/apikeys/tasks")):
            return "background jobs"
        if where.startswith(_PASS_THROUGH):
            continue
        for prefix, area in _AREAS:
            if where.startswith(prefix):
                return area
        return f"other Pockity code ({where.rsplit(':', 1)[0]})"
    if any("sqlalchemy/" in f or "asyncpg/" in f for f in files):
        return "SQLAlchemy/asyncpg in greenlets (py-spy shows no caller: the SQL of the areas above)"
    if any(f"/{package}/" in f for f in files for package in ("aiohttp", "aiobotocore", "botocore")):
        return _AREAS[0][1]  # aiohttp's own tasks (a streamed request body is written by one)
    return "HTTP server and event loop (uvicorn, httptools, asyncio)"


def top_frames(speedscope: dict[str, Any], limit: int = 10) -> dict[str, Any]:
    """From a py-spy speedscope file: the frames with the most own time (the innermost frame of each sample),
    own time by package (pockity.<module> for our code), and the frames with the most total time. Stacks that run
    in SQLAlchemy's greenlets appear without their callers (py-spy sees each greenlet as its own stack)."""
    frames = speedscope["shared"]["frames"]
    own: Counter[int] = Counter()
    total: Counter[int] = Counter()
    by_package: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    weight_sum = 0.0
    samples = 0
    for profile in speedscope["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack:
                continue
            samples += 1
            weight_sum += weight
            own[stack[-1]] += weight
            by_package[_package(frames[stack[-1]].get("file", ""))] += weight
            by_area[_area([frames[i].get("file", "") for i in stack])] += weight
            for index in set(stack):
                total[index] += weight

    def pct(weight: float) -> float:
        return round(100 * weight / weight_sum, 1) if weight_sum else 0.0

    def describe(index: int, weight: float) -> dict[str, Any]:
        frame = frames[index]
        where = frame.get("file", "")
        for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
            if marker in where:
                where = where.split(marker, 1)[1]
                break
        return {"function": frame["name"], "where": f"{where}:{frame.get('line', '')}", "pct": pct(weight)}

    return {
        "samples": samples,
        "own": [describe(i, w) for i, w in own.most_common(limit)],
        "own_by_package": [{"package": k, "pct": pct(w)} for k, w in by_package.most_common(limit)],
        "by_area": [{"area": k, "pct": pct(w)} for k, w in by_area.most_common()],
        "total": [describe(i, w) for i, w in total.most_common(limit * 4)],
    }


@contextlib.contextmanager
def sampled(pid: int, path: Path, rate: int) -> Iterator[None]:
    """py-spy record on `pid` around the block (speedscope format, written when it gets SIGINT)."""
    spy = subprocess.Popen(
        [_py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", *SPEEDSCOPE, str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)  # attached
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        _, stderr = spy.communicate(timeout=120)
    if not path.exists():
        raise BenchError(f"py-spy wrote no profile: {stderr.decode(errors='replace')[-1000:]}")


def _log_top(label: str, top: dict[str, Any]) -> None:
    log(f"  profile {label}: {top['samples']} samples; own time by frame:")
    for f in top["own"]:
        log(f"    {f['pct']:>5.1f} %  {f['function']:<44} {f['where']}")
    log("    by package: " + ", ".join(f"{p['package']} {p['pct']} %" for p in top["own_by_package"]))
    for a in top["by_area"]:
        log(f"    {a['pct']:>5.1f} %  {a['area']}")


def _profile(
    server: Server, rgw: Rgw, opts: argparse.Namespace, targets: dict[str, Target], errors: list[str]
) -> dict[str, Any]:
    pid = storage.app_pids(server)[0]
    target = targets["pockity"]
    client = target.client()
    body = os.urandom(opts.s3_kib * 1024)
    n, conc = opts.s3_count, opts.s3_concurrency
    out_dir = Path(opts.s3_profile_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {"rate_hz": opts.s3_profile_rate, "py_spy": "record --nonblocking", "dir": str(out_dir)}
    if "small" in opts.s3_parts:
        run = _prepare_small(target, client, "profile", n, body)
        for op, reqs, size in (("put", run.puts, None), ("get", run.gets, len(body))):
            path = out_dir / f"s3-{op}.speedscope.json"
            storage.settle(server, rgw)
            with sampled(pid, path, opts.s3_profile_rate):
                result = asyncio.run(replay(target.endpoint, reqs, conc, size))
            if result.failures:
                errors += [f"profile {op}: {f}" for f in result.failures[:5]]
            top = top_frames(json.loads(path.read_text()))
            found[op] = {"file": path.name, "rps_while_sampled": round(n / result.seconds, 1), **top}
            _log_top(f"{op} ({found[op]['rps_while_sampled']} req/s while sampled)", top)
        _delete_all(client, target.bucket, run.keys, errors)
    if "big" in opts.s3_parts and opts.s3_big_mib > 0:
        mib = min(opts.s3_big_mib, PROFILE_BIG_MIB)
        workdir = Path(tempfile.mkdtemp(prefix="pockity-bench-s3-"))
        try:
            big = _big_file(workdir, mib)
            path = out_dir / "s3-big.speedscope.json"
            key = f"s3bench/big/profile-{uuid.uuid4().hex[:6]}.bin"
            storage.settle(server, rgw)
            with sampled(pid, path, opts.s3_profile_rate):
                t0 = time.perf_counter()
                client.upload_file(str(big), target.bucket, key)
                seconds = time.perf_counter() - t0
            client.delete_object(Bucket=target.bucket, Key=key)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        top = top_frames(json.loads(path.read_text()))
        found["big"] = {"file": path.name, "mib": mib, "mb_s_while_sampled": storage._mb_s(mib * MIB, seconds), **top}
        _log_top(f"big upload_file {mib} MiB ({found['big']['mb_s_while_sampled']} MB/s while sampled)", top)
    return found


# ------------------------------------------------------------------------------------------ bench


def _setup_key(server: Server) -> tuple[storage.User, dict[str, str]]:
    user = storage._register(server, "s3")
    asyncio.run(storage._grant_big_tier(server.database_url, [user.user_id]))
    status, key = lib.http_json("POST", server.url("/api/apikeys"), {"name": "s3 bench"}, headers=user.auth)
    return user, lib.expect(status, key, 201, "create API key")


def bench_s3(server: Server, opts: argparse.Namespace, _wrk: str) -> tuple[dict[str, Any], list[str]]:
    rgw = storage.current_rgw()
    if rgw is None:
        raise BenchError("s3 benchmark run without its RGW (s3_environment)")
    errors: list[str] = []
    _, key = _setup_key(server)
    targets = _targets(server, key)
    log(f"  Pockity S3 API at {targets['pockity'].endpoint}, RGW at {targets['rgw'].endpoint} ({rgw.objstore})")
    entry: dict[str, Any] = {
        "rgw": {"objstore": rgw.objstore, "endpoint": rgw.endpoint, "version": rgw.version()},
    }
    parts = set(opts.s3_parts)
    if "small" in parts:
        entry["small"] = _small(server, rgw, opts, targets, errors)
    if "big" in parts and opts.s3_big_mib > 0:
        entry["big"] = _big(server, rgw, opts, targets, errors)
    if opts.s3_profile:
        entry["profile"] = _profile(server, rgw, opts, targets, errors)
    print_table(entry, server.workers)
    return entry, errors


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def print_table(entry: dict[str, Any], workers: int) -> None:
    print()
    print(f"s3 benchmark, {workers} worker(s), RGW {entry['rgw']['objstore']} ({entry['rgw']['version']})")
    small = entry.get("small")
    if small:
        print(f"\n{small['count']} x {small['size_kib']} KiB, {small['concurrency']} in flight, in order:")
        print(
            f"{'op':<5}{'target':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU ms':>12}{'RGW CPU ms':>12}"
            f"{'PG CPU ms':>11}{'busy':>7}"
        )
        for s in small["samples"]:
            print(
                f"{s['op']:<5}{s['who']:<9}{s['rps']:>9.1f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                f"{s['server_cpu_ms_per_req']:>12.3f}{s['rgw_cpu_ms_per_req']:>12.3f}"
                f"{s['postgres_cpu_ms_per_req']:>11.3f}{s['machine_busy'] or 0:>7.2f}"
            )
        print(
            "(CPU per request: srv = the Pockity server's processes, from /proc; PG = every PostgreSQL process on "
            "the machine, shared with other work, so noisy and even negative when a backend exits)"
        )
        for op in ("put", "get"):
            o = small[op]
            print(
                f"{op.upper()}: RGW {o['rgw_rps']} req/s, Pockity {o['pockity_rps']} req/s, ratio {o['ratio']} "
                f"(per round {o['ratio_per_round']}); target >= {SMALL_RATIO_TARGET}: {_verdict(o['pass'])}; "
                f"Pockity server CPU {o['server_cpu_ms_per_req']} ms/req"
            )
    big = entry.get("big")
    if big:
        for client_name in big.get("clients", []):
            b = big.get(client_name)
            if not b:
                continue
            print(f"\n{big['size_mib']} MiB upload, {b['what']}, in order:")
            print(
                f"{'target':<9}{'MB/s':>8}{'s':>8}{'client CPU s':>14}{'server CPU s':>14}{'RGW CPU s':>11}"
                f"{'RSS before':>12}{'peak':>8}{'+idle':>8}"
            )
            for s in b["samples"]:
                rss = s["rss"]
                print(
                    f"{s['who']:<9}{s['mb_s']:>8.1f}{s['seconds']:>8.1f}{s['client_cpu_s']:>14.1f}"
                    f"{s['server_cpu_s']:>14.1f}{s['rgw_cpu_s']:>11.1f}"
                    + (
                        f"{rss['rss_before_mib']:>12.1f}{rss['peak_mib']:>8.1f}{s['rss_above_idle_mib']:>8.1f}"
                        if rss
                        else f"{'-':>12}{'-':>8}{'-':>8}"
                    )
                )
            t = b["targets"]
            print(
                f"RGW {b['rgw_mb_s']} MB/s, Pockity {b['pockity_mb_s']} MB/s, ratio {b['ratio']}; target >= "
                f"{BIG_RATIO_TARGET}: {_verdict(t['ratio_pass'])}; server peak RSS {b['server_peak_rss_mib']} MiB, "
                f"+{b['server_rss_above_idle_mib']} MiB above idle (target <= {RSS_ABOVE_IDLE_TARGET_MIB}): "
                f"{_verdict(t['rss_pass'])}; server CPU {b['server_cpu_ms_per_mib']} ms/MiB"
            )
    print(flush=True)
