"""Raw TCP to a network device, like an ESC/POS printer on port 9100."""

from __future__ import annotations

import socket

from edge.errors import DeviceUnreachableError, DeviceWriteError


class TcpTransport:
    """Blocking socket; a failed connect is "unreachable", any failure after it is a write error."""

    can_read = True
    line_bytes_per_s: float | None = None
    # A printer that loses power sends nothing, neither a reset nor a close: its connection only goes silent, and
    # writes still land in the socket's buffer.
    vanishes_silently = True
    # A network interface serves one host at a time and keeps the others' connections waiting, unanswered (Epson's
    # UB-E02: "Data transmission is blocked for other requests until the first connection is closed").
    silent = "takes the connection but answers nothing: another device (the till?) may be printing on it"
    # Never answered though the model does: after a power cut the router may give the printer a new address and its
    # old one to another device that takes port 9100 (an office laser's JetDirect port, a label printer, a PC).
    never_answered = (
        "it accepts connections but never answers like a printer: check the printer's address (after a power cut it"
        " may have a new one, and another device this one), or the till may hold it"
    )

    def __init__(
        self, device_id: str, host: str, port: int, *, connect_timeout: float = 3.0, write_timeout: float = 10.0
    ) -> None:
        self.device_id = device_id
        self.label = f"tcp {host}:{port}"
        self._address = (host, port)
        self._connect_timeout = connect_timeout
        self._write_timeout = write_timeout
        self._sock: socket.socket | None = None

    def open(self) -> None:
        self.close()
        sock = None
        try:
            sock = socket.create_connection(self._address, timeout=self._connect_timeout)
            # Status queries are 3 bytes that wait for a reply; Nagle would hold them back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as err:
            raise DeviceUnreachableError(
                self.device_id, self.label, f"no answer in {self._connect_timeout:g}s"
            ) from err
        except OSError as err:
            if sock is not None:
                sock.close()
            raise DeviceUnreachableError(self.device_id, self.label, f"cannot connect: {err.strerror or err}") from err
        self._sock = sock

    def write(self, data: bytes) -> None:
        sock = self._connected()
        # The timeout applies per send() call, so it bounds a stall, not the whole job: a slow
        # printer taking a large image a little at a time is fine, one that takes nothing is not.
        sock.settimeout(self._write_timeout)
        view = memoryview(data)
        try:
            while view:
                view = view[sock.send(view) :]
        except TimeoutError as err:
            raise DeviceWriteError(self.device_id, self.label, f"took no data for {self._write_timeout:g}s") from err
        except OSError as err:
            raise DeviceWriteError(self.device_id, self.label, f"write failed: {err.strerror or err}") from err

    def read(self, n: int, timeout: float) -> bytes:
        sock = self._connected()
        sock.settimeout(timeout)
        try:
            data = sock.recv(n)
        except TimeoutError:
            return b""
        except OSError as err:
            raise DeviceWriteError(self.device_id, self.label, f"connection lost: {err.strerror or err}") from err
        if not data:
            raise DeviceWriteError(self.device_id, self.label, "closed the connection")
        return data

    def close(self) -> None:
        if self._sock is None:
            return
        try:
            self._sock.close()
        except OSError:
            pass
        self._sock = None

    def _connected(self) -> socket.socket:
        if self._sock is None:
            raise DeviceWriteError(self.device_id, self.label, "connection is not open")
        return self._sock
