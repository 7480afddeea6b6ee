#!/usr/bin/env python3
"""Does a card that fails keep the writes it acknowledged? Measures it as tests/appliance/test_read_only_card.py fails
a card: an ext4 image mounted from a loop device with errors=remount-ro, /sys/fs/ext4/<dev>/trigger_fs_error.

A writer process commits to SQLite as the agent does (WAL, synchronous = NORMAL, then fdatasync of the WAL) and says
each commit once its fdatasync has returned; the card fails at a random moment; the writer stops at the first error;
then the repair a reboot does (umount, e2fsck -fy, mount) and a count of the commits the card kept. A run "lost" a
write when fewer commits are there than were acknowledged. Needs root. Prints one JSON document."""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_WRITER = """
import os, sqlite3, sys
db = sys.argv[1]
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode = WAL")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
c.execute("PRAGMA synchronous = NORMAL")
print("ready", flush=True)
n = 0
try:
    while True:
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO t(v) VALUES (?)", (os.urandom(300),))
        c.execute("COMMIT")
        fd = os.open(db + "-wal", os.O_RDONLY)
        os.fdatasync(fd)
        os.close(fd)
        n += 1
        print(n, flush=True)
except (OSError, sqlite3.Error):
    pass
os._exit(0)
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def one_run(work: Path, k: int) -> dict[str, int]:
    image, mount = work / f"card{k}.img", work / f"card{k}"
    mount.mkdir()
    _run("truncate", "-s", "64M", str(image))
    _run("mkfs.ext4", "-q", "-F", str(image))
    if _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mount)).returncode != 0:
        sys.exit("cannot mount a loop device here (root needed)")
    device = Path(_run("findmnt", "-no", "SOURCE", str(mount)).stdout.strip()).name
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(mount / "t.db")], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    time.sleep(random.uniform(0.02, 0.3))
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("1")
    said = [int(line) for line in writer.stdout.read().split() if line.isdigit()]
    writer.wait()
    _run("umount", str(mount))
    for _ in range(100):  # the loop device lets go of the image a moment after the umount
        if not _run("losetup", "-j", str(image)).stdout.strip():
            break
        time.sleep(0.05)
    _run("e2fsck", "-fy", str(image))
    _run("mount", "-o", "loop", str(image), str(mount))
    with sqlite3.connect(mount / "t.db") as conn:
        kept = conn.execute("SELECT COUNT(*) FROM t").fetchone()[0]
    conn.close()
    _run("umount", str(mount))
    image.unlink()
    return {"acknowledged": max(said, default=0), "kept": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (mount, losetup)")
    with tempfile.TemporaryDirectory() as work:
        runs = [one_run(Path(work), k) for k in range(args.runs)]
    lost = [r for r in runs if r["kept"] < r["acknowledged"]]
    print(json.dumps({"runs": len(runs), "lost_acknowledged_writes": len(lost), "lost": lost}, indent=1))


if __name__ == "__main__":
    main()
