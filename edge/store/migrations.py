"""Numbered SQL migrations with an up and a down part; the version lives in PRAGMA user_version."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import aiosqlite
import structlog

from edge.errors import SchemaTooNewError, StoreError

log = structlog.get_logger()

_FILE_RE = re.compile(r"([0-9]{3})_[a-z0-9_]+\.sql")
_UP, _DOWN = "-- migrate:up", "-- migrate:down"


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


def migrations_dir() -> Path:
    """The repo's migrations/ in a checkout or editable install; share/edge-agent/migrations in a wheel install."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "migrations",
        Path(sys.prefix) / "share" / "edge-agent" / "migrations",
    ):
        if candidate.is_dir():
            return candidate
    raise StoreError("migrations folder not found next to the package or under sys.prefix/share/edge-agent")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.iterdir()):
        match = _FILE_RE.fullmatch(path.name)
        if not match:
            continue
        text = path.read_text(encoding="utf-8")
        if _UP not in text or _DOWN not in text:
            raise StoreError(f"migration {path.name} needs both '{_UP}' and '{_DOWN}' sections")
        up, down = text.split(_UP, 1)[1].split(_DOWN, 1)
        found.append(Migration(version=int(match.group(1)), name=path.stem, up=up.strip(), down=down.strip()))
    versions = [m.version for m in found]
    # A gap would be skipped for good on a database already past it, since user_version only holds the highest.
    if versions != list(range(1, len(found) + 1)):
        raise StoreError(f"migrations must be numbered 001, 002, … without gaps, found {versions}")
    return found


async def current_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    assert row is not None  # a PRAGMA that reads a value always answers one row
    return int(row[0])


def latest_version(migrations: list[Migration]) -> int:
    return migrations[-1].version if migrations else 0


async def check_not_newer(conn: aiosqlite.Connection, migrations: list[Migration]) -> int:
    version = await current_version(conn)
    refuse_newer(version, migrations)
    return version


def refuse_newer(version: int, migrations: list[Migration]) -> None:
    """SchemaTooNewError for a schema a newer agent wrote: the start refuses it, and `edge config check` with it."""
    known = latest_version(migrations)
    if version > known:
        # Not "restore a backup": that loses every order taken since it; the newer release's down parts keep them.
        raise SchemaTooNewError(
            f"database schema is version {version}, this agent knows up to {known}: it was written by a newer agent;"
            " start that one again, or, to run this one with every order kept, first run the newer release's"
            f" `edge migrate --to {known}` with that release's own bin/edge, not this one's (a backup restored would"
            " lose the orders taken since)"
        )


async def migrate(
    conn: aiosqlite.Connection, migrations: list[Migration], target: int | None = None
) -> tuple[int, int]:
    """Move the schema up or down to ``target`` (latest when None), all steps in one transaction: a new box's schema
    is one commit (one fsync, not one a step: 0.29 s of its first start where an fsync takes 10 ms), and a climb cut
    short anywhere, by an error, a kill or a power cut, leaves the version it started from, whole."""
    version = await check_not_newer(conn, migrations)
    target = latest_version(migrations) if target is None else target
    if target != 0 and target not in {m.version for m in migrations}:
        raise StoreError(
            f"cannot migrate to version {target}: known versions are 0, {', '.join(str(m.version) for m in migrations)}"
        )
    start = version
    known = [0] + [m.version for m in migrations]
    if version not in known:
        raise StoreError(f"database schema version {version} matches no migration file; known: {known[1:]}")
    steps = (
        [(m, m.up, m.version) for m in migrations if version < m.version <= target]
        if target >= version
        else [
            (m, m.down, known[known.index(m.version) - 1])
            for m in reversed(migrations)
            if target < m.version <= version
        ]
    )
    if not steps:
        return start, version
    # executescript would COMMIT on its own; one explicit transaction keeps the whole climb all-or-nothing.
    body = "\n".join(f"{sql}\nPRAGMA user_version = {new_version};" for _, sql, new_version in steps)
    try:
        await conn.executescript(f"BEGIN IMMEDIATE;\n{body}\nCOMMIT;")
    except Exception:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise
    for migration, sql, new_version in steps:
        log.info(
            "migration_applied",
            name=migration.name,
            direction="up" if sql is migration.up else "down",
            version=new_version,
        )
    return start, steps[-1][2]
