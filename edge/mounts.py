"""Why a directory's file system refuses writes: a failing card the kernel remounted read-only, or the systemd unit's
sandbox, which mounts every path but its ReadWritePaths read-only over file systems that are not (ProtectSystem=strict,
systemd.exec(5)). The advice differs: a reboot and a new card, or a line in the unit."""

from __future__ import annotations

import os
import re
from pathlib import Path

from edge.errors import READ_ONLY_ADVICE

_ESCAPED = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space in a path as \040 (proc(5))


def sandboxed(path: Path) -> bool:
    """Whether ``path`` lies on a mount read-only over a file system that takes writes: a read-only bind mount, as
    systemd's ProtectSystem=strict makes of every path outside ReadWritePaths (a card remounted read-only after I/O
    errors is read-only in its file system's own options too)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    real = os.path.realpath(path)
    found: tuple[str, bool] | None = None
    for line in lines:
        mount, _, source = line.partition(" - ")
        fields, below = mount.split(), source.split()
        if len(fields) < 6 or len(below) < 3:
            continue
        point = _ESCAPED.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        if real == point or real.startswith(point.rstrip("/") + "/"):
            ro_here, ro_below = "ro" in fields[5].split(","), "ro" in below[2].split(",")
            if found is None or len(point) >= len(found[0]):  # the deepest mount, the last of those stacked on it
                found = (point, ro_here and not ro_below)
    return found is not None and found[1]


def read_only_advice(path: Path, *, unit: str = "edge-agent") -> str:
    """What to do about the read-only file system holding ``path``, in words for the technician."""
    if not sandboxed(path):
        return READ_ONLY_ADVICE
    return (
        f"the service may not write there: its unit ({unit}.service, ProtectSystem=strict) lets it write only its"
        f" ReadWritePaths (/var/lib/edge); add the directory with `sudo systemctl edit {unit}`, lines [Service] and"
        f" ReadWritePaths={path}, then restart it; or use a directory under /var/lib/edge"
    )
