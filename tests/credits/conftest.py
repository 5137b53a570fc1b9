from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tiers_restored(restore_tiers: None) -> None:
    """Tests here may change the tier catalogue; it is put back afterwards."""
