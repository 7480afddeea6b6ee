"""A serial impact printer with a speed, a receive buffer and a line rate, at the far end of a pseudo-terminal.

Modelled on Epson's TM-U220 (TM-U220 Technical Reference Guide / specification): 4.7 lines a second at 40 columns, a
4 KB receive buffer, RS-232 at 9600 baud (960 bytes a second, 8N1). With XON/XOFF selected it sends XOFF when the buffer
is nearly full and XON once it has room again (Epson's 4 KB-buffer models: busy with 128 bytes left, ready again with
256; the TM-U200 series, 16 and 32); real-time commands (DLE EOT, DLE DC4 fn 8) are executed on arrival; GS r is
processed in order, after every byte before it; "data received while the receive buffer is full is discarded" — what
a host that ignores the printer's BUSY (its DTR/DSR handshake, DIP switch 1-3) loses.

``scale`` speeds the line and the paper up alike, so a test lasts seconds, not minutes; byte counts (buffer, ticket)
stay as they are. A pseudo-terminal holds some 16 KB in flight where a real UART's kernel buffer holds 4 KB and stops
within a FIFO's worth of XOFF: while it signals busy, this printer does not read the line (what is in flight stays in
the host, as on a real line); with ``flow_control`` "none" it reads on at the line's rate and loses what does not fit.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty

XON, XOFF = b"\x11", b"\x13"
_DLE_EOT, _DLE_DC4, _GS_R = b"\x10\x04", b"\x10\x14", b"\x1dr"
_ONLINE = 0x12  # a DLE EOT reply with nothing set: online, paper present, no error
_GS_R_PAPER_OK = 0x00


class SlowSerialPrinter:
    def __init__(
        self,
        *,
        flow_control: str = "none",  # "xonxoff": the printer sends XOFF/XON (and the host honours them)
        scale: float = 1.0,
        line_bytes_per_s: float = 960,
        lines_per_s: float = 4.7,
        buffer: int = 4096,
        busy_left: int = 128,
        ready_left: int = 256,
    ) -> None:
        self.flow_control = flow_control
        self.line_bytes_per_s = line_bytes_per_s * scale
        self.lines_per_s = lines_per_s * scale
        self.buffer_size, self.busy_left, self.ready_left = buffer, busy_left, ready_left
        self.paper = bytearray()  # every byte the printer processed, in order
        self.lost = 0  # bytes discarded with the buffer full
        self.received = 0
        self.gs_r_answered = 0
        self.lose_gs_r = 0  # this many GS r queries vanish on the way (as bytes lost to an overrun do)
        self.hold = False  # busy for good: XOFF sent (with flow control), nothing taken
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._busy = False
        self._pending = b""
        self._stop = threading.Event()
        master, slave = os.openpty()
        tty.setraw(slave)  # a serial line carries the bytes as they are
        self._master, self._slave, self.device = master, slave, os.ttyname(slave)
        self._threads = [threading.Thread(target=self._uart, daemon=True), threading.Thread(target=self._mechanism)]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for fd in (self._master, self._slave):
            os.close(fd)

    @property
    def busy(self) -> bool:
        return self._busy

    def _free(self) -> int:
        return self.buffer_size - len(self._buf)

    def _signal(self) -> None:
        """BUSY / READY by the buffer's room (under the lock)."""
        if self.hold:
            busy = True
        elif self._busy:
            busy = self._free() < self.ready_left
        else:
            busy = self._free() <= self.busy_left
        if busy != self._busy:
            self._busy = busy
            if self.flow_control == "xonxoff":
                os.write(self._master, XOFF if busy else XON)

    def _uart(self) -> None:
        tick = 0.01
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                self._signal()
                held = self._busy and self.flow_control != "none"
            budget = max(1, int(self.line_bytes_per_s * tick))  # what the line carries in a tick
            if not held and len(self._pending) < budget and select.select([self._master], [], [], 0)[0]:
                try:
                    chunk = os.read(self._master, budget - len(self._pending))
                except OSError:
                    return
                self._receive(chunk)
            elif not held and self._pending:
                self._receive(b"")
            time.sleep(max(0.0, tick - (time.monotonic() - started)))

    def _receive(self, chunk: bytes) -> None:
        data, self._pending = self._pending + chunk, b""
        i = 0
        while i < len(data):
            rest = data[i:]
            if self._busy and self.flow_control != "none":
                self._pending = rest  # a host that honours XOFF stops sending: the rest is still in its UART
                return
            if rest[:1] == b"\x10" and len(rest) < 3:
                self._pending = rest  # a real-time command's start: wait for the rest
                return
            if rest.startswith(_DLE_EOT):
                os.write(self._master, bytes([_ONLINE]))
                i += 3
                continue
            if rest.startswith(_DLE_DC4) and rest[2:3] == b"\x08":
                if len(rest) < 10:
                    self._pending = rest
                    return
                with self._lock:
                    self._buf.clear()
                i += 10
                continue
            if rest.startswith(_GS_R) and self.lose_gs_r:
                self.lose_gs_r -= 1
                i += 3
                continue
            self.received += 1
            with self._lock:
                if self._free() > 0:
                    self._buf.append(data[i])
                else:
                    self.lost += 1
                self._signal()
            i += 1

    def _mechanism(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self.hold:
                    piece = b""
                elif self._buf.startswith(_GS_R):
                    if len(self._buf) < 3:
                        piece = b""
                    else:
                        del self._buf[:3]
                        os.write(self._master, bytes([_GS_R_PAPER_OK]))
                        self.gs_r_answered += 1
                        continue
                else:
                    ends = [at for at in (self._buf.find(b"\n") + 1, self._buf.find(_GS_R)) if at > 0]
                    cut = min(ends) if ends else len(self._buf)
                    if self._buf.endswith(b"\x1d") and cut == len(self._buf):
                        cut -= 1  # GS r may be coming
                    piece = bytes(self._buf[:cut])
                    del self._buf[:cut]
            if piece:
                self.paper += piece
                if piece.endswith(b"\n"):
                    time.sleep(1 / self.lines_per_s)
            else:
                time.sleep(0.005)
