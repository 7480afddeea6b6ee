"""Raw TCP to a network device, like an ESC/POS printer on port 9100."""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
import termios
import time

from edge.dns import Addresses, lookup, unresolved
from edge.errors import DeviceStalledError, DeviceUnreachableError, DeviceWriteError
from edge.transports.end import End

# While a read waits, whether the printer still takes what was written is looked at this often.
_TAKEN_CHECK_S = 0.5
# Cheap single-socket interface boards listen again only a moment after a connection ends, and refuse new ones
# meanwhile (mike42/escpos-php#485, DantSu/ESCPOS-ThermalPrinter-Android#478; the netprint73 probe saw 0.05-1 s): a
# connection refused this soon after the last one to the address ended is tried again this often until then. A printer
# switched off refuses for longer, and is unreachable that much later at most.
_REFUSED_AFTER_CLOSE_S = 2.0
_REFUSED_RETRY_S = 0.1
# When the last connection to each address ended (monotonic): one printer set up under two names has two transports.
_last_closed: dict[tuple[str, int], float] = {}


class TcpTransport:
    """Blocking socket; a failed connect is "unreachable", any failure after it is a write error.

    A printer's TCP window is about its receive buffer (a few KB); what it cannot take yet waits in this box's socket
    buffer, where send() has put it and no longer sees it. A printer stopped at paper end takes no more: a long
    ticket's rest waits here, and status queries behind it. So a read also watches the bytes the printer has
    acknowledged: none for write_timeout while some wait is the same stall as a send() that waits that long. A
    connection given up on in a stall is reset, so what still waits here is dropped rather than printed, unmarked,
    after a new roll.
    """

    can_read = True
    line_bytes_per_s: float | None = None
    # A printer that loses power sends nothing, neither a reset nor a close: its connection only goes silent, and
    # writes still land in the socket's buffer.
    vanishes_silently = True
    # A network interface serves one host at a time and keeps the others' connections waiting, unanswered (Epson's
    # UB-E02: "Data transmission is blocked for other requests until the first connection is closed").
    silent = "takes the connection but answers nothing: another device (the till?) may be printing on it"
    # Answers like no printer (text: a web server's error page): after a power cut the router may give the printer a
    # new address and its old one to another device that takes port 9100 (an office laser's JetDirect port, a PC).
    not_a_printer = (
        "it accepts connections but never answers like a printer: check the printer's address (after a power cut it"
        " may have a new one, and another device this one)"
    )
    # Never answered though the model does: another device on its address, or the till holding it
    never_answered = f"{not_a_printer}, or the till may hold it"
    # After a stalled ticket's reset: lost in a network that dropped everything at that moment, it never reached the
    # printer, whose interface then keeps the dead connection and serves no other until its own time-out (Epson's
    # UB-E02: 5 minutes without data, Technical Reference Guide 4.6; the power83 probe, F2)
    stall_held = (
        "or the network dropped while the ticket was sent: the printer may still hold that connection and serve no"
        " other until it frees it (about 5 minutes without data), or until it is switched off and on"
    )

    def __init__(
        self, device_id: str, host: str, port: int, *, connect_timeout: float = 3.0, write_timeout: float = 10.0
    ) -> None:
        self.device_id = device_id
        self.label = self.device = f"tcp {host}:{port}"
        self._address = (host, port)
        self._connect_timeout = connect_timeout
        self._write_timeout = write_timeout
        self._sock: socket.socket | None = None
        self._sent = 0  # bytes send() took on this connection
        self._taken = 0  # of those, what the device has acknowledged, when last looked at
        self._taken_at = 0.0  # when it last took some (or had all), monotonic
        self._stalled = False  # given up on: closed with a reset

    def open(self) -> None:
        """A printer by name is looked up at each connection (DHCP may have moved it), the lookup within
        connect_timeout like the connect after it: a DNS server that does not answer would hold the printer's thread,
        and a stop, for as long as the resolver waits (10-30 s)."""
        self.close()
        host, port = self._address
        try:
            addresses = lookup(host, port, self._connect_timeout)
        except OSError as err:
            why = unresolved(err, host) or f"cannot connect: {err.strerror or err}"
            raise DeviceUnreachableError(self.device_id, self.label, why) from err
        sock = None
        try:
            sock = self._connect(addresses)
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
        self._sent = self._taken = 0
        self._taken_at, self._stalled = time.monotonic(), False

    def _connect(self, addresses: Addresses) -> socket.socket:
        """A connection; one refused within _REFUSED_AFTER_CLOSE_S of the last one's end is tried again until then."""
        until = _last_closed.get(self._address, 0.0) + _REFUSED_AFTER_CLOSE_S
        while True:
            try:
                return self._connect_to(addresses)
            except ConnectionRefusedError:
                left = until - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(left, _REFUSED_RETRY_S))

    def _connect_to(self, addresses: Addresses) -> socket.socket:
        """To the first of ``addresses`` that takes the connection, each given connect_timeout (as
        socket.create_connection, which would look the name up again, unbounded); the first one's error if none does."""
        failed: OSError | None = None
        for family, kind, proto, _, where in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._connect_timeout)
                sock.connect(where)
            except OSError as err:
                sock.close()
                failed = failed or err
            else:
                return sock
        raise failed or OSError(f"no address for {self._address[0]}")

    def write(self, data: bytes) -> None:
        sock = self._connected()
        # The timeout applies per send() call, so it bounds a stall, not the whole job: a slow
        # printer taking a large image a little at a time is fine, one that takes nothing is not.
        sock.settimeout(self._write_timeout)
        self._look_taken(sock)  # a device that had everything starts its time for these bytes now
        view = memoryview(data)
        try:
            while view:
                sent = sock.send(view)
                self._sent += sent
                view = view[sent:]
        except TimeoutError as err:
            raise self._stall() from err
        except OSError as err:
            raise DeviceWriteError(self.device_id, self.label, f"write failed: {err.strerror or err}") from err

    def read(self, n: int, timeout: float) -> bytes:
        data = self._receive(n, timeout)
        if data is None:
            return b""
        if not data:
            raise DeviceWriteError(self.device_id, self.label, "closed the connection")
        return data

    def finish(self, timeout: float) -> End:
        """A half-close, then the printer's own end waited for, as CUPS's socket backend waits for a printer "to
        finish" after a job: a TCP that closes with data unread resets instead (RFC 1122 4.2.2.13), so CLOSED means it
        read every byte; RESET may mean it dropped them (a host that had closed its side never sees that reset), or be
        how its interface ends every connection (an abortive close)."""
        sock = self._connected()
        deadline = time.monotonic() + timeout
        try:
            sock.shutdown(socket.SHUT_WR)
            while (data := self._receive(4096, deadline - time.monotonic())) is not None:
                if not data:
                    return End.CLOSED
        except DeviceWriteError as err:
            if isinstance(err.__cause__, ConnectionResetError):
                return End.RESET
            raise
        except OSError as err:  # the half-close on a connection the printer has reset already
            if err.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE):
                return End.RESET
            raise DeviceWriteError(self.device_id, self.label, f"connection lost: {err.strerror or err}") from err
        return End.OPEN

    def _receive(self, n: int, timeout: float) -> bytes | None:
        """Up to ``n`` bytes; b"" once the device closed its end, None if nothing came within ``timeout``."""
        sock = self._connected()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            sock.settimeout(max(min(left, _TAKEN_CHECK_S), 0.001))
            try:
                return sock.recv(n)
            except TimeoutError:
                if left <= _TAKEN_CHECK_S:
                    return None
                if not self._look_taken(sock) and time.monotonic() - self._taken_at >= self._write_timeout:
                    raise self._stall() from None
            except OSError as err:
                raise DeviceWriteError(self.device_id, self.label, f"connection lost: {err.strerror or err}") from err

    def holding_back(self) -> bool:
        """Whether bytes written still wait in this box for the device to take them: a printer whose buffer is full
        reads no more until it has printed some, and a status query written after them reaches it only then."""
        if self._sock is None:
            return False
        try:
            return struct.unpack("i", fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] > 0
        except OSError:
            return False  # cannot tell: the query is taken for arrived, as before

    def close(self) -> None:
        if self._sock is None:
            return
        try:
            if self._stalled:  # a reset: the kernel drops what still waits instead of sending it once the device reads
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._sock.close()
        except OSError:
            pass
        self._sock = None
        _last_closed[self._address] = time.monotonic()

    def _look_taken(self, sock: socket.socket) -> bool:
        """Whether the device took some of what was written since last looked at, or has it all."""
        try:
            waiting = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return True  # cannot tell: no stall is claimed
        taken = self._sent - waiting
        if taken > self._taken or waiting == 0:
            self._taken, self._taken_at = taken, time.monotonic()
            return True
        return False

    def _stall(self) -> DeviceStalledError:
        self._stalled = True
        return DeviceStalledError(
            self.device_id,
            self.label,
            f"took no data for {self._write_timeout:g}s: a printer switched off, or stopped in a ticket (paper out,"
            " cover open, an error), takes no more, and cannot be asked why while its buffer is full",
        )

    def _connected(self) -> socket.socket:
        if self._sock is None:
            raise DeviceWriteError(self.device_id, self.label, "connection is not open")
        return self._sock
