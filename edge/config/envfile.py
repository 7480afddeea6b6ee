"""The secrets file (edge.env): one line format that systemd's EnvironmentFile=, python-dotenv and the agent read alike;
written whole and atomically, private to the agent's user, the previous version kept as .bak."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from edge.durable import write_durably
from edge.errors import EdgeError

_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
# What systemd (src/basic/env-file.c) and python-dotenv read the same way, checked against both in the tests:
# - double quotes where only \\ and \" are escapes (systemd also unescapes \$ and \`, python-dotenv also \n, \t, \');
# - single quotes around text without ' or \ (python-dotenv unescapes \\ and \' there, systemd nothing);
# - bare text without blanks, quotes, \, # or $ (python-dotenv cuts " #..." off, systemd keeps it).
_DOUBLE = r'"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"'
_SINGLE = r"'[^'\\\x00-\x1f\x7f]*'"
_BARE = r"[^\s\"'\\#$`\x00-\x1f\x7f]*"
_LINE_RE = re.compile(rf"\s*({_KEY})\s*=\s*({_DOUBLE}|{_SINGLE}|{_BARE})\s*")
_SKIP_RE = re.compile(r"\s*(#.*)?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Code points systemd's UTF-8 check refuses (src/basic/utf8.c, unichar_is_valid): U+FDD0-U+FDEF and the last two of
# every plane. It refuses a file with one in a value (EINVAL): the agent's unit would not start, `edge` by hand would.
_NONCHARACTER_RE = re.compile(
    r"[\ufdd0-\ufdef" + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17)) + "]"
)
_UNESCAPE_RE = re.compile(r"\\([\"\\])")


class EnvFileError(EdgeError):
    """A secrets file line or value that cannot be read (or written) the same way by systemd and the agent."""


def quote(key: str, value: str) -> str:
    """The value as it is written after KEY=: double quotes, with only backslash and double quote escaped."""
    if not re.fullmatch(_KEY, key):
        raise EnvFileError(f"{key!r} is not a variable name (letters, digits and _)")
    if _CONTROL_RE.search(value):
        raise EnvFileError(f"{key}: the value contains a control character (e.g. a line break or tab); not written")
    if found := _NONCHARACTER_RE.search(value):
        raise EnvFileError(f"{key}: the value contains {_noncharacter(found)}; not written")
    if pasted_quotes(value):
        raise EnvFileError(f"{key}: {_PASTED}; not written")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _noncharacter(found: re.Match[str]) -> str:
    return f"U+{ord(found.group()):04X}, a Unicode noncharacter systemd refuses (the agent's unit would not start)"


def _unquote(raw: str) -> str:
    if raw.startswith('"'):
        return _UNESCAPE_RE.sub(r"\1", raw[1:-1])
    if raw.startswith("'"):
        return raw[1:-1]
    return raw


_TYPOGRAPHIC_QUOTES = frozenset("“”„‟‘’‚‛«»‹›")
_PASTED = (
    "the value is in typographic quotes (“…”, „…“ or ‘…’), which would become part of it: write it in straight double"
    ' quotes "…"'
)


def pasted_quotes(value: str) -> bool:
    """Whether the value is wrapped in typographic quotes: pasted from a mail or a document, they would become part of
    a token or password, and central or the relay would refuse it with nothing on the box saying why."""
    return len(value) >= 2 and value[0] in _TYPOGRAPHIC_QUOTES and value[-1] in _TYPOGRAPHIC_QUOTES


def parse_line(line: str) -> tuple[str, str] | None:
    """(key, value) of a KEY=VALUE line, None for a blank or comment line; EnvFileError for anything else."""
    if _SKIP_RE.fullmatch(line):
        return None
    match = _LINE_RE.fullmatch(line)
    if not match:
        raise EnvFileError(
            'not KEY="value" (systemd and the agent would read it differently): write the value in double quotes'
            ' with \\ and " escaped as \\\\ and \\", or let setup-notifications write it'
        )
    if found := _NONCHARACTER_RE.search(match.group(2)):
        raise EnvFileError(f"{match.group(1)}: the value contains {_noncharacter(found)}")
    value = _unquote(match.group(2))
    if pasted_quotes(value):
        raise EnvFileError(f"{match.group(1)}: {_PASTED}")
    return match.group(1), value


BOM = "\ufeff"  # what Windows Notepad's "UTF-8 with BOM" puts first: skipped, as if it were not there


def parse_env_lines(text: str, *, source: str) -> dict[str, tuple[int, str]]:
    """Every KEY=VALUE of the file with its line number (the last of a key that is set twice, which wins), strictly:
    the first line systemd would read differently is an error naming it. A UTF-8 BOM at the start is skipped."""
    values: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(text.removeprefix(BOM).splitlines(), 1):
        try:
            pair = parse_line(line)
        except EnvFileError as err:
            raise EnvFileError(f"{source} line {number}: {err}") from None
        if pair:
            values[pair[0]] = (number, pair[1])
    return values


def parse_env(text: str, *, source: str) -> dict[str, str]:
    """Every KEY=VALUE of the file, strictly: the first line systemd would read differently is an error naming it."""
    return {key: value for key, (_, value) in parse_env_lines(text, source=source).items()}


def render_env(old: str, values: Mapping[str, str | None], *, comment: str) -> str:
    """The old text with each key of values set in place (None: removed); new keys appended under a comment."""
    lines, seen = [], set()
    new = {key: quote(key, value) for key, value in values.items() if value is not None}
    for line in old.splitlines():
        match = re.match(rf"\s*(?:export\s+)?({_KEY})\s*=", line)
        key = match.group(1) if match else None
        if key in values:
            if key in new and key not in seen:  # a later duplicate would override the value we set
                lines.append(f"{key}={new[key]}")
            seen.add(key)
            continue
        lines.append(line)
    missing = [key for key in new if key not in seen]
    if missing:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append(f"# {comment}")
        lines.extend(f"{key}={new[key]}" for key in missing)
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str, *, owner: tuple[int, int] | None = None) -> None:
    """Whole or not at all (edge.durable): mode 0600 from the first byte, chowned to owner; on any failure the target is
    untouched."""
    try:
        write_durably(path, text.encode("utf-8"), mode=0o600, owner=owner)
    except OSError as err:
        raise EnvFileError(f"could not write {path}: {err.strerror or err}; the file there is unchanged") from None


def update_env_file(
    path: Path,
    values: Mapping[str, str | None],
    *,
    owner: tuple[int, int] | None = None,
    comment: str = "e-mail alerts (written by setup-notifications)",
) -> Path | None:
    """Sets (or, for None, removes) keys; returns the backup's path when there was a file before. The new text is
    rendered and checked before anything is written; owner defaults to the old file's."""
    old = path.read_text(encoding="utf-8") if path.exists() else None
    text = render_env((old or "").removeprefix(BOM), values, comment=comment)  # a BOM is not written back
    parse_env(text, source=str(path))  # never write a file the agent would refuse
    backup = None
    if old is not None:
        info = path.stat()
        owner = owner or (info.st_uid, info.st_gid)
        backup = path.with_name(path.name + ".bak")
        write_private(backup, old, owner=owner)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, text, owner=owner)
    return backup
