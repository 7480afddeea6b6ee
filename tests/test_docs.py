"""The reference in docs/ is complete: every config key, every `edge` command and every API route has its entry
(as datasette's tests check that each of its settings has a heading in its docs)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from edge.app import Agent
from edge.cli import build_parser
from edge.config import Settings

DOCS = Path(__file__).parents[1] / "docs"
# Settings fields that are not keys of the file: where the settings came from, and a table's own name.
NOT_KEYS = {"source", "name"}


def _dataclasses_in(annotation: object) -> list[type]:
    """The settings dataclasses an annotation stands for (one, or a union of them: one per printer transport)."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [found for arg in typing.get_args(annotation) for found in _dataclasses_in(arg)]
    return []


def config_keys() -> list[str]:
    """Every key of the config file as the reference names it: ``section.key``, ``printers.NAME.key`` for a table per
    device, ``stations.STATION`` for a table of free names."""
    keys: list[str] = []
    hints = typing.get_type_hints(Settings)
    for section in dataclasses.fields(Settings):
        if section.name in NOT_KEYS:
            continue
        annotation = hints[section.name]
        if typing.get_origin(annotation) is dict:
            value = typing.get_args(annotation)[1]
            tables = _dataclasses_in(value)
            prefix = f"{section.name}.NAME" if tables else f"{section.name}.STATION"
            if not tables:
                keys.append(prefix)
        else:
            tables, prefix = _dataclasses_in(annotation), section.name
        for table in tables:
            keys += [f"{prefix}.{f.name}" for f in dataclasses.fields(table) if f.init and f.name not in NOT_KEYS]
    return list(dict.fromkeys(keys))


def reference_cells() -> Iterator[str]:
    """The first cell of every table row in docs/*.md: where a reference entry names what it describes."""
    for page in sorted(DOCS.glob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.startswith("| `"):
                yield line.split("|")[1]


def test_every_config_key_has_a_reference_entry() -> None:
    """Each key of every settings section has a table row naming it: `section.key`, or after `section.other` in a row
    that groups related keys (`spool.retry_base_s` / `retry_max_s`)."""
    cells = list(reference_cells())
    assert len(config_keys()) > 100  # the settings were really read

    def documented(key: str) -> bool:
        section, name = key.rsplit(".", 1)
        return any(f"`{key}`" in cell or (f"`{section}." in cell and f"`{name}`" in cell) for cell in cells)

    assert [key for key in config_keys() if not documented(key)] == []


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Every command and subcommand of the parser, as typed: "alerts silence"."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield " ".join((*prefix, name))
                yield from commands(sub, (*prefix, name))


def test_every_command_is_in_the_operations_reference() -> None:
    """`edge COMMAND [SUBCOMMAND]` appears in docs/operations.md for each one the argument parser knows."""
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    found = list(commands(build_parser()))
    assert {"run", "config check", "alerts silence", "sim central"} <= set(found)
    assert [command for command in found if f"`edge {command}" not in text] == []


async def test_every_route_is_in_the_http_api_reference(agent: Agent) -> None:
    """`METHOD /path` appears in docs/http-api.md for each route of the running agent's router (parameter names may
    differ: `{id}` for `{order_id}`)."""

    def plain(text: str) -> str:
        return re.sub(r"\{[^}/]*\}", "{}", text)

    text = plain((DOCS / "http-api.md").read_text(encoding="utf-8"))
    assert agent._runner is not None
    routes = {
        (route.method, route.resource.canonical)
        for route in agent._runner.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert ("POST", "/api/v1/orders") in routes

    def documented(method: str, path: str) -> bool:  # the whole path: /api/v1/jobs is not /api/v1/jobs/{id}
        return re.search(rf"`{method} {re.escape(plain(path))}(?![\w/{{])", text) is not None

    assert sorted(f"{method} {path}" for method, path in routes if not documented(method, path)) == []
