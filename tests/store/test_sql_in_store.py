"""SQL lives in edge/store/ only, and is constant text with placeholders: never a Python value pasted into it."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

EDGE = Path(__file__).parents[2] / "edge"
STORE = EDGE / "store"

_SQL = re.compile(
    r"\b(SELECT\s[\s\S]*\bFROM\b|INSERT\s+(OR\s+\w+\s+)?INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|PRAGMA\s+\w+"
    r"|(CREATE|DROP|ALTER)\s+(TABLE|INDEX|TRIGGER)\b|BEGIN\s+IMMEDIATE\b)"
)
_SLOT = "\x00"  # where an f-string puts a value


def _strings(tree: ast.AST) -> Iterator[tuple[int, str, ast.JoinedStr | None]]:
    """(line, text, the f-string if it is one) of every string literal; f-string values show as _SLOT."""
    parts_of_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else _SLOT for v in node.values
            )
            parts_of_fstrings.update(id(v) for v in node.values)
            yield node.lineno, text, node
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts_of_fstrings:
            yield node.lineno, node.value, None


def _modules() -> list[Path]:
    return sorted(EDGE.rglob("*.py"))


def test_no_sql_and_no_sqlite_outside_the_store() -> None:
    """Recovery, housekeeping, backups, the doctor, the CLI, the API, metrics, scanners and simulators call store
    methods: none of them holds SQL or opens SQLite itself."""
    found = []
    for path in _modules():
        if STORE in path.parents:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.relative_to(EDGE)}:{node.lineno}: imports {n}" for n in names if "sqlite" in n]
        found += [
            f"{path.relative_to(EDGE)}:{line}: {text.strip()[:60]!r}"
            for line, text, _ in _strings(tree)
            if _SQL.search(text)
        ]
    assert found == []


def test_store_sql_is_constant_text_with_placeholders() -> None:
    """An f-string of SQL may only insert constant fragments and placeholder lists by name: no value as a quoted
    literal ('{x}', or a list of them built to be pasted in), no Python repr (!r, or a tuple after IN), no
    expression."""
    found = []
    for path in sorted(STORE.rglob("*.py")):
        for line, text, fstring in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(EDGE)}:{line}"
            if fstring is not None and _SLOT in text and re.fullmatch(r"[\s'\",()]*", text.replace(_SLOT, "")):
                found.append(f"{where}: quotes a value to paste into SQL")
            if fstring is None or not _SQL.search(text):
                continue
            for value in fstring.values:
                if isinstance(value, ast.FormattedValue) and (
                    value.conversion != -1 or value.format_spec is not None or not isinstance(value.value, ast.Name)
                ):
                    found.append(f"{where}: inserts {ast.unparse(value)}")
            if re.search(rf"['\"]{_SLOT}|{_SLOT}['\"]", text):
                found.append(f"{where}: a value as a quoted literal")
            if re.search(rf"\bIN\s+{_SLOT}", text):
                found.append(f"{where}: a Python collection as an IN list")
    assert found == []


_SCHEMA_CHANGE = re.compile(r"\b(CREATE|DROP|ALTER)\s+(TEMP\s+)?(TABLE|INDEX|TRIGGER|VIEW)\b", re.IGNORECASE)


def test_the_schema_changes_in_migrations_only() -> None:
    """No module of the agent changes the schema: a store transaction that changed no row syncs nothing of its own
    (Database._must_sync counts rows, as SQLite's total_changes does, and a schema change is none), so a CREATE in one
    would be committed and not made durable. Schema changes are migrations, which run apart."""
    found = [
        f"{path.relative_to(EDGE)}:{line}: {text.strip()[:60]!r}"
        for path in _modules()
        for line, text, _ in _strings(ast.parse(path.read_text(encoding="utf-8")))
        if _SCHEMA_CHANGE.search(text)
    ]
    assert found == []
    assert _SCHEMA_CHANGE.search("CREATE TABLE t(x)") and _SCHEMA_CHANGE.search("drop index i")


def test_the_checks_see_what_they_look_for() -> None:
    """The checks themselves: they find SQL in an f-string, a quoted value and a pasted tuple."""
    source = "x = f\"SELECT id FROM t WHERE s IN {STATES} AND k = '{key}'\""
    [(_, text, fstring)] = [s for s in _strings(ast.parse(source)) if s[2] is not None]
    assert _SQL.search(text) and fstring is not None
    assert re.search(rf"\bIN\s+{_SLOT}", text) and re.search(rf"['\"]{_SLOT}", text)
    [(_, quoted, _)] = _strings(ast.parse("f\"'{s}'\""))
    assert re.fullmatch(r"[\s'\",()]*", quoted.replace(_SLOT, ""))
