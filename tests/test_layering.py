"""House rule 11 for the money and notice domains, read from the source: a domain changes another domain's
records through that domain's service, never its repository; no import inside a function (a cycle means a
package is missing); payment providers reach payments' records only through the service; no one-letter
aliases. Every domain package is checked; the kit imports no domain."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pockity"
CHECKED = tuple(
    sorted(p.name for p in SRC.iterdir() if p.is_dir() and any(p.glob("*.py")) and p.name not in ("kit", "models"))
)
# Reads of another domain's repository that are allowed, with the reason.
READS = {
    ("billing", "tiers"),  # the tier catalogue (prices, the default tier): read, never changed by billing
    ("tier_requests", "tiers"),  # the same catalogue: is the requested tier offered?
    ("auth", "users"),  # login reads the account by email; users/ changes it
    ("apikeys", "auth"),  # the principal's columns, joined into the key lookup: one query per request
    ("storage", "tiers"),  # which tier's limits apply to a writer (quota.py)
    ("storage", "users"),  # does the user an event or a reconciliation names exist; which users to walk
}


def _modules(domain: str) -> list[Path]:
    return sorted((SRC / domain).rglob("*.py"))


def _imported(tree: ast.AST) -> Iterator[tuple[ast.stmt, str]]:
    """Every module an import statement names (for `from a import b`, both `a` and `a.b`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node, node.module
            for alias in node.names:
                yield node, f"{node.module}.{alias.name}"


@pytest.mark.parametrize("domain", CHECKED)
def test_no_other_domains_repository(domain: str) -> None:
    found = []
    for path in _modules(domain):
        for _, name in _imported(ast.parse(path.read_text())):
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "pockity" and parts[2] == "repository" and parts[1] != domain:
                if (domain, parts[1]) not in READS:
                    found.append(f"{path.relative_to(SRC)}: {name}")
    assert found == []


@pytest.mark.parametrize("domain", CHECKED)
def test_no_pockity_import_inside_a_function(domain: str) -> None:
    found = []
    for path in _modules(domain):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                for node, name in _imported(function):
                    if name.split(".")[0] == "pockity":
                        found.append(f"{path.relative_to(SRC)}:{node.lineno} in {function.name}")
    assert found == []


def test_providers_do_not_read_the_payments_repository() -> None:
    found = [
        f"{path.relative_to(SRC)}: {name}"
        for path in sorted((SRC / "payments" / "providers").glob("*.py"))
        for _, name in _imported(ast.parse(path.read_text()))
        if name.startswith("pockity.payments.repository")
    ]
    assert found == []


@pytest.mark.parametrize("domain", CHECKED)
def test_no_one_letter_aliases(domain: str) -> None:
    """`S = SubscriptionStatus` at module level and the like: the full name says what it is. (A table's short
    name inside one query function, `c = UsageCounter`, is the SQLAlchemy idiom and stays.)"""
    found = []
    for path in _modules(domain):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name | ast.Attribute):
                for target in node.targets:
                    if isinstance(target, ast.Name) and len(target.id) == 1:
                        found.append(f"{path.relative_to(SRC)}:{node.lineno} {target.id} = {ast.unparse(node.value)}")
    assert found == []


def test_the_kit_imports_no_domain() -> None:
    """kit/ is below every domain: it may use the database plumbing and the models, and name a domain's
    type for the type checker only (under TYPE_CHECKING)."""
    allowed = ("pockity.kit", "pockity.db", "pockity.models")
    found = []
    for path in sorted((SRC / "kit").glob("*.py")):
        tree = ast.parse(path.read_text())
        checking = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for inner in ast.walk(node)
        }
        for node, name in _imported(tree):
            if name.startswith("pockity") and id(node) not in checking and not name.startswith(allowed):
                found.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    assert found == []


def test_routers_write_no_audit_records() -> None:
    """What is audited is a service's decision: a router that writes the audit log itself can be bypassed by the
    next caller of the same service (the console, the S3 API)."""
    found = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in sorted(SRC.rglob("*router*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == "record"
    ]
    assert found == []
