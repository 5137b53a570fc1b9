"""Shared benchmark plumbing: a throwaway database, the real server, a tiny HTTP client, wrk runs.

Every benchmark in bench/run.py gets a running `Server` and drives it with `run_wrk`; add new ones there.
Nothing here imports pockity: the server is started as a separate process, exactly as in production.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
RESULTS_DIR = ROOT / "bench" / "results"
ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
)


class BenchError(RuntimeError):
    """The benchmark itself failed (errors, non-2xx, server down): its figures are worthless."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- tools


def ensure_wrk() -> str:
    """Path of wrk, installing the Debian package on a fresh (root) CI machine."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed; run `apt-get install -y wrk` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log("wrk not found; installing it with apt-get")
    if subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, check=True)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get reported success but wrk is still not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).splitlines()[0].strip() if (out.stdout + out.stderr) else "unknown"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_info(wrk: str | None = None) -> dict[str, Any]:
    from importlib import metadata

    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in (
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "sqlalchemy",
        "asyncpg",
        "pydantic",
        "aiobotocore",
        "botocore",
        "aiohttp",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )
    return {
        "hostname": platform.node(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": packages,
        "wrk": wrk_version(wrk) if wrk else None,
        "git_commit": commit or None,
        "git_dirty": dirty,
    }


def utc_now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------ database


async def _admin_sql(sql: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def throwaway_database(prefix: str = "pockity_bench") -> Iterator[str]:
    """CREATE DATABASE <prefix>_<random>; yields its postgresql:// URL; always DROP ... WITH (FORCE)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise BenchError(
            f"cannot create a database at {ADMIN_URL} ({type(exc).__name__}: {exc}); "
            "start PostgreSQL (scripts/ensure-postgres) or set BENCH_POSTGRES_URL"
        ) from exc
    log(f"created database {name}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        try:
            asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            log(f"dropped database {name}")
        except Exception as exc:
            log(f"WARNING: could not drop database {name}: {exc}")


def database_sessions(database_url: str) -> int | None:
    """Sessions ever opened on this database (pg_stat_database.sessions, PostgreSQL 14+): pool churn shows here."""
    name = database_url.rsplit("/", 1)[1]
    try:
        value = asyncio.run(_admin_sql(f"SELECT sessions FROM pg_stat_database WHERE datname = '{name}'"))
    except Exception:
        return None
    return int(value) if value is not None else None


def machine_busy() -> tuple[int, int]:
    """(total, idle) jiffies from /proc/stat, to tell how loaded the machine was during a run."""
    with contextlib.suppress(OSError, ValueError):
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(values), values[3] + values[4]
    return 0, 0


def postgres_version() -> str:
    try:
        return str(asyncio.run(_admin_sql("SHOW server_version")))
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


# -------------------------------------------------------------------------------------------- server


@dataclass
class Server:
    """`pockity serve` as a child process in its own session (so its workers can be stopped with it)."""

    database_url: str
    workers: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "server.log"

    def start(self, ready_timeout: float = 90.0) -> None:
        self.port = self.port or free_port()
        # A private working directory: no `.env` from the checkout leaks in, nothing is written to var/.
        self.workdir = Path(tempfile.mkdtemp(prefix="pockity-bench-"))
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "ENVIRONMENT": "production",
            # The benchmarks make their users by the API and use them at once (no inbox to verify from).
            "REQUIRE_EMAIL_VERIFICATION": "false",
            "JWT_SECRET": secrets.token_urlsafe(48),
            "KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "BCRYPT_ROUNDS": "12",
            "LOG_LEVEL": "WARNING",
            "DATA_DIR": str(self.workdir / "data"),
            # The limiter runs on every request but refuses nothing: these benchmarks load one tenant on
            # purpose (bench/fairness.py sets its own limits).
            "RATE_LIMIT_REQUESTS_PER_SECOND": "1000000",
            "RATE_LIMIT_BURST": "100000000",
            "RATE_LIMIT_CONCURRENT_UPLOADS": "100000",
            "S3_API_PORT": "0",  # one listener per benchmark server (several may run at once)
            **self.extra_env,
        }
        for var in ("ADMIN_EMAIL", "ADMIN_PASSWORD", "PROMETHEUS_MULTIPROC_DIR"):
            if var not in self.extra_env:
                self.env.pop(var, None)
        cmd = [
            str(VENV_BIN / "pockity"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        log(f"starting: {' '.join(cmd)}  (log: {self.log_path})")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode} before it was ready\n{self.log_tail()}")
            try:
                status, _ = http_json("GET", self.url("/api/open/health"), timeout=2)
                if status == 200:
                    # With several workers, give the others a moment to finish their startup too.
                    if self.workers > 1:
                        self._wait_all_workers(deadline)
                    log(f"server ready on {self.base_url} ({self.workers} worker(s))")
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise BenchError(f"server not ready after {timeout:.0f}s ({last})\n{self.log_tail()}")

    def _wait_all_workers(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if len(self.worker_pids()) >= self.workers:
                break
            time.sleep(0.25)
        # The workers run their startup in parallel; the first answer came from one of them, so let the
        # others finish theirs before load starts.
        for _ in range(4 * self.workers):
            http_json("GET", self.url("/api/open/health"), timeout=5)
        time.sleep(2.0)

    def worker_pids(self) -> list[int]:
        """Processes in the server's session other than the supervisor (uvicorn workers)."""
        if self.proc is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.proc.pid:
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[3]) == self.proc.pid:  # session id
                    pids.append(int(entry.name))
        return sorted(pids)

    def cpu_seconds(self) -> float:
        """User+system CPU consumed so far by the supervisor and its workers (all their threads)."""
        if self.proc is None:
            return 0.0
        total = 0
        for pid in [self.proc.pid, *self.worker_pids()]:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "---- server log (tail) ----\n" + "\n".join(text[-lines:])

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the supervisor (it stops its workers), then SIGKILL the whole session if needed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the server leads its own process group
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log("server did not stop on SIGTERM; killing it")
        # Whatever is left of this server's group (a stuck worker, or the supervisor itself): kill it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        log(f"server stopped (exit {proc.returncode})")
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------- HTTP setup


def http_json(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """One request with the standard library (setup only; load comes from wrk). Returns (status, json)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={**(headers or {})})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def expect(status: int, payload: Any, want: int, what: str) -> Any:
    if status != want:
        raise BenchError(f"{what}: expected HTTP {want}, got {status}: {payload}")
    return payload


# ----------------------------------------------------------------------------------------------- wrk


@dataclass
class WrkRequest:
    """What each wrk connection sends."""

    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    # Extra Lua, e.g. a `request()` that varies the path (`wrk.format(nil, path)` keeps the method and
    # headers above). `thread_index` (1, 2, ...) is set in each wrk thread, for seeding math.random.
    lua: str | None = None


@dataclass
class WrkResult:
    label: str
    requests: int
    duration_s: float
    rps: float
    latency_mean_ms: float
    latency_max_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non2xx: int
    status_errors: int  # wrk's own count of responses with status > 399
    socket_errors: dict[str, int]
    first_bad_status: int | None
    # Filled in by run_wrk when given a server: noise-resistant figures beside the throughput.
    server_cpu_ms_per_req: float | None = None
    server_cpu_cores: float | None = None
    machine_busy: float | None = None
    new_db_sessions: int | None = None
    loadavg_1m: float | None = None

    @property
    def error_count(self) -> int:
        # status_errors (wrk: status > 399) is a subset of non2xx; max() in case the Lua count ever misses some.
        return max(self.non2xx, self.status_errors) + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lua_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


_LUA_REPORT = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

function init(args)
  non2xx = 0
  first_bad = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == 0 then first_bad = status end
  end
end

function done(summary, latency, requests)
  local bad, first = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
    local f = t:get("first_bad") or 0
    if first == 0 and f ~= 0 then first = f end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"first_bad_status":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, bad, first,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def wrk_script(request: WrkRequest) -> str:
    lines = [f"wrk.method = {lua_string(request.method)}"]
    for name, value in request.headers.items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    if request.body is not None:
        lines.append(f"wrk.body = {lua_string(request.body)}")
    if request.lua:
        lines.append(request.lua)
    return "\n".join(lines) + "\n" + _LUA_REPORT


def run_wrk(
    wrk: str,
    base_url: str,
    request: WrkRequest,
    *,
    label: str,
    duration: float,
    connections: int = 64,
    threads: int = 2,
    timeout: float = 5.0,
    server: Server | None = None,
) -> WrkResult:
    """Run wrk once and parse the line our Lua `done` prints (no scraping of wrk's human output).

    With `server`, also record the server's CPU per request (far steadier than req/s on a shared machine),
    how busy the whole machine was, and how many new database sessions the pool opened meanwhile.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-", delete=False) as f:
        f.write(wrk_script(request))
        script = f.name
    try:
        cmd = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={max(1, round(timeout))}s",
            "-s",
            script,
            base_url + request.path,
        ]
        sessions0 = database_sessions(server.database_url) if server else None
        cpu0, busy0 = (server.cpu_seconds() if server else 0.0), machine_busy()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=duration + timeout + 60)
        cpu1, busy1 = (server.cpu_seconds() if server else 0.0), machine_busy()
        sessions1 = database_sessions(server.database_url) if server else None
    finally:
        os.unlink(script)
    if out.returncode != 0:
        raise BenchError(f"wrk failed ({out.returncode}) for {label}:\n{out.stdout}\n{out.stderr}")
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise BenchError(f"wrk printed no result for {label}:\n{out.stdout}\n{out.stderr}")
    data = json.loads(line.removeprefix("WRK_RESULT "))
    lat = data["latency_us"]
    errors = data["errors"]
    seconds = data["duration_us"] / 1e6
    total_jiffies = busy1[0] - busy0[0]
    return WrkResult(
        label=label,
        requests=data["requests"],
        duration_s=round(seconds, 3),
        rps=round(data["requests"] / seconds, 1) if seconds else 0.0,
        latency_mean_ms=round(lat["mean"] / 1000, 2),
        latency_max_ms=round(lat["max"] / 1000, 2),
        p50_ms=round(lat["p50"] / 1000, 2),
        p90_ms=round(lat["p90"] / 1000, 2),
        p99_ms=round(lat["p99"] / 1000, 2),
        non2xx=data["non2xx"],
        status_errors=errors["status"],
        socket_errors={k: errors[k] for k in ("connect", "read", "write", "timeout")},
        first_bad_status=data["first_bad_status"] or None,
        server_cpu_ms_per_req=round(1000 * (cpu1 - cpu0) / data["requests"], 3)
        if server and data["requests"]
        else None,
        server_cpu_cores=round((cpu1 - cpu0) / seconds, 2) if server and seconds else None,
        machine_busy=round(1 - (busy1[1] - busy0[1]) / total_jiffies, 3) if total_jiffies > 0 else None,
        new_db_sessions=sessions1 - sessions0 if sessions0 is not None and sessions1 is not None else None,
        loadavg_1m=round(os.getloadavg()[0], 2),
    )


def describe_errors(result: WrkResult) -> str:
    parts = []
    if result.non2xx:
        parts.append(f"{result.non2xx} non-2xx (first: HTTP {result.first_bad_status})")
    parts += [f"{n} {kind} errors" for kind, n in result.socket_errors.items() if n]
    return ", ".join(parts) or "no errors"


# -------------------------------------------------------------------------------------------- output


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


_ENTRY_METADATA = {"date", "machine", "workers", "duration_s", "part_dates"}


def write_results(name: str, key: str, entry: dict[str, Any]) -> Path:
    """Merge `entry` into bench/results/<name>.json under runs[key] (one entry per configuration)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    doc: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), dict):
        doc = {}
    runs = doc.get("runs", {})
    # A run of some parts (e.g. `--storage-parts small`) keeps the other parts' earlier figures; `part_dates`
    # says when each part was last measured, so figures from different runs are never mistaken for one run.
    previous = runs.get(key) if isinstance(runs.get(key), dict) else {}
    dates = dict(previous.get("part_dates") or {})
    for part in entry:
        if part not in _ENTRY_METADATA:
            dates[part] = entry.get("date", utc_now_iso())
    runs[key] = {**previous, **entry, "part_dates": dates}
    doc = {"benchmark": name, "updated": entry.get("date", utc_now_iso()), "latest": key, "runs": runs}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path
