"""Schemathesis hooks for the fuzz stage (loaded with SCHEMATHESIS_HOOKS=tests.fuzz.hooks)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.check
def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 500 ever; another 5xx only where the operation documents it (503 provider_not_configured)."""
    status = response.status_code
    documented = case.operation.definition.raw.get("responses", {})
    if status == 500 or (status > 500 and str(status) not in documented):
        raise AssertionError(f"Server error {status}: {response.text[:300]}")
