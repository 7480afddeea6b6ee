"""Write-only transport that saves each job as a .bin file, for the demo and for debugging."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import structlog

from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.transports.end import End

log = structlog.get_logger()


class FileTransport:
    """Each connection that writes makes a new ``<UTC timestamp>Z-<seq>.bin`` file; nothing is ever read back."""

    can_read = False
    line_bytes_per_s: float | None = None
    vanishes_silently = False
    silent = "does not answer"  # never asked: a file cannot answer

    def __init__(self, device_id: str, directory: Path | str) -> None:
        self.device_id = device_id
        self.directory = Path(directory)
        self.label = self.device = f"file {self.directory}"
        self._seq = itertools.count(1)
        self._opened = False
        self._file: BinaryIO | None = None

    def open(self) -> None:
        self.close()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DeviceUnreachableError(
                self.device_id, self.label, f"cannot create the directory: {err.strerror or err}"
            ) from err
        if not os.access(self.directory, os.W_OK):
            raise DeviceUnreachableError(self.device_id, self.label, "directory is not writable")
        self._opened = True

    def write(self, data: bytes) -> None:
        if not self._opened:
            raise DeviceWriteError(self.device_id, self.label, "file is not open")
        try:
            if self._file is None:
                # Made on the first write, so a status check (open, close) leaves no empty file;
                # "x" refuses to overwrite an earlier job's file.
                # UTC: local names sort an hour back after the autumn clock change.
                path = self.directory / f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{next(self._seq):06d}.bin"
                self._file = open(path, "xb")  # noqa: SIM115 - closed in close()
            self._file.write(data)
            # Flushed now, so a full disk fails here where the caller sees it, not in close().
            self._file.flush()
        except OSError as err:
            raise DeviceWriteError(self.device_id, self.label, f"write failed: {err.strerror or err}") from err

    def read(self, n: int, timeout: float) -> bytes:
        return b""  # a file never answers; can_read tells drivers not to ask

    def holding_back(self) -> bool:
        return False  # a file takes every byte at once

    def finish(self, timeout: float) -> End:
        return End.UNKNOWN  # a file has no end of its own to wait for

    def close(self) -> None:
        self._opened = False
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            try:
                os.fsync(file.fileno())
            finally:
                file.close()
        except OSError as err:
            log.warning("file_transport_close_failed", device_id=self.device_id, error=str(err))
