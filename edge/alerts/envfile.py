"""Sets keys in a .env file atomically: other keys and comments stay, the old file is kept as .bak, mode 0600."""

from __future__ import annotations

import os
import re
from pathlib import Path

_KEY_RE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def quote(value: str) -> str:
    """Single quotes, as python-dotenv reads them back verbatim (the agent reads .env without ${} expansion)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_env(old: str, values: dict[str, str], *, comment: str) -> str:
    lines, seen = [], set()
    for line in old.splitlines():
        match = _KEY_RE.match(line)
        if match and match.group(1) in values:
            key = match.group(1)
            if key not in seen:  # a later duplicate would override the value we set
                lines.append(f"{key}={quote(values[key])}")
                seen.add(key)
            continue
        lines.append(line)
    missing = [key for key in values if key not in seen]
    if missing:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append(f"# {comment}")
        lines.extend(f"{key}={quote(values[key])}" for key in missing)
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    """Temp file beside the target (mode 0600 from the first byte), fsync, rename over it, fsync the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by umask; this is not
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def update_env_file(
    path: Path, values: dict[str, str], *, comment: str = "e-mail alerts (written by setup-notifications)"
) -> Path | None:
    """Returns the backup's path when there was a file before."""
    old = path.read_text(encoding="utf-8") if path.exists() else None
    backup = None
    if old is not None:
        backup = path.with_name(path.name + ".bak")
        _write_private(backup, old)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, render_env(old or "", values, comment=comment))
    return backup
