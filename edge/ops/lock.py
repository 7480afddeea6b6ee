"""One agent per data directory: an flock on data_dir/agent.lock, released by the kernel even after a crash."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge.errors import StoreError


class AgentRunningError(StoreError):
    """Another process (a running agent, a restore) holds the data directory."""


class DataDirLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path, *, purpose: str = "agent") -> DataDirLock:
        """Takes the lock or raises AgentRunningError naming who holds it."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "agent.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise AgentRunningError(f"data directory {data_dir} is in use by {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{purpose} pid {os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
