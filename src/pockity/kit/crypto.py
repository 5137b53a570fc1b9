"""Sealing secrets with AES-256-GCM under a key-encryption key (KEK) that can be rotated."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class UnknownKeyError(Exception):
    """A sealed value names a key id this keyring does not hold."""


class SealError(Exception):
    """A sealed value failed authentication (tampered, or sealed for another row)."""


def kek_id(key: bytes) -> str:
    """A short, stable id of a KEK, stored beside each sealed value (not secret: a hash prefix)."""
    return hashlib.sha256(b"pockity-kek-id:" + key).hexdigest()[:16]


def decode_kek(value: str) -> bytes:
    raw = base64.b64decode(value.strip(), validate=True)
    if len(raw) != 32:
        raise ValueError("a key-encryption key must be 32 bytes")
    return raw


class Keyring:
    """The current KEK seals; it and any older KEKs open."""

    def __init__(self, current: bytes, older: Iterable[bytes] = ()) -> None:
        self.current_id = kek_id(current)
        self._keys = {kek_id(k): AESGCM(k) for k in (*older, current)}

    @classmethod
    def from_config(cls, current_b64: str, older_b64: str = "") -> Keyring:
        older = [decode_kek(v) for v in older_b64.replace("\n", ",").split(",") if v.strip()]
        return cls(decode_kek(current_b64), older)

    def seal(self, plaintext: bytes, associated: bytes) -> tuple[bytes, str]:
        """Encrypt and authenticate; `associated` binds the value to its row."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._keys[self.current_id].encrypt(nonce, plaintext, associated)
        return sealed, self.current_id

    def open(self, sealed: bytes, key_id: str, associated: bytes) -> bytes:
        aes = self._keys.get(key_id)
        if aes is None:
            raise UnknownKeyError(key_id)
        try:
            return aes.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)
        except InvalidTag as exc:
            raise SealError("sealed value failed authentication") from exc


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
