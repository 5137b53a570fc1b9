"""The isolation pack's fixtures: alice (the attacker), bob (the victim with files), the disk, a raw client."""

from tests.storage.isolation.helpers import alice, bob, raw, storage

__all__ = ["alice", "bob", "raw", "storage"]
