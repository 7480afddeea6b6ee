"""A simulated serial scanner on a pseudo-terminal: sends codes with any suffix, can be unplugged and plugged back
in."""

from __future__ import annotations

import os
import tty
from pathlib import Path


class SimScanner:
    """The agent opens ``path`` like /dev/ttyACM0; it is a symlink to the current pty, as udev's by-id links are.

    Unplugging closes the pty and removes the link; plugging in again makes a new pty behind the same path.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._master: int | None = None

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> None:
        if self._master is not None:
            return
        master, slave = os.openpty()
        # Raw from the start: bytes sent before the agent has configured the port arrive unchanged (no CR→LF, no echo).
        tty.setraw(slave)
        slave_path = os.ttyname(slave)
        os.close(slave)
        link = self.path.with_name(self.path.name + ".new")
        link.unlink(missing_ok=True)
        link.symlink_to(slave_path)
        link.replace(self.path)
        self._master = master

    def unplug(self) -> None:
        self.path.unlink(missing_ok=True)
        if self._master is not None:
            os.close(self._master)
            self._master = None

    def send(self, data: bytes) -> None:
        """Raw bytes as the scanner would send them. A pty takes a few KiB without blocking; codes are far shorter."""
        if self._master is None:
            raise RuntimeError(f"simulated scanner {self.path} is unplugged")
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view) :]

    def scan(self, code: str, suffix: str = "\r\n") -> None:
        self.send(code.encode("utf-8") + suffix.encode("ascii"))
