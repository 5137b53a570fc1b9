"""rclone and s3cmd (Debian packages, installed by scripts/ensure-s3-tools) against `pockity serve`'s S3 API."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx

from tests.fixtures.s3api import without_aws_env
from tests.fixtures.users import make_key, make_user


def run_tool(cmd: list[str], env: dict[str, str] | None = None) -> str:
    assert shutil.which(cmd[0]), f"{cmd[0]} is missing: scripts/ensure-s3-tools installs it (make test runs it)"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{cmd[0]} failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout


def rclone_env(key: dict[str, str], endpoint: str) -> dict[str, str]:
    """rclone's remote `p:` for this key pair, configured by environment variables (no config file)."""
    return without_aws_env(  # e.g. AWS_CA_BUNDLE: not for us
        RCLONE_CONFIG_P_TYPE="s3",
        RCLONE_CONFIG_P_PROVIDER="Other",
        RCLONE_CONFIG_P_ACCESS_KEY_ID=key["accessKeyId"],
        RCLONE_CONFIG_P_SECRET_ACCESS_KEY=key["secretKey"],
        RCLONE_CONFIG_P_ENDPOINT=endpoint,
        RCLONE_CONFIG_P_REGION="us-east-1",
    )


async def _key(base: str, tag: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        return await make_key(http, await make_user(http, tag))


async def test_rclone_copies_lists_reads_and_deletes(served: tuple[str, str], tmp_path: Path) -> None:
    base, endpoint = served
    key = await _key(base, "rclone")
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a b.txt").write_text("alpha")
    (src / "c.bin").write_bytes(b"\x00" * 3000)
    env = rclone_env(key, endpoint)
    run_tool(["rclone", "mkdir", "p:pockity"], env)
    run_tool(["rclone", "copy", str(src), "p:pockity/backup"], env)
    listed = run_tool(["rclone", "ls", "p:pockity/backup"], env)
    assert sorted(line.split(None, 1)[1] for line in listed.splitlines()) == ["c.bin", "docs/a b.txt"]
    assert run_tool(["rclone", "cat", "p:pockity/backup/docs/a b.txt"], env) == "alpha"
    run_tool(["rclone", "check", str(src), "p:pockity/backup"], env)
    run_tool(["rclone", "delete", "p:pockity/backup"], env)
    assert run_tool(["rclone", "ls", "p:pockity"], env) == ""


async def test_s3cmd_puts_lists_gets_and_deletes(served: tuple[str, str], tmp_path: Path) -> None:
    base, endpoint = served
    key = await _key(base, "s3cmd")
    host = endpoint.removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {key['accessKeyId']}\nsecret_key = {key['secretKey']}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\n"
        "bucket_location = us-east-1\n"
    )
    s3cmd = ["s3cmd", "--config", str(config), "--no-progress"]
    local = tmp_path / "hello.txt"
    local.write_text("hello s3cmd")
    run_tool([*s3cmd, "put", str(local), "s3://pockity/notes/hello.txt"])
    assert "s3://pockity/notes/hello.txt" in run_tool([*s3cmd, "ls", "--recursive", "s3://pockity/"])
    back = tmp_path / "back.txt"
    run_tool([*s3cmd, "get", "s3://pockity/notes/hello.txt", str(back)])
    assert back.read_text() == "hello s3cmd"
    run_tool([*s3cmd, "del", "s3://pockity/notes/hello.txt"])
    assert "hello.txt" not in run_tool([*s3cmd, "ls", "--recursive", "s3://pockity/"])
