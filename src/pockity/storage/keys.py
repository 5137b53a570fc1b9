"""The tenancy boundary: the only place a user's name becomes a key in the shared bucket.

Every user's files live under `users/{user_id}/`. Bytes sent with a presigned direct-upload form land first
under `staging/{user_id}/{upload_id}` — outside every user's space, so a form can never change a stored file
(see storage/direct.py) — and are copied into place when the upload completes.
"""

from __future__ import annotations

USERS = "users/"
STAGING = "staging/"


def physical_key(user_id: str, name: str) -> str:
    """The bucket key of a user's file: always under the user's own prefix."""
    return f"{USERS}{user_id}/{name}"


def staging_key(user_id: str, upload_id: str) -> str:
    """Where a direct upload's form stores its bytes until the upload is completed."""
    return f"{STAGING}{user_id}/{upload_id}"


def parse_staging_key(key: str) -> tuple[str, str] | None:
    """(user id, upload id) of a staging key, or None if `key` is not one."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != STAGING or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]
