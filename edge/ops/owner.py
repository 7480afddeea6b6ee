"""Root-run `edge` commands act as the data directory's owner (the agent's user), so nothing they write is root's."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import os
import pwd
import stat
import sys
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class DataOwner:
    """Who a root-run command became, and how many root-owned leftovers it gave back first."""

    name: str
    uid: int
    gid: int
    repaired: int


def act_as_data_owner(data_dir: Path) -> DataOwner | None:
    """As root, give root-owned leftovers under ``data_dir`` back to its owner, then become that owner for good.

    Does nothing when not root, when ``data_dir`` does not exist yet or is root's own (a --prefix test install).
    Says what it did on stderr, one line each. Call it after the config is read and before anything is opened.
    """
    if os.geteuid() != 0:
        return None
    try:
        info = data_dir.stat()
    except FileNotFoundError:
        return None
    if info.st_uid == 0:
        return None
    try:
        entry = pwd.getpwuid(info.st_uid)
        name, gid = entry.pw_name, entry.pw_gid
    except KeyError:  # a uid without a passwd entry (a restored disk): its number and the directory's group
        name, gid = str(info.st_uid), info.st_gid
    # asyncio loads its thread pool's module at its first use, which every command makes after this: loaded while still
    # root, it is read from wherever the interpreter lives, also where the agent's user cannot read (under /root).
    importlib.import_module("concurrent.futures.thread")
    repaired = _give_back(data_dir, info.st_uid, gid)
    if repaired:
        print(f"edge: gave {repaired} root-owned file(s) under {data_dir} back to {name}", file=sys.stderr)
    if name != str(info.st_uid):
        os.initgroups(name, gid)  # lp and dialout: `edge run` as root still reaches USB printers and scanners
    else:
        os.setgroups([])
    os.setgid(gid)
    os.setuid(info.st_uid)
    print(
        f"edge: running as {name}, the owner of {data_dir}, so the files it writes there stay the agent's",
        file=sys.stderr,
    )
    return DataOwner(name=name, uid=info.st_uid, gid=gid, repaired=repaired)


def _give_back(data_dir: Path, uid: int, gid: int) -> int:
    """chown every root-owned entry under data_dir to uid:gid, without ever following a link.

    The agent's user can rename and link inside its own directory while this runs, so each entry is opened relative
    to an already-open directory with O_NOFOLLOW and changed through that descriptor: only what really is there, and
    only a file with no second name elsewhere, changes hands.
    """
    count = 0
    for _dirpath, dirnames, filenames, dir_fd in os.fwalk(data_dir, follow_symlinks=False):
        for name in [*dirnames, *filenames]:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):  # a symlink, gone meanwhile, a socket
                    continue
                raise
            try:
                info = os.fstat(fd)
                plain = stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1)
                if info.st_uid == 0 and plain:
                    os.fchown(fd, uid, gid)
                    count += 1
            finally:
                os.close(fd)
    return count


def unwritable_database(db_path: Path) -> str | None:
    """One line naming the first of ``db_path`` and its -wal and -shm files this process's user cannot write (put back
    by `sudo cp backup.db edge.db`, not `edge restore`), its owner and mode and the fix; None when all are writable.
    SQLite only says "attempt to write a readonly database", which reads like the read-only card of the storage mail.
    Root writes any file (and a root-run command gives root's back first: act_as_data_owner)."""
    if os.geteuid() == 0:
        return None
    me = _name(os.geteuid())
    for path in (db_path, db_path.with_name(f"{db_path.name}-wal"), db_path.with_name(f"{db_path.name}-shm")):
        try:
            info = path.stat()
        except OSError:
            continue  # not there: SQLite makes it, as this user
        if not os.access(path, os.W_OK):
            fix = f"chmod u+w {db_path}*" if info.st_uid == os.geteuid() else f"chown {me}: {db_path}*"
            return (
                f"{path} belongs to {_name(info.st_uid)} (mode {stat.S_IMODE(info.st_mode):04o}), so user {me} cannot"
                f" write it; fix: {fix}"
            )
    return None


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
