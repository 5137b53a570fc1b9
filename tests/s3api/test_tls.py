"""`pockity serve --workers 2` with its S3 listener over TLS (S3_API_TLS_CERT/S3_API_TLS_KEY from a throwaway
trustme CA; the REST listener stays plain HTTP): boto3 and rclone over HTTPS, where boto3 streams its bodies as
aws-chunked with a CRC32 trailer, a path plain HTTP never takes. aws-cli over TLS: test_awscli.py; the listener
itself: tests/test_serving.py."""

from __future__ import annotations

import asyncio
import base64
import io
import ssl
import subprocess
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import ClientError

from tests.fixtures.users import make_key, make_user
from tests.s3api.test_clients import boto3_client
from tests.s3api.test_tools import rclone_env, run_tool


async def _tenant(base: str, tag: str) -> tuple[dict[str, str], dict[str, str]]:
    """(the user's REST headers, a key pair)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        user = await make_user(http, tag)
        return user.headers, await make_key(http, user)


async def test_boto3_over_https_streams_crc32_trailers_and_the_rest_api_agrees(
    served_tls: tuple[str, str, Path],
) -> None:
    base, endpoint, ca = served_tls
    headers, key = await _tenant(base, "tlsboto")
    s3: Any = boto3_client(endpoint, key, verify=str(ca))
    sent: list[dict[str, str]] = []

    def record(request: AWSPreparedRequest, **_: object) -> None:
        if request.method == "PUT":
            sent.append({k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()})

    s3.meta.events.register("before-send.s3.*", record)
    small, big = b"hello over tls", bytes(range(256)) * (12 * 1024)  # 3 MiB: s3transfer's single PutObject

    def work() -> dict[str, object]:
        s3.put_object(Bucket="pockity", Key="tls/small.txt", Body=small)
        s3.upload_fileobj(io.BytesIO(big), "pockity", "tls/big.bin")
        head = s3.head_object(Bucket="pockity", Key="tls/big.bin")
        back = s3.get_object(Bucket="pockity", Key="tls/big.bin")["Body"].read()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="pockity", Prefix="tls/")["Contents"]]
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "pockity", "Key": "tls/small.txt"})
        return {"size": head["ContentLength"], "back": back, "keys": keys, "url": url}

    out = await asyncio.to_thread(work)
    s3.close()
    # What made this path worth testing: no Content-Length, the body aws-chunked, its CRC32 after the last chunk.
    assert [h.get("x-amz-content-sha256") for h in sent] == ["STREAMING-UNSIGNED-PAYLOAD-TRAILER"] * 2
    assert [h.get("x-amz-trailer") for h in sent] == ["x-amz-checksum-crc32"] * 2
    assert [h.get("x-amz-decoded-content-length") for h in sent] == [str(len(small)), str(len(big))]
    assert (out["size"], out["back"], out["keys"]) == (len(big), big, ["tls/big.bin", "tls/small.txt"])
    async with httpx.AsyncClient(base_url=base, timeout=30, verify=ssl.create_default_context(cafile=ca)) as http:
        presigned = await http.get(str(out["url"]))
        assert (presigned.status_code, presigned.content) == (200, small)
        listing = (await http.get("/api/storage/files", headers=headers)).json()
        assert sorted((i["key"], i["size"]) for i in listing["items"]) == [
            ("tls/big.bin", len(big)),
            ("tls/small.txt", len(small)),
        ]
        usage = (await http.get("/api/storage/usage", headers=headers)).json()
        assert (usage["bytesUsed"], usage["objectCount"], usage["bytesReserved"]) == (len(big) + len(small), 2, 0)
        stored = await http.get("/api/storage/files/tls/small.txt/content", headers=headers)
        assert stored.content == small


async def test_a_wrong_crc32_trailer_over_https_stores_nothing(served_tls: tuple[str, str, Path]) -> None:
    base, endpoint, ca = served_tls
    headers, key = await _tenant(base, "tlsbad")
    s3: Any = boto3_client(endpoint, key, verify=str(ca))

    corrupted: list[bytes] = []  # botocore retries a BadDigest: every attempt sends the same wrong trailer

    def corrupt_trailer(request: AWSPreparedRequest, **_: object) -> None:
        if not corrupted:
            assert request.body is not None and hasattr(request.body, "read")
            chunked = request.body.read()
            good = f"x-amz-checksum-crc32:{_b64_crc32(b'payload')}".encode()
            assert good in chunked, chunked  # the trailer botocore wrote, replaced by one for other bytes
            corrupted.append(chunked.replace(good, f"x-amz-checksum-crc32:{_b64_crc32(b'other')}".encode()))
        request.body = io.BytesIO(corrupted[0])

    s3.meta.events.register("before-send.s3.PutObject", corrupt_trailer)
    with pytest.raises(ClientError) as err:
        await asyncio.to_thread(s3.put_object, Bucket="pockity", Key="bad.txt", Body=b"payload")
    s3.close()
    assert err.value.response["Error"]["Code"] == "BadDigest"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        assert (await http.get("/api/storage/files", headers=headers)).json()["items"] == []


def _b64_crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def test_rclone_over_https_with_the_ca(served_tls: tuple[str, str, Path], tmp_path: Path) -> None:
    base, endpoint, ca = served_tls
    headers, key = await _tenant(base, "tlsrclone")
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a b.txt").write_text("alpha over tls")
    (src / "c.bin").write_bytes(bytes(range(256)) * 40)
    env = rclone_env(key, endpoint)
    rclone = ["rclone", "--ca-cert", str(ca), "--retries", "1", "--low-level-retries", "1"]
    run_tool([*rclone, "copy", str(src), "p:pockity/backup"], env)
    assert run_tool([*rclone, "cat", "p:pockity/backup/docs/a b.txt"], env) == "alpha over tls"
    run_tool([*rclone, "check", str(src), "p:pockity/backup"], env)  # sizes and MD5s (the ETags) agree
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        listing = (await http.get("/api/storage/files", headers=headers)).json()
        assert sorted((i["key"], i["size"]) for i in listing["items"]) == [
            ("backup/c.bin", 10240),
            ("backup/docs/a b.txt", 14),
        ]
    untrusting = subprocess.run(  # without the CA: the certificate is not one rclone can trust
        ["rclone", "--retries", "1", "--low-level-retries", "1", "ls", "p:pockity"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert untrusting.returncode != 0 and "certificate" in untrusting.stderr, untrusting.stderr
    run_tool([*rclone, "delete", "p:pockity/backup"], env)
    assert run_tool([*rclone, "ls", "p:pockity"], env) == ""
