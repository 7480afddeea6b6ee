"""TcpTransport against real loopback sockets."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.transports import End, TcpTransport


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def test_round_trip(listener: socket.socket) -> None:
    """Bytes written arrive whole; read returns what the peer sent, b"" when it sends nothing in time."""
    port = listener.getsockname()[1]
    transport = TcpTransport("bar", "127.0.0.1", port)
    transport.open()
    peer, _ = listener.accept()
    with peer:
        data = bytes(range(256)) * 64
        transport.write(data)
        got = b""
        peer.settimeout(5)
        while len(got) < len(data):
            got += peer.recv(65536)
        assert got == data
        started = time.monotonic()
        assert transport.read(1, 0.1) == b""
        assert time.monotonic() - started < 1
        peer.sendall(b"\x16")
        assert transport.read(1, 2) == b"\x16"
    transport.close()
    transport.close()


def test_refused_is_unreachable() -> None:
    """Nothing listening: DeviceUnreachableError naming the device and address."""
    port = free_port()
    transport = TcpTransport("bar", "127.0.0.1", port, connect_timeout=0.5)
    with pytest.raises(DeviceUnreachableError) as caught:
        transport.open()
    assert caught.value.device_id == "bar"
    assert caught.value.transport == f"tcp 127.0.0.1:{port}"
    assert "refused" in str(caught.value)


def test_unanswered_connect_is_unreachable_within_timeout() -> None:
    """A printer that never answers the connect fails after connect_timeout, not the OS's minutes."""
    with socket.socket() as server:
        # A full accept backlog makes the kernel drop further SYNs: a connect that is never answered.
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(server.getsockname())
            fillers.append(filler)
        time.sleep(0.05)
        transport = TcpTransport("bar", *server.getsockname(), connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(DeviceUnreachableError, match=r"no answer in 0\.3s"):
            transport.open()
        assert time.monotonic() - started < 2
        for filler in fillers:
            filler.close()


def test_peer_hangup_is_write_error(listener: socket.socket) -> None:
    """A peer that closes makes read() raise DeviceWriteError, not return b"" as if silent."""
    transport = TcpTransport("bar", "127.0.0.1", listener.getsockname()[1])
    transport.open()
    peer, _ = listener.accept()
    peer.close()
    with pytest.raises(DeviceWriteError):
        transport.read(1, 2)
    transport.close()


@pytest.mark.parametrize("printer", ["reads_and_closes", "resets_unread", "keeps_it_open"])
def test_finish_tells_a_printer_that_read_everything_from_one_that_dropped_it(
    listener: socket.socket, printer: str
) -> None:
    """After a job sent blind, finish() half-closes and waits for the printer's own end: an end after reading every
    byte is CLOSED; a reset at the host's end (a TCP closing with bytes unread, RFC 1122 4.2.2.13) is RESET, though
    write() had succeeded; a printer that keeps the connection open is OPEN."""
    transport = TcpTransport("bar", "127.0.0.1", listener.getsockname()[1])
    transport.open()
    peer, _ = listener.accept()
    got = bytearray()

    def serve() -> None:
        peer.settimeout(5)
        while chunk := peer.recv(65536):  # to the host's end: its half-close
            got.extend(chunk)
        if printer == "resets_unread":
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if printer != "keeps_it_open":
            peer.close()

    server = threading.Thread(target=serve)
    server.start()
    transport.write(b"\x1b@ticket\n" * 100)
    expected = {"reads_and_closes": End.CLOSED, "resets_unread": End.RESET, "keeps_it_open": End.OPEN}[printer]
    assert transport.finish(0.3 if printer == "keeps_it_open" else 2) is expected
    server.join(5)
    assert len(got) == 900
    transport.close()
    peer.close()


def test_finish_on_a_connection_the_printer_reset_already_is_a_reset(listener: socket.socket) -> None:
    """A printer that reads the job and resets before the host's half-close (an instant one that aborts): the
    half-close meets a connection gone, and that is RESET too, not a write error counted as a dropped ticket."""
    transport = TcpTransport("bar", "127.0.0.1", listener.getsockname()[1])
    transport.open()
    peer, _ = listener.accept()
    transport.write(b"\x1b@ticket\n" * 100)
    peer.settimeout(5)
    got = b""
    while len(got) < 900:
        got += peer.recv(65536)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    time.sleep(0.05)  # the reset is in
    assert transport.finish(2) is End.RESET
    transport.close()


def test_write_to_reset_connection_is_write_error(listener: socket.socket) -> None:
    """Writing after the peer reset the connection raises DeviceWriteError."""
    transport = TcpTransport("bar", "127.0.0.1", listener.getsockname()[1])
    transport.open()
    peer, _ = listener.accept()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    peer.close()
    time.sleep(0.05)
    with pytest.raises(DeviceWriteError):
        for _ in range(10):
            transport.write(b"x" * 65536)
    transport.close()


def test_stalled_printer_is_write_error(listener: socket.socket) -> None:
    """A peer that takes no data makes write() fail after write_timeout instead of hanging."""
    transport = TcpTransport("bar", "127.0.0.1", listener.getsockname()[1], write_timeout=0.3)
    transport.open()
    peer, _ = listener.accept()
    with peer:
        started = time.monotonic()
        with pytest.raises(DeviceWriteError, match=r"took no data for 0\.3s"):
            transport.write(b"x" * 64 * 1024 * 1024)
        assert time.monotonic() - started < 5
    transport.close()


@contextlib.contextmanager
def small_window_printer(write_timeout: float = 0.6) -> Iterator[tuple[TcpTransport, socket.socket]]:
    """A transport connected to a peer whose receive buffer, like a printer's, is 4 KB."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted connection
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        transport = TcpTransport("bar", "127.0.0.1", server.getsockname()[1], write_timeout=write_timeout)
        transport.open()
        peer, _ = server.accept()
        with peer:
            try:
                yield transport, peer
            finally:
                transport.close()


def test_a_printer_that_stops_taking_what_waits_in_this_box_is_a_stall_seen_by_a_read_and_reset() -> None:
    """A printer's window is its few KB of buffer: a job longer than that waits partly in this box's socket, where
    send() no longer sees it. A read while none of it is taken for write_timeout fails like a stalled send(), and the
    connection is reset so the rest never reaches the printer."""
    with small_window_printer() as (transport, peer):
        transport.write(b"x" * 60_000)  # in the socket's buffer: send() returns
        started = time.monotonic()
        with pytest.raises(DeviceWriteError, match=r"took no data for 0\.6s"):
            transport.read(1, timeout=10)
        assert time.monotonic() - started < 3
        transport.close()
        peer.settimeout(5)
        received = 0
        with pytest.raises(ConnectionResetError):
            while chunk := peer.recv(65536):
                received += len(chunk)
        assert received < 60_000


@pytest.mark.parametrize(
    ("write_timeout", "pause_s"),
    [(0.6, 0.2), (2.0, 0.5)],
    ids=["steadily", "with-pauses-shorter-than-write_timeout"],
)
def test_a_printer_that_takes_slowly_is_no_stall(write_timeout: float, pause_s: float) -> None:
    """Taking a little at a time, as a slow printer frees its buffer line by line, is progress: the read just waits;
    so is a pause shorter than write_timeout (a cut, a logo), even when a look at what was taken falls into it.
    (TCP shows what a peer took when its window opens by half its buffer or a segment: here every 4 KB, a second.)"""
    with small_window_printer(write_timeout) as (transport, peer):
        transport.write(b"x" * 40_000)

        def printing() -> None:  # 2 KB a pause, for longer than the read below waits
            for _ in range(int(3 / pause_s) + 1):
                peer.recv(2048)
                time.sleep(pause_s)

        reader = threading.Thread(target=printing)
        reader.start()
        try:
            assert transport.read(1, timeout=2.5) == b""  # write_timeouts long: no stall, just no reply
        finally:
            reader.join()


def test_a_printer_that_has_taken_everything_may_answer_later_than_write_timeout() -> None:
    """Nothing waits in this box: a reply that takes longer (a slow printer printing what it holds) is no stall."""
    with small_window_printer() as (transport, peer):
        transport.write(b"x" * 1_000)
        assert peer.recv(2048)
        assert transport.read(1, timeout=3.0) == b""  # five write_timeouts
