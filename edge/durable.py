"""Writes a power cut cannot tear: ``sync_to_disk`` (one file's or directory's fsync, the WAL's after each commit, a
backup's) and ``write_durably``, a small file that a power cut leaves either old or new, whole, and new once the call
returned (a temporary file beside the target, written and fsynced, renamed over it, the directory fsynced). For files
whose content carries a promise (what was mailed, why a start failed, the secrets); caches need no fsync. And
``NoteInPlace``, a note that can still be written once the card is full."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
import zlib
from pathlib import Path


def runtime_dir() -> Path:
    """Where state that must outlive a run but not the boot goes while the data directory refuses writes: systemd's
    RuntimeDirectory (/run/edge, a tmpfs the units keep until the next boot), else the temp dir."""
    return Path(os.environ.get("RUNTIME_DIRECTORY") or tempfile.gettempdir())


def runtime_note(store_id: str, data_dir: Path, what: str) -> Path:
    """A note for the next run of this boot about one database (``data_dir``), in the runtime directory."""
    database = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return runtime_dir() / f"edge-{store_id}-{database}-{what}"


def write_durably(path: Path, data: bytes, *, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Blocking (two fsyncs: call it in a thread from an event loop). The file has ``mode`` (and ``owner``, uid and
    gid) from its first byte. Raises OSError with the target untouched and no temporary file left."""
    _remove_orphans(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is masked by umask; this is not
            if owner is not None and (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != owner:
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:  # os.write may write less than asked (a nearly full disk)
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    sync_to_disk(path.parent)  # the rename itself


def _remove_orphans(path: Path) -> None:
    """The temporary files of ``path`` that writers cut off before their rename left (a power cut, a SIGKILL): a new
    writer has a new PID, so nothing else would remove them, and one beside the secrets file holds secrets. Those of a
    process still running are theirs."""
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = temporary.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not _running(int(pid)):
            with contextlib.suppress(OSError):
                temporary.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def sync_to_disk(path: Path, *, data_only: bool = False) -> None:
    """Flush a file (or a directory's entries) to the device; any descriptor of the file flushes what every writer of
    it wrote. ``data_only``: fdatasync, the file's data without metadata such as its times (the WAL after a commit)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        (os.fdatasync if data_only else os.fsync)(fd)
    finally:
        os.close(fd)


class NoteInPlace:
    """A small note on the card that can be written while the card is full and outlives a reboot: its file is made
    (zeros, fsynced) while there is room, then only overwritten in place, which takes no new block on ext4, vfat or
    tmpfs (a copy-on-write file system such as btrfs or f2fs may refuse it when full: OSError, as any failed write). A
    CRC tells a note a power cut tore from a whole one; a torn note reads as none."""

    SIZE = 4096  # one block of ext4 or vfat

    def __init__(self, path: Path) -> None:
        self.path = path

    def make(self) -> None:
        """Blocking. Makes the file unless it is there; OSError when the card has no room for it."""
        with contextlib.suppress(OSError):
            if self.path.stat().st_size == self.SIZE:
                return
        write_durably(self.path, bytes(self.SIZE))

    def write(self, text: str | None) -> None:
        """Blocking. Replaces the note (None: blanks it). OSError when the file was never made or the write fails."""
        data = b"" if text is None else f"{zlib.crc32(text.encode()):08x} {text}".encode()
        if len(data) > self.SIZE:
            raise ValueError(f"a note of {len(data)} bytes does not fit in {self.SIZE}")
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)  # no O_CREAT: made beforehand, while there was room
        try:
            if os.pwrite(fd, data.ljust(self.SIZE, b"\0"), 0) != self.SIZE:
                raise OSError(f"{self.path}: short write")
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def read(self) -> str | None:
        """Blocking. The note, or None: blank, never made, unreadable or torn."""
        try:
            crc, _, data = self.path.read_bytes().rstrip(b"\0").partition(b" ")
            return data.decode() if data and int(crc, 16) == zlib.crc32(data) else None
        except (OSError, ValueError):
            return None
