"""Real S3 clients against `pockity serve`'s S3 listener (PostgreSQL, storage on Ceph RGW): boto3 sees its own
files, the REST API sees the same ones, and another tenant sees none of them."""

from __future__ import annotations

import asyncio
import io

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from fastapi import FastAPI

from tests.fixtures.s3 import S3Server
from tests.fixtures.server import free_port, running_server, server_env
from tests.fixtures.storage import MIB, set_quota
from tests.fixtures.users import TestUser, make_key, make_user


def boto3_client(endpoint: str, key: dict[str, str], *, verify: str | None = None, **config: object) -> object:
    """A client of the S3 listener at `endpoint` (`verify`: the CA file that signed an HTTPS listener's cert)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key["accessKeyId"],
        aws_secret_access_key=key["secretKey"],
        region_name="us-east-1",
        verify=verify,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),  # type: ignore[arg-type]
    )


async def _tenant(base: str, tag: str) -> tuple[TestUser, dict[str, str], httpx.AsyncClient]:
    http = httpx.AsyncClient(base_url=base, timeout=30)
    user = await make_user(http, tag)
    return user, await make_key(http, user), http


async def test_boto3_put_list_get_delete_and_the_rest_api_agree(served: tuple[str, str], app: FastAPI) -> None:
    base, endpoint = served
    user, key, http = await _tenant(base, "boto")
    s3 = boto3_client(endpoint, key)

    def work() -> dict[str, object]:
        s3.put_object(Bucket="pockity", Key="reports/q3 final.pdf", Body=b"%PDF-1.7 q3", ContentType="application/pdf")  # type: ignore[attr-defined]
        s3.upload_fileobj(io.BytesIO(b"z" * (3 * MIB)), "pockity", "big/three.bin")  # type: ignore[attr-defined]
        s3.copy_object(
            Bucket="pockity", Key="copies/q3.pdf", CopySource={"Bucket": "pockity", "Key": "reports/q3 final.pdf"}
        )  # type: ignore[attr-defined]
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="pockity", PaginationConfig={"PageSize": 1})  # type: ignore[attr-defined]
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        head = s3.head_object(Bucket="pockity", Key="big/three.bin")  # type: ignore[attr-defined]
        body = s3.get_object(Bucket="pockity", Key="reports/q3 final.pdf")["Body"].read()  # type: ignore[attr-defined]
        ranged = s3.get_object(Bucket="pockity", Key="big/three.bin", Range="bytes=0-9")["Body"].read()  # type: ignore[attr-defined]
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "pockity", "Key": "reports/q3 final.pdf"})  # type: ignore[attr-defined]
        return {"keys": keys, "size": head["ContentLength"], "body": body, "ranged": ranged, "url": url}

    out = await asyncio.to_thread(work)
    assert out["keys"] == ["big/three.bin", "copies/q3.pdf", "reports/q3 final.pdf"]
    assert (out["size"], out["body"], out["ranged"]) == (3 * MIB, b"%PDF-1.7 q3", b"z" * 10)
    presigned = await http.get(str(out["url"]))  # a V2 URL: boto3's default for us-east-1 on a custom endpoint
    assert (presigned.status_code, presigned.content) == (200, b"%PDF-1.7 q3")
    listing = await http.get("/api/storage/files", headers=user.headers)
    assert sorted(i["key"] for i in listing.json()["items"]) == [
        "big/three.bin",
        "copies/q3.pdf",
        "reports/q3 final.pdf",
    ]
    usage = (await http.get("/api/storage/usage", headers=user.headers)).json()
    assert (usage["bytesUsed"], usage["objectCount"], usage["bytesReserved"]) == (3 * MIB + 22, 3, 0)
    copied = await http.get("/api/storage/files/copies/q3.pdf/content", headers=user.headers)
    assert copied.content == b"%PDF-1.7 q3"

    def delete() -> list[str]:
        result = s3.delete_objects(  # type: ignore[attr-defined]
            Bucket="pockity",
            Delete={"Objects": [{"Key": "big/three.bin"}, {"Key": "copies/q3.pdf"}, {"Key": "reports/q3 final.pdf"}]},
        )
        return sorted(d["Key"] for d in result["Deleted"])

    assert await asyncio.to_thread(delete) == ["big/three.bin", "copies/q3.pdf", "reports/q3 final.pdf"]
    usage = (await http.get("/api/storage/usage", headers=user.headers)).json()
    assert (usage["bytesUsed"], usage["objectCount"]) == (0, 0)
    await http.aclose()


async def test_another_tenant_sees_nothing_and_quotas_hold(served: tuple[str, str], app: FastAPI) -> None:
    base, endpoint = served
    owner, owner_key, http = await _tenant(base, "owner")
    _, other_key, _ = await _tenant(base, "other")
    await set_quota(app, owner.id, storage_bytes=100)
    mine, theirs = boto3_client(endpoint, owner_key), boto3_client(endpoint, other_key)

    def work() -> tuple[list[str], str, str]:
        mine.put_object(Bucket="pockity", Key="private.txt", Body=b"x" * 60)  # type: ignore[attr-defined]
        listed = theirs.list_objects_v2(Bucket="pockity").get("Contents", [])  # type: ignore[attr-defined]
        try:
            theirs.get_object(Bucket="pockity", Key="private.txt")  # type: ignore[attr-defined]
            missing = "found"
        except ClientError as exc:
            missing = exc.response["Error"]["Code"]
        over = []
        for _ in range(3):  # one connection: boto3 sends Expect: 100-continue, the refusal must close it cleanly
            try:
                mine.put_object(Bucket="pockity", Key="more.txt", Body=b"y" * 41)  # type: ignore[attr-defined]
                over.append("stored")
            except ClientError as exc:
                over.append(exc.response["Error"]["Code"])
        return [o["Key"] for o in listed], missing, over

    listed, missing, over = await asyncio.to_thread(work)
    assert (listed, missing, over) == ([], "NoSuchKey", ["QuotaExceeded"] * 3)
    await http.aclose()


async def test_boto3_lists_object_versions_as_null_latest_versions(served: tuple[str, str]) -> None:
    base, endpoint = served
    _, key, http = await _tenant(base, "versions")
    s3 = boto3_client(endpoint, key)

    def work() -> tuple[list[tuple[str, str, bool, int]], list[str]]:
        for name in ("v/a.txt", "v/b c.txt", "w.txt"):
            s3.put_object(Bucket="pockity", Key=name, Body=name.encode())  # type: ignore[attr-defined]
        pages = s3.get_paginator("list_object_versions").paginate(  # type: ignore[attr-defined]
            Bucket="pockity", PaginationConfig={"PageSize": 1}
        )
        versions = [
            (v["Key"], v["VersionId"], v["IsLatest"], v["Size"]) for page in pages for v in page.get("Versions", [])
        ]
        folded = s3.list_object_versions(Bucket="pockity", Delimiter="/")  # type: ignore[attr-defined]
        return versions, [p["Prefix"] for p in folded["CommonPrefixes"]] + [v["Key"] for v in folded["Versions"]]

    versions, folded = await asyncio.to_thread(work)
    assert versions == [("v/a.txt", "null", True, 7), ("v/b c.txt", "null", True, 9), ("w.txt", "null", True, 5)]
    assert folded == ["v/", "w.txt"]
    await http.aclose()


@pytest.mark.parametrize("version", ["s3v4", "s3"])
async def test_a_browser_post_form_from_boto3_uploads_through_the_listener(
    served: tuple[str, str], version: str
) -> None:
    base, endpoint = served
    user, key, http = await _tenant(base, "form")
    s3 = boto3_client(endpoint, key, signature_version=version)
    form = s3.generate_presigned_post(  # type: ignore[attr-defined]
        "pockity",
        "forms/${filename}",
        Fields={"success_action_status": "201", "Content-Type": "text/csv", "x-amz-meta-source": "form"},
        Conditions=[
            {"success_action_status": "201"},
            {"Content-Type": "text/csv"},
            {"x-amz-meta-source": "form"},
            ["content-length-range", 1, MIB],
        ],
        ExpiresIn=600,
    )
    data = b"a,b\n" * 50_000
    r = await http.post(form["url"], data=form["fields"], files={"file": ("table.csv", data, "text/csv")})
    assert r.status_code == 201, r.text
    big = await http.post(form["url"], data=form["fields"], files={"file": ("big.csv", b"x" * (MIB + 1), "text/csv")})
    assert big.status_code == 400 and b"EntityTooLarge" in big.content

    def read() -> tuple[bytes, str, dict[str, str]]:
        got = s3.get_object(Bucket="pockity", Key="forms/table.csv")  # type: ignore[attr-defined]
        return got["Body"].read(), got["ContentType"], got["Metadata"]

    assert await asyncio.to_thread(read) == (data, "text/csv", {"source": "form"})
    usage = (await http.get("/api/storage/usage", headers=user.headers)).json()
    assert (usage["bytesUsed"], usage["objectCount"], usage["bytesReserved"]) == (len(data), 1, 0)
    await http.aclose()


def test_a_wrong_secret_is_refused(served: tuple[str, str]) -> None:
    _, endpoint = served
    s3 = boto3_client(endpoint, {"accessKeyId": "PK" + "Q" * 18, "secretKey": "w" * 40})
    with pytest.raises(ClientError) as err:
        s3.list_objects_v2(Bucket="pockity")  # type: ignore[attr-defined]
    assert err.value.response["Error"]["Code"] == "InvalidAccessKeyId"


async def test_parallel_put_objects_on_two_servers_never_pass_the_quota(
    pg_url: str, s3_server: S3Server, s3_bucket: str, app: FastAPI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ports = [free_port(), free_port()]
    envs = [
        server_env(
            pg_url,
            tmp_path_factory.mktemp(f"race{i}"),
            STORAGE_BACKEND="s3",
            S3_BUCKET=s3_bucket,
            S3_ENDPOINT_URL=s3_server.endpoint_url,
            AWS_ACCESS_KEY_ID=s3_server.access_key,
            AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
            S3_API_PORT=str(port),
        )
        for i, port in enumerate(ports)
    ]
    with running_server(envs[0]) as base, running_server(envs[1]):
        user, key, http = await _tenant(base, "racer")
        await set_quota(app, user.id, storage_bytes=5 * MIB)
        clients = [boto3_client(f"http://127.0.0.1:{p}", key, max_pool_connections=20) for p in ports]

        def put(i: int) -> str:
            try:
                clients[i % 2].put_object(Bucket="pockity", Key=f"part-{i}.bin", Body=b"m" * MIB)  # type: ignore[attr-defined]
                return "stored"
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])

        outcomes = await asyncio.gather(*(asyncio.to_thread(put, i) for i in range(20)))
        usage = (await http.get("/api/storage/usage", headers=user.headers)).json()
        await http.aclose()
    assert sorted(outcomes) == ["QuotaExceeded"] * 15 + ["stored"] * 5, outcomes
    assert (usage["bytesUsed"], usage["objectCount"], usage["bytesReserved"]) == (5 * MIB, 5, 0)


async def test_boto3_multipart_upload_copy_and_download_on_rgw(served: tuple[str, str], app: FastAPI) -> None:
    """boto3's managed transfers: a 20 MiB upload goes up in parallel 8 MiB parts, a managed copy uses
    UploadPartCopy with ranges, and both come back byte for byte with their metadata."""
    base, endpoint = served
    user, key, http = await _tenant(base, "multipart")
    s3 = boto3_client(endpoint, key)
    data = bytes(range(251)) * (20 * MIB // 251)

    def work() -> dict[str, object]:
        s3.upload_fileobj(  # type: ignore[attr-defined]
            io.BytesIO(data),
            "pockity",
            "videos/big.bin",
            ExtraArgs={"Metadata": {"camera": "x100"}, "ContentType": "video/mp4"},
        )
        head = s3.head_object(Bucket="pockity", Key="videos/big.bin")  # type: ignore[attr-defined]
        part2 = s3.get_object(Bucket="pockity", Key="videos/big.bin", PartNumber=2)  # type: ignore[attr-defined]
        s3.copy({"Bucket": "pockity", "Key": "videos/big.bin"}, "pockity", "videos/copy.bin")  # type: ignore[attr-defined]
        down = io.BytesIO()
        s3.download_fileobj("pockity", "videos/copy.bin", down)  # type: ignore[attr-defined]
        created = s3.create_multipart_upload(Bucket="pockity", Key="videos/abandoned.bin")  # type: ignore[attr-defined]
        s3.upload_part(  # type: ignore[attr-defined]
            Bucket="pockity", Key="videos/abandoned.bin", UploadId=created["UploadId"], PartNumber=1, Body=b"p" * 100
        )
        listed = s3.list_multipart_uploads(Bucket="pockity")  # type: ignore[attr-defined]
        s3.abort_multipart_upload(Bucket="pockity", Key="videos/abandoned.bin", UploadId=created["UploadId"])  # type: ignore[attr-defined]
        after = s3.list_multipart_uploads(Bucket="pockity")  # type: ignore[attr-defined]
        return {
            "head": head,
            "part2": (part2["ContentLength"], part2["PartsCount"], part2["Body"].read()),
            "copy": down.getvalue(),
            "listed": [u["Key"] for u in listed.get("Uploads", [])],
            "after": after.get("Uploads", []),
        }

    out = await asyncio.to_thread(work)
    head = out["head"]
    assert isinstance(head, dict)
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')
    assert (head["Metadata"], head["ContentType"]) == ({"camera": "x100"}, "video/mp4")
    assert out["part2"] == (8 * MIB, 3, data[8 * MIB : 16 * MIB])
    assert out["copy"] == data
    assert (out["listed"], out["after"]) == (["videos/abandoned.bin"], [])
    rest = await http.get("/api/storage/files/videos/big.bin/content", headers=user.headers, follow_redirects=True)
    assert rest.status_code == 200 and rest.content == data
    usage = (await http.get("/api/storage/usage", headers=user.headers)).json()
    assert (usage["bytesUsed"], usage["objectCount"], usage["bytesReserved"]) == (2 * len(data), 2, 0)
    await http.aclose()


async def test_parallel_upload_parts_on_two_servers_never_pass_the_quota(
    pg_url: str, s3_server: S3Server, s3_bucket: str, app: FastAPI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ports = [free_port(), free_port()]
    envs = [
        server_env(
            pg_url,
            tmp_path_factory.mktemp(f"partrace{i}"),
            STORAGE_BACKEND="s3",
            S3_BUCKET=s3_bucket,
            S3_ENDPOINT_URL=s3_server.endpoint_url,
            AWS_ACCESS_KEY_ID=s3_server.access_key,
            AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
            S3_API_PORT=str(port),
        )
        for i, port in enumerate(ports)
    ]
    with running_server(envs[0]) as base, running_server(envs[1]):
        user, key, http = await _tenant(base, "partracer")
        await set_quota(app, user.id, storage_bytes=5 * MIB)
        clients = [boto3_client(f"http://127.0.0.1:{p}", key, max_pool_connections=20) for p in ports]
        created = await asyncio.to_thread(
            clients[0].create_multipart_upload,  # type: ignore[attr-defined]
            Bucket="pockity",
            Key="raced.bin",
        )
        upload_id = created["UploadId"]

        def part(i: int) -> str:
            try:
                clients[i % 2].upload_part(  # type: ignore[attr-defined]
                    Bucket="pockity", Key="raced.bin", UploadId=upload_id, PartNumber=i + 1, Body=b"m" * MIB
                )
                return "stored"
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])

        outcomes = await asyncio.gather(*(asyncio.to_thread(part, i) for i in range(20)))
        during = (await http.get("/api/storage/usage", headers=user.headers)).json()
        await asyncio.to_thread(
            clients[1].abort_multipart_upload,  # type: ignore[attr-defined]
            Bucket="pockity",
            Key="raced.bin",
            UploadId=upload_id,
        )
        after = (await http.get("/api/storage/usage", headers=user.headers)).json()
        await http.aclose()
    assert sorted(outcomes) == ["QuotaExceeded"] * 15 + ["stored"] * 5, outcomes
    assert (during["bytesUsed"], during["bytesReserved"]) == (0, 5 * MIB)
    assert (after["bytesUsed"], after["bytesReserved"], after["objectCount"]) == (0, 0, 0)


async def test_boto3_as_a_conformance_suite_drives_it(served: tuple[str, str], app: FastAPI) -> None:
    """The calls a public S3 test suite makes around its cases: ACL set-up, awkward keys listed with botocore's
    automatic url encoding, an s3v4 presigned GET, and clean-up through ListObjectVersions + DeleteObjects."""
    base, endpoint = served
    _, key, http = await _tenant(base, "suite")
    s3 = boto3_client(endpoint, key, signature_version="s3v4")
    names = ["foo+1/bar", "quux ab/thud", "asdf+b", "%", "_ _"]

    def work() -> dict[str, object]:
        for name in names:
            s3.put_object(Bucket="pockity", Key=name, Body=name.encode(), ACL="private")  # type: ignore[attr-defined]
        s3.put_object_acl(Bucket="pockity", Key="%", ACL="private")  # type: ignore[attr-defined]
        owner = s3.get_object_acl(Bucket="pockity", Key="%")["Owner"]  # type: ignore[attr-defined]
        listed = s3.list_objects(Bucket="pockity", Delimiter="/")  # type: ignore[attr-defined]
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "pockity", "Key": "_ _"}, ExpiresIn=100)  # type: ignore[attr-defined]
        versions = s3.list_object_versions(Bucket="pockity")["Versions"]  # type: ignore[attr-defined]
        objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]
        deleted = s3.delete_objects(Bucket="pockity", Delete={"Objects": objects})["Deleted"]  # type: ignore[attr-defined]
        left = s3.list_objects_v2(Bucket="pockity")["KeyCount"]  # type: ignore[attr-defined]
        return {
            "keys": [o["Key"] for o in listed.get("Contents", [])],
            "prefixes": [p["Prefix"] for p in listed.get("CommonPrefixes", [])],
            "owner": listed["Contents"][0]["Owner"] == owner,
            "url": url,
            "deleted": sorted(d["Key"] for d in deleted),
            "left": left,
        }

    out = await asyncio.to_thread(work)
    assert out["keys"] == ["%", "_ _", "asdf+b"]
    assert out["prefixes"] == ["foo+1/", "quux ab/"]
    assert out["owner"] is True
    assert out["deleted"] == sorted(names) and out["left"] == 0
    presigned = await http.get(str(out["url"]))  # the object is gone by now: an answer, not a signature error
    assert presigned.status_code == 404 and b"NoSuchKey" in presigned.content
    await http.aclose()
