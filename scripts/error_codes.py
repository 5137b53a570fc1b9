"""The catalogue of Pockity's error codes, read from the source code itself.

    python scripts/error_codes.py           print the catalogue (a Markdown table)
    python scripts/error_codes.py --write   rewrite the README's table between its markers
    python scripts/error_codes.py --check   exit 1 if the README's table differs from the code

A code is found where the code gives it: a `PockityError` subclass's class attributes (`status, code, message =
...`), a `code="..."` keyword where such an error is raised, and the fixed codes of the error handlers in
errors.py. tests/test_error_codes.py fails when the README lists a code the code never uses, or misses one.
"""

from __future__ import annotations

import ast
import gc
import re
import sys
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "pockity"
README = ROOT / "README.md"
START, END = "<!-- error-codes:start -->", "<!-- error-codes:end -->"
BASE = "PockityError"


@dataclass
class ErrorClass:
    bases: list[str]
    status: int | None = None
    code: str | None = None
    message: str | None = None


@dataclass
class Code:
    statuses: set[int] = field(default_factory=set)
    messages: list[str] = field(default_factory=list)


def _literal(node: ast.AST | None) -> object:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def _text(node: ast.AST | None) -> str | None:
    """A message literal; an f-string with its placeholders shown as `…`."""
    if isinstance(node, ast.JoinedStr):
        return "".join(str(v.value) if isinstance(v, ast.Constant) else "…" for v in node.values)
    value = _literal(node)
    return value if isinstance(value, str) else None


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _class_attrs(cls: ast.ClassDef) -> dict[str, object]:
    attrs: dict[str, object] = {}
    for stmt in cls.body:
        if not isinstance(stmt, ast.Assign | ast.AnnAssign):
            continue
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        for target in targets:
            value = _literal(stmt.value)
            if isinstance(target, ast.Tuple) and isinstance(value, tuple):
                attrs.update({_name(t) or "": v for t, v in zip(target.elts, value, strict=False)})
            elif isinstance(target, ast.Name):
                attrs[target.id] = value
    return attrs


def _trees() -> list[ast.Module]:
    # No garbage collection while the trees are built: Python 3.11 before 3.11.8 raises "SystemError: AST
    # constructor recursion depth mismatch" when a collection runs finalizers in the middle of building one
    # (CPython gh-106905), which the test suite's leftover async generators made happen in CI.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return [ast.parse(path.read_text(), str(path)) for path in sorted(SOURCE.rglob("*.py"))]
    finally:
        if enabled:
            gc.enable()


def _classes(trees: list[ast.Module]) -> dict[str, ErrorClass]:
    found: dict[str, ErrorClass] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                attrs = _class_attrs(node)
                found[node.name] = ErrorClass(
                    [b for b in map(_name, node.bases) if b],
                    attrs.get("status") if isinstance(attrs.get("status"), int) else None,  # type: ignore[arg-type]
                    attrs.get("code") if isinstance(attrs.get("code"), str) else None,  # type: ignore[arg-type]
                    attrs.get("message") if isinstance(attrs.get("message"), str) else None,  # type: ignore[arg-type]
                )
    return found


def _resolve(name: str, classes: dict[str, ErrorClass], attr: str) -> object:
    """An attribute of an error class, inherited along its bases; None if `name` is not a PockityError."""
    seen: set[str] = set()
    while name in classes and name not in seen:
        seen.add(name)
        value = getattr(classes[name], attr)
        if value is not None:
            return value
        name = classes[name].bases[0] if classes[name].bases else ""
    return None


def _is_error(name: str, classes: dict[str, ErrorClass]) -> bool:
    seen: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current == BASE:
            return True
        if current in classes and current not in seen:
            seen.add(current)
            stack.extend(classes[current].bases)
    return False


def catalogue() -> dict[str, Code]:
    """Every error code the source gives, with its HTTP statuses and messages."""
    trees = _trees()
    classes = _classes(trees)
    codes: dict[str, Code] = {}

    def add(code: str, status: object, message: object) -> None:
        entry = codes.setdefault(code, Code())
        if isinstance(status, int):
            entry.statuses.add(status)
        if isinstance(message, str) and message not in entry.messages:
            entry.messages.append(message)

    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = _name(node.func) or ""
            code = next((_literal(k.value) for k in node.keywords if k.arg == "code"), None)
            if isinstance(code, str) and _is_error(func, classes):
                message = _text(node.args[0]) if node.args else None
                add(code, _resolve(func, classes, "status"), message or _resolve(func, classes, "message"))
            elif func == "get" and _name(getattr(node.func, "value", node)) == "_HTTP_CODES" and len(node.args) == 2:
                add(str(_literal(node.args[1])), None, "Any other HTTP error of the routing layer.")
            elif func == "JSONResponse" and node.args and isinstance(node.args[0], ast.Call):
                body = node.args[0]
                if _name(body.func) == "error_body" and body.args and isinstance(_literal(body.args[0]), str):
                    status = next((_literal(k.value) for k in node.keywords if k.arg == "status_code"), None)
                    add(str(_literal(body.args[0])), status, _literal(body.args[1]) if len(body.args) > 1 else None)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(_name(t) == "_HTTP_CODES" for t in node.targets):
                for status, code in (_literal(node.value) or {}).items():  # type: ignore[attr-defined]
                    add(code, status, HTTPStatus(status).phrase + ".")
    for name, cls in classes.items():  # after the raise sites: their messages say more than a class default
        if _is_error(name, classes) and cls.code is not None:
            add(cls.code, _resolve(name, classes, "status"), _resolve(name, classes, "message"))
    return codes


def table(codes: dict[str, Code]) -> str:
    lines = ["| Code | HTTP | Meaning |", "|---|---|---|"]
    for code in sorted(codes):
        entry = codes[code]
        statuses = ", ".join(str(s) for s in sorted(entry.statuses)) or "—"
        meaning = re.sub(r"\s+", " ", entry.messages[0]).replace("|", "\\|") if entry.messages else ""
        lines.append(f"| `{code}` | {statuses} | {meaning} |")
    return "\n".join(lines)


def listed(readme: str) -> set[str]:
    """The codes the README's catalogue lists."""
    start, end = readme.index(START), readme.index(END)
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme[start:end], re.MULTILINE))


def _with_table(readme: str, text: str) -> str:
    start, end = readme.index(START) + len(START), readme.index(END)
    return readme[:start] + "\n" + text + "\n" + readme[end:]


def main(argv: list[str]) -> int:
    text = table(catalogue())
    readme = README.read_text()
    if "--write" in argv:
        README.write_text(_with_table(readme, text))
        return 0
    if "--check" in argv:
        if _with_table(readme, text) != readme:
            print("README.md's error codes are out of date: run python scripts/error_codes.py --write")
            return 1
        return 0
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
