"""The README's catalogue of error codes is the code's: nothing used is missing, nothing listed is unused."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _catalogue_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("error_codes", ROOT / "scripts" / "error_codes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["error_codes"] = module
    spec.loader.exec_module(module)
    return module


codes = _catalogue_module()


def test_every_code_the_code_uses_is_listed_and_nothing_else() -> None:
    used = set(codes.catalogue())
    listed = codes.listed((ROOT / "README.md").read_text())
    assert not used - listed, f"used but not in README (run scripts/error_codes.py --write): {sorted(used - listed)}"
    assert not listed - used, f"listed in README but no longer used: {sorted(listed - used)}"


def test_the_catalogue_finds_codes_in_every_place_they_are_given() -> None:
    found = codes.catalogue()
    assert found["upload_not_found"].statuses == {404}  # a class attribute
    assert found["invalid_expiry"].statuses == {400}  # a code= keyword at a raise site
    assert found["internal_error"].statuses == {500}  # the unhandled-error handler
    assert found["method_not_allowed"].statuses == {405}  # the routing layer's codes
    assert "scope_denied" in found and all(c == c.lower() and " " not in c for c in found)


def test_the_readme_table_is_current() -> None:
    assert codes.main(["--check"]) == 0
