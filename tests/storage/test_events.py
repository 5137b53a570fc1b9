"""S3 event ingestion: authenticated, idempotent, order-safe; pushed for real by Ceph RGW."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiobotocore.session import AioSession
from fastapi import FastAPI

from pockity.storage.backends.s3 import S3Backend
from tests.fixtures.s3 import S3Server, empty_bucket
from tests.fixtures.server import running_server, server_env
from tests.fixtures.storage import expire_reservations, local_files, reservation_count, stored_rows, usage
from tests.fixtures.users import TestUser, make_user

TOKEN = "events-token-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def events_enabled(app: FastAPI) -> Iterator[None]:
    original = app.state.settings
    app.state.settings = original.model_copy(update={"s3_events_token": TOKEN})
    yield
    app.state.settings = original


def _record(event: str, key: str, seq: str, bucket: str = "pockity", size: int = 0) -> dict[str, Any]:
    return {
        "eventName": event,
        "eventTime": "2026-11-25T19:00:00.000Z",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "sequencer": seq}},
    }


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _post(client: httpx.AsyncClient, *records: dict[str, Any], **kw: Any) -> httpx.Response:
    return await client.post("/api/storage/events", json={"Records": list(records)}, headers=kw.get("headers", AUTH))


async def test_tokens_and_bad_payloads_are_refused(client: httpx.AsyncClient, events_enabled: None) -> None:
    assert (await client.post("/api/storage/events", json={"Records": []})).status_code == 401
    wrong = await _post(client, headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_token")
    query = await client.post(f"/api/storage/events?token={TOKEN}", json={"Records": []})
    assert query.status_code == 200 and query.json()["received"] == 0
    for body in (
        [1],
        {"Records": "x"},
        {"Records": [{"eventName": "ObjectCreated:Put"}]},
        {"Type": "Notification", "Message": "{not json"},
    ):
        r = await client.post("/api/storage/events", json=body, headers=AUTH)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_event"), body
    garbage = await client.post(
        "/api/storage/events", content=b"{", headers={**AUTH, "content-type": "application/json"}
    )
    assert garbage.status_code == 400


async def test_created_and_removed_events_are_idempotent_and_order_safe(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, events_enabled: None
) -> None:
    key = f"users/{user.id}/behind%20the%20back.txt"  # keys arrive URL-encoded
    await app.state.storage.put_stream(
        f"users/{user.id}/behind the back.txt", _one(b"b" * 42), content_type="text/plain"
    )
    created = _record("ObjectCreated:Put", key, "0001", size=42)
    r = await _post(client, created)
    assert r.status_code == 200 and r.json()["outcomes"] == {"adopted": 1}
    assert (await _post(client, created)).json()["outcomes"] == {"duplicate": 1}
    assert (await usage(client, user))["bytesUsed"] == 42
    await app.state.storage.delete(f"users/{user.id}/behind the back.txt")
    assert (await _post(client, _record("ObjectRemoved:Delete", key, "0002"))).json()["outcomes"] == {"dropped": 1}
    # The older "created" event arriving late (another delivery, other id) cannot bring the file back.
    late = (await _post(client, _record("s3:ObjectCreated:Put", key, "0001-redelivered", size=42))).json()
    assert late["outcomes"] == {"unchanged": 1}
    assert await stored_rows(app, user.id) == {} and (await usage(client, user))["bytesUsed"] == 0


async def test_events_outside_users_or_for_unknown_users_are_recorded_and_ignored(
    client: httpx.AsyncClient, app: FastAPI, events_enabled: None
) -> None:
    r = await _post(
        client,
        _record("ObjectCreated:Put", "other/x", "1"),
        _record("ObjectCreated:Put", "users/nobody/x", "2"),
        _record("ObjectCreated:Put", "users/x", "3"),
        _record("ObjectRestore:Post", "users/a/b", "4"),
        _record("ObjectCreated:Put", "users/a/b", "5", bucket="another-bucket"),
    )
    assert r.json()["outcomes"] == {
        "ignored:outside_users": 2,
        "ignored:unknown_user": 1,
        "ignored:event_type": 1,
        "ignored:bucket": 1,
    }


async def test_direct_upload_settled_by_event_then_complete_counts_once(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, events_enabled: None
) -> None:
    upload = (
        await client.post("/api/storage/uploads", json={"key": "ev.bin", "size": 100}, headers=user.headers)
    ).json()
    url = upload["url"].replace("http://localhost:8080", "")
    assert (await client.post(url, data=upload["fields"], files={"file": ("f", b"e" * 80)})).status_code == 204
    sns = {
        "Type": "Notification",
        "Message": json.dumps({"Records": [_record("ObjectCreated:Post", upload["fields"]["key"], "9")]}),
    }
    r = await client.post("/api/storage/events", json=sns, headers=AUTH)
    assert r.json()["outcomes"] == {"settled": 1}
    done = await client.post(f"/api/storage/uploads/{upload['uploadId']}/complete", headers=user.headers)
    assert done.status_code == 404  # already settled by the event: nothing left to complete, nothing counted twice
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (80, 100, 1)  # the form's bytes stay held
    assert local_files(app, user.id) == {"ev.bin": 80}
    again = {**sns, "Message": sns["Message"].replace('"9"', '"10"')}  # a later event for the same staging key
    assert (await client.post("/api/storage/events", json=again, headers=AUTH)).json()["outcomes"] == {
        "ignored:not_open": 1
    }
    assert await expire_reservations(app) == 1
    u = await usage(client, user)
    assert (u["bytesUsed"], u["bytesReserved"], u["objectCount"]) == (80, 0, 1) and await reservation_count(app) == 0


async def test_event_for_a_file_with_an_open_direct_upload_waits_for_it(
    client: httpx.AsyncClient, app: FastAPI, user: TestUser, events_enabled: None
) -> None:
    upload = (await client.post("/api/storage/uploads", json={"key": "w.bin", "size": 10}, headers=user.headers)).json()
    body = {"Records": [_record("ObjectCreated:Put", f"users/{user.id}/w.bin", "1")]}
    assert (await client.post("/api/storage/events", json=body, headers=AUTH)).json()["outcomes"] == {
        "ignored:in_flight": 1
    }
    assert (await client.delete(f"/api/storage/uploads/{upload['uploadId']}", headers=user.headers)).status_code == 200


async def test_rgw_pushes_bucket_notifications_for_real(
    s3_app: FastAPI, s3_client: httpx.AsyncClient, s3_server: S3Server, pg_url: str, tmp_path: Path
) -> None:
    """RGW's own SNS-style topic with an HTTP push endpoint, attached to a bucket of this test's own."""
    bucket = f"pockity-events-{uuid.uuid4().hex[:10]}"
    backend = S3Backend(bucket=bucket, create_bucket=True, **s3_server.backend_kwargs())
    await backend.start()
    user = await make_user(s3_client)
    env = server_env(
        pg_url,
        tmp_path,
        STORAGE_BACKEND="s3",
        S3_BUCKET=bucket,
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        S3_EVENTS_TOKEN=TOKEN,
    )
    try:
        with running_server(env) as base:
            sns = AioSession().create_client(
                "sns",
                endpoint_url=s3_server.endpoint_url,
                region_name=s3_server.region,
                aws_access_key_id=s3_server.access_key,
                aws_secret_access_key=s3_server.secret_key,
            )
            async with sns as client:
                topic = await client.create_topic(
                    Name=f"pockity-{uuid.uuid4().hex[:8]}",
                    Attributes={"push-endpoint": f"{base}/api/storage/events?token={TOKEN}"},
                )
                topic_arn = topic["TopicArn"]
                await backend.client.put_bucket_notification_configuration(
                    Bucket=bucket,
                    NotificationConfiguration={
                        "TopicConfigurations": [
                            {
                                "Id": "pockity",
                                "TopicArn": topic_arn,
                                "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                            }
                        ]
                    },
                )
                await backend.put_stream(f"users/{user.id}/pushed.txt", _one(b"p" * 33), content_type="text/plain")
                assert await _eventually(lambda: stored_rows(s3_app, user.id), {"pushed.txt": 33})
                await backend.delete(f"users/{user.id}/pushed.txt")
                assert await _eventually(lambda: stored_rows(s3_app, user.id), {})
                await backend.client.delete_bucket_notification_configuration(Bucket=bucket) if hasattr(
                    backend.client, "delete_bucket_notification_configuration"
                ) else None
                await client.delete_topic(TopicArn=topic_arn)
    finally:
        await empty_bucket(backend)
        await backend.client.delete_bucket(Bucket=bucket)
        await backend.close()


async def _eventually(read: Any, expected: Any, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await read() == expected:
            return True
        await asyncio.sleep(0.2)
    return bool(await read() == expected)
