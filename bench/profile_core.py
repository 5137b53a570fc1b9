"""Profile one `core` endpoint under load: py-spy samples the server while wrk drives it.

    .venv/bin/python bench/profile_core.py metadata [--seconds 10] [--top 25]

Uses the RGW of `scripts/s3-test-server` when TEST_S3_DIR names one (its env file), otherwise the local-disk
backend. Prints the frames with the most own and total time and own time by package (pockity.<module> for our
code). Needs py-spy in .venv (`.venv/bin/pip install py-spy`); a tool for the one profiling, not a benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import core
import lib
import s3
from lib import Server, WrkRequest


def _requests(ctx: dict[str, object]) -> dict[str, WrkRequest]:
    key = ctx["key"]
    jwt = ctx["jwt"]
    assert isinstance(key, dict) and isinstance(jwt, dict)
    return {
        "health": WrkRequest("/api/open/health"),
        "me_key": WrkRequest("/api/auth/me", headers=key),
        "metadata": WrkRequest("/api/storage/files/report.pdf", headers=key, lua=core._metadata_lua()),
        "usage": WrkRequest("/api/storage/usage", headers=key),
        "keys": WrkRequest("/api/apikeys", headers=jwt),
        "download": WrkRequest("/api/storage/files/report.pdf?download=1", headers=key),
        "list": WrkRequest("/api/storage/files?limit=100", headers=key),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--connections", type=int, default=64)
    opts = parser.parse_args()
    env: dict[str, str] = {}
    s3_dir = os.environ.get("TEST_S3_DIR")
    if s3_dir:
        for line in (Path(s3_dir) / "env").read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'\"")
        env = {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": f"pockity-prof-{uuid.uuid4().hex[:8]}",
            "S3_ENDPOINT_URL": env["S3_ENDPOINT_URL"],
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": env.get("AWS_REGION", "us-east-1"),
        }
    wrk = lib.ensure_wrk()
    with lib.throwaway_database("pockity_prof") as url, Server(url, extra_env=env) as server:
        ctx = core._setup(server)
        request = _requests(ctx)[opts.endpoint]
        lib.run_wrk(wrk, server.base_url, request, label="warmup", duration=2, server=server)
        out = Path(tempfile.mkdtemp(prefix="pockity-prof-")) / "profile.json"
        assert server.proc is not None
        pid = (server.worker_pids() or [server.proc.pid])[0]  # one worker: the server process itself
        with s3.sampled(pid, out, opts.rate):
            result = lib.run_wrk(
                wrk,
                server.base_url,
                request,
                label=opts.endpoint,
                duration=opts.seconds,
                connections=opts.connections,
                server=server,
            )
        summary = s3.top_frames(json.loads(out.read_text()), opts.top)
        print(json.dumps({"wrk": result.as_dict(), "profile": summary}, indent=1))
        print(f"speedscope: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
