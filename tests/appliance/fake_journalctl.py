"""A stand-in for `journalctl` beside fake_systemctl.py: `journalctl _SYSTEMD_UNIT=UNIT [--since @SECONDS] [-o cat]
[--no-pager]` (also `-u UNIT`) prints what the unit's processes wrote to stdout and stderr since that time, as
`-o cat` does: the message text only. The log of a start that began before it is left out whole (this journal has no
time per line; the agent's lines come after its start). Anything else prints nothing, as a journal without entries."""

from __future__ import annotations

import os
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SYSTEMD_STATE"])


def main(argv: list[str]) -> int:
    unit, since = "", 0.0
    args = iter(argv)
    for arg in args:
        if arg.startswith("_SYSTEMD_UNIT="):
            unit = arg.split("=", 1)[1]
        elif arg in ("-u", "--unit"):
            unit = next(args)
        elif arg == "--since":
            since = float(next(args).removeprefix("@"))
    try:
        starts = (STATE / f"{unit}.starts").read_text().splitlines()
        log = (STATE / f"{unit}.log").read_bytes()
    except OSError:
        return 0
    offsets = [int(offset) for at, offset in (line.split() for line in starts) if float(at) >= since]
    if offsets:
        sys.stdout.buffer.write(log[offsets[0] :])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
