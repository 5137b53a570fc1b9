"""Storage backends: one protocol (base.py), an S3 implementation and a local-disk one.

The S3 backend is imported from `pockity.storage.backends.s3` only where it is composed, so that merely
importing this package does not load the AWS SDK.
"""

from pockity.storage.backends.base import (
    InvalidKey,
    InvalidRange,
    NoSuchUpload,
    NothingStored,
    ObjectInfo,
    ObjectNotFound,
    PartInfo,
    SignedEndpoints,
    StorageBackend,
    StorageError,
    StorageUnavailable,
)

__all__ = [
    "InvalidKey",
    "InvalidRange",
    "NoSuchUpload",
    "NothingStored",
    "ObjectInfo",
    "ObjectNotFound",
    "PartInfo",
    "SignedEndpoints",
    "StorageBackend",
    "StorageError",
    "StorageUnavailable",
]
