"""aws-cli (PyPI's, in var/awscli-venv: scripts/ensure-s3-tools) against `pockity serve`'s S3 listener on RGW,
over plain HTTP and over TLS (there aws-cli streams aws-chunked bodies with CRC32 trailers): cp, sync, ls, rm
--recursive, presign, s3api head-object and a 100 MiB multipart cp, each checked against the bytes and against
what the REST API lists and counts. aws-cli is configured by files in the test's own folder, never ~/.aws."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.s3 import REPO
from tests.fixtures.s3api import without_aws_env
from tests.fixtures.storage import MIB
from tests.fixtures.users import TestUser, make_key, make_user

AWS = Path(os.environ.get("AWSCLI_VENV", REPO / "var" / "awscli-venv")) / "bin" / "aws"


@dataclass(frozen=True)
class Listener:
    base: str  # the REST API (plain HTTP)
    endpoint: str  # the S3 API
    ca: Path | None  # the CA to trust when the S3 API is HTTPS

    def http(self) -> httpx.AsyncClient:
        verify = ssl.create_default_context(cafile=self.ca) if self.ca else True
        return httpx.AsyncClient(base_url=self.base, timeout=30, verify=verify)


@pytest.fixture(params=["http", "https"])
def listener(request: pytest.FixtureRequest) -> Listener:
    if request.param == "http":
        base, endpoint = request.getfixturevalue("served")
        return Listener(base, endpoint, None)
    base, endpoint, ca = request.getfixturevalue("served_tls")
    return Listener(base, endpoint, ca)


@dataclass(frozen=True)
class AwsCli:
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert AWS.exists(), f"{AWS} is missing: scripts/ensure-s3-tools installs it (make test runs it)"
        return subprocess.run([str(AWS), *args], env=self.env, capture_output=True, text=True, timeout=300, check=False)

    def __call__(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"aws {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}"
        return done.stdout


def aws_cli(folder: Path, listener: Listener, key: dict[str, str]) -> AwsCli:
    """aws-cli as a tenant would configure it: a profile with endpoint_url, path-style, the key pair."""
    (folder / "config").write_text(
        "[default]\nregion = us-east-1\n"
        f"endpoint_url = {listener.endpoint}\n"
        "retry_mode = standard\nmax_attempts = 1\n"  # no retry hides a failure
        "s3 =\n  addressing_style = path\n"
    )
    (folder / "credentials").write_text(
        f"[default]\naws_access_key_id = {key['accessKeyId']}\naws_secret_access_key = {key['secretKey']}\n"
    )
    env = without_aws_env(
        AWS_CONFIG_FILE=str(folder / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(folder / "credentials"),
        HOME=str(folder),  # nothing read from or cached in the user's home
    )
    if listener.ca:
        env["AWS_CA_BUNDLE"] = str(listener.ca)
    return AwsCli(env)


async def _tenant(listener: Listener, tag: str) -> tuple[TestUser, dict[str, str]]:
    async with listener.http() as http:
        user = await make_user(http, tag)
        return user, await make_key(http, user)


async def _stored(listener: Listener, user: TestUser) -> tuple[dict[str, int], dict[str, int]]:
    """({key: size} as the REST API lists them, its usage)."""
    async with listener.http() as http:
        listing = (await http.get("/api/storage/files", headers=user.headers, params={"limit": 100})).json()
        usage = (await http.get("/api/storage/usage", headers=user.headers)).json()
    return {i["key"]: i["size"] for i in listing["items"]}, usage


def _transfers(output: str, verb: str) -> list[str]:
    """The keys in aws s3's `upload: x to s3://pockity/KEY` / `delete: s3://pockity/KEY` lines."""
    return sorted(line.rsplit("s3://pockity/", 1)[1] for line in output.splitlines() if line.startswith(f"{verb}:"))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def test_cp_sync_ls_head_presign_and_rm(listener: Listener, tmp_path: Path) -> None:
    user, key = await _tenant(listener, "awscli")
    aws = aws_cli(tmp_path, listener, key)
    tree = tmp_path / "site"
    (tree / "css").mkdir(parents=True)
    (tree / "img").mkdir()
    (tree / "docs").mkdir()
    (tree / "index.html").write_bytes(b"<h1>pockity</h1>")
    (tree / "css" / "site.css").write_bytes(b"body { margin: 0 }")
    (tree / "img" / "logo.bin").write_bytes(os.urandom(300 * 1024))
    (tree / "docs" / "a b.txt").write_bytes("ünïcode & spaces".encode())

    # cp up and down; --debug shows what aws-cli sent: over HTTPS, the body streamed with a CRC32 trailer
    debug = aws.run("s3", "cp", str(tree / "index.html"), "s3://pockity/one/index.html", "--debug")
    assert debug.returncode == 0, debug.stderr[-3000:]
    trailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER" in debug.stderr
    assert trailer == (listener.ca is not None)
    assert "x-amz-checksum-crc32" in debug.stderr  # as a trailer over HTTPS, as a header over HTTP
    aws("s3", "cp", "s3://pockity/one/index.html", str(tmp_path / "index.back"))
    assert (tmp_path / "index.back").read_bytes() == b"<h1>pockity</h1>"

    # sync a tree up; then change one file: only that one goes
    first = aws("s3", "sync", str(tree), "s3://pockity/site/")
    assert _transfers(first, "upload") == [
        "site/css/site.css",
        "site/docs/a b.txt",
        "site/img/logo.bin",
        "site/index.html",
    ]
    (tree / "css" / "site.css").write_bytes(b"body { margin: 0; padding: 1em }")
    second = aws("s3", "sync", str(tree), "s3://pockity/site/")
    assert _transfers(second, "upload") == ["site/css/site.css"], second
    aws("s3", "sync", "s3://pockity/site/", str(tmp_path / "down"))
    assert _tree(tmp_path / "down") == _tree(tree)

    # ls: recursive, and one level of a prefix
    recursive = aws("s3", "ls", "s3://pockity/", "--recursive")
    listed = {line.split(None, 3)[3]: int(line.split(None, 3)[2]) for line in recursive.splitlines()}
    local = {f"site/{name}": len(data) for name, data in _tree(tree).items()}
    assert listed == {**local, "one/index.html": 16}
    level = aws("s3", "ls", "s3://pockity/site/")
    assert sorted(line.split()[-1] for line in level.splitlines()) == ["css/", "docs/", "img/", "index.html"]
    assert [line.split()[1] for line in level.splitlines() if "PRE" in line] == ["css/", "docs/", "img/"]

    # the REST API sees the same files, sizes and usage
    stored, usage = await _stored(listener, user)
    assert stored == listed
    assert (usage["bytesUsed"], usage["objectCount"], usage["bytesReserved"]) == (sum(listed.values()), 5, 0)
    async with listener.http() as http:
        css = await http.get("/api/storage/files/site/css/site.css/content", headers=user.headers)
        assert css.content == b"body { margin: 0; padding: 1em }"

    # s3api head-object: size and ETag (the MD5 of a single-part upload)
    head = json.loads(aws("s3api", "head-object", "--bucket", "pockity", "--key", "site/img/logo.bin"))
    logo = (tree / "img" / "logo.bin").read_bytes()
    assert (head["ContentLength"], head["ETag"]) == (len(logo), f'"{hashlib.md5(logo).hexdigest()}"')

    # presign, then fetch the URL without any credentials
    url = aws("s3", "presign", "s3://pockity/site/docs/a b.txt", "--expires-in", "300").strip()
    async with listener.http() as http:
        fetched = await http.get(url)
    assert (fetched.status_code, fetched.content) == (200, "ünïcode & spaces".encode())

    # rm --recursive: everything under the prefix, nothing else
    removed = aws("s3", "rm", "s3://pockity/site/", "--recursive")
    assert _transfers(removed, "delete") == sorted(local)
    stored, usage = await _stored(listener, user)
    assert stored == {"one/index.html": 16}
    assert (usage["bytesUsed"], usage["objectCount"], usage["bytesReserved"]) == (16, 1, 0)


async def test_a_100_mib_file_goes_up_in_parts_and_comes_back_the_same(listener: Listener, tmp_path: Path) -> None:
    user, key = await _tenant(listener, "awsbig")
    aws = aws_cli(tmp_path, listener, key)
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(100):
            f.write(os.urandom(MIB))
    aws("s3", "cp", str(big), "s3://pockity/backups/big.bin")  # aws-cli: multipart above 8 MiB, 8 MiB parts
    head = json.loads(aws("s3api", "head-object", "--bucket", "pockity", "--key", "backups/big.bin"))
    assert head["ContentLength"] == 100 * MIB
    assert head["ETag"].endswith('-13"'), head  # 12 parts of 8 MiB and one of 4: the multipart ETag
    aws("s3", "cp", "s3://pockity/backups/big.bin", str(tmp_path / "back.bin"))
    assert _sha256(tmp_path / "back.bin") == _sha256(big)
    stored, usage = await _stored(listener, user)
    assert stored == {"backups/big.bin": 100 * MIB}
    assert (usage["bytesUsed"], usage["objectCount"], usage["bytesReserved"]) == (100 * MIB, 1, 0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()
