"""One agent per data directory: an flock on data_dir/agent.lock, released by the kernel even after a crash."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import stat
from pathlib import Path

from edge.errors import ConfigError, StoreError, StoreReadOnlyError
from edge.mounts import read_only_advice

# The holder line is written at a fixed width over the old one: nothing is ever truncated, so a lock file that
# is not what it seems (a hard link) can at worst get its first line overwritten, never emptied.
_HOLDER_WIDTH = 80


class AgentRunningError(StoreError):
    """Another process (a running agent, a restore, a migration) holds the data directory."""


class DataDirLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path, *, purpose: str = "agent") -> DataDirLock:
        """Takes the lock or raises AgentRunningError naming who holds it.

        The agent's user owns the data directory and could swap agent.lock for a symlink to any file; tools run as
        root take this lock too, so it is opened without following links and must be a plain file.
        """
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise ConfigError("agent.data_dir", _cannot_make(data_dir)) from None
        path = data_dir / "agent.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise StoreError(f"{path} is a symlink; remove it (the lock is never taken through a link)") from None
            if err.errno == errno.EROFS:
                raise StoreReadOnlyError(f"data directory {data_dir}: {read_only_advice(data_dir)}") from None
            raise StoreError(f"{path}: cannot open the lock file: {err.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise StoreError(f"{path} is not a plain file of its own (a hard link or a special file); remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, _HOLDER_WIDTH, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            # What to do, for the technician: an agent holds it until it is stopped; a command, until it ends.
            advice = (
                # The health timer too: it would mail the manager "agent not running" for the planned downtime
                # (the upgrade79 probe, H1), as upgrade.sh stops it for its own.
                "stop it first (sudo systemctl stop edge-health-check.timer edge-agent), then run this again, and"
                " start both after (sudo systemctl start edge-agent edge-health-check.timer)"
                if holder.startswith("agent ")
                else "wait for it to finish, then run this again"
            )
            raise AgentRunningError(f"data directory {data_dir} is in use by {holder}; {advice}") from None
        # Who holds it, for the message above; the flock is the lock, so a card too full for this line (a new data
        # directory on a full card) changes nothing: before, the start ended on it with a bare "[Errno 28]".
        _write_holder(fd, f"{purpose} pid {os.getpid()}")
        return cls(path, fd)

    def note_address(self, host: str, port: int) -> None:
        """Adds where the agent's API listens to its holder line: a command asking the agent finds it there after
        api.port or api.host was changed in edge.toml and the restart is still to come (the config80 probe, F8; the
        verify80 probe, V1)."""
        if self._fd is not None:
            _write_holder(self._fd, f"agent pid {os.getpid()} api {host} {port}")

    @classmethod
    def running_address(cls, data_dir: Path) -> tuple[str, int] | None:
        """(host, port) the agent holding ``data_dir`` listens on, as it noted them; None if no agent holds it or it
        noted none (a version before stop 80, or it is still starting)."""
        try:
            holder = (data_dir / "agent.lock").read_text(errors="replace").split()
        except OSError:
            return None
        if holder[:2] != ["agent", "pid"] or holder[3:4] != ["api"] or len(holder) < 6 or not holder[5].isdigit():
            return None
        return (holder[4], int(holder[5])) if cls.held(data_dir) else None

    @staticmethod
    def held(data_dir: Path) -> bool:
        """Whether a process holds ``data_dir`` now (an agent runs, a restore or a migration is under way): its lock
        tried, shared, and let go at once. An agent starting in that instant is refused, and systemd starts it again
        (Restart=on-failure). False where it cannot tell (no lock file: no agent ever ran there)."""
        try:
            fd = os.open(data_dir / "agent.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # and with it the shared lock
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the stale holder line is only read while someone holds it
            self._fd = None


def _write_holder(fd: int, line: str) -> None:
    """The holder line, over the old one at its fixed width; a card too full for it changes nothing (see acquire)."""
    with contextlib.suppress(OSError):
        os.pwrite(fd, line.ljust(_HOLDER_WIDTH - 1)[: _HOLDER_WIDTH - 1].encode() + b"\n", 0)


def _cannot_make(data_dir: Path) -> str:
    """Why this process's user cannot make ``data_dir`` (a new folder under one root owns: a disk root mounted, /srv),
    with what to run: before, a bare "[Errno 13] Permission denied" and exit 1, restarted by systemd in vain."""
    parent = next((p for p in data_dir.parents if p.exists()), data_dir.anchor)
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = str(os.geteuid())
    return (
        f"{data_dir} cannot be made: user {me} may not write in {parent}; fix (as root): mkdir -p {data_dir} &&"
        f" chown {me}: {data_dir}"
    )
