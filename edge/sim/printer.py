"""Simulated ESC/POS printers on a local port or a pseudo-terminal: record jobs, answer DLE EOT, can be unplugged, run
dry or slowed down.

Modelled on Epson's ESC/POS command reference ("DLE EOT n: transmit real-time status", TM-T88/TM-T20 series):
DLE EOT is processed in real time, also while the printer is offline with paper out or the cover open; n=1
bit 3 is "offline", n=2 bit 2 "cover open", bit 5 "printing stopped at paper end", bit 6 "error", n=4 bits 5
and 6 "roll paper end". When paper runs out or the cover opens in the middle of a job, printing stops there:
what was printed before stays on paper, the job bytes received after it are not printed (when a new roll goes
in, the printer does not pick the job up again), and the printer answers the status queries that follow.

DLE EOT is answered when it arrives, ahead of what is still in the receive buffer: with a speed model a printer
takes a ticket into its buffer (4 KB, the TM-T88V's default) at once and prints it line by line, so a reply right
after the ticket says nothing of paper that runs out while it prints (a fault fires at its byte as it prints).
GS r n (transmit status) is processed in order, after every byte before it, and not at all while the printer is
stopped at paper end or with the cover open ("does not execute this command"): its reply means the ticket is out.

When paper runs out (or the cover opens) in the middle of a buffered job, an Epson goes on with the rest of it once a
new roll is in and the cover is closed (``resumes``; by default this simulator drops it). The host can clear the
receive and print buffers meanwhile with DLE DC4 fn=8 (real time: "Clears all data stored in the receive buffer and the
print buffer and transmits Clear response", 37H 25H 00H; Epson's ESC/POS reference, TM-T88IV and later, TM-T20,
TM-U220; Citizen's CT-S300 manual the same). The buffers are the printer's, not a connection's: what a host sent
before it hung up (or died) stays in them while the next connection is served, and a clear sent on that one drops it.

One host at a time (Epson's UB-E02 Ethernet interface, Technical Reference Guide 4.5 "The Priorities of Printing": it
"permits up to 3 requests of connecting [...] Data transmission is blocked for other requests until the first
connection is closed"): a second connection, e.g. the store's till printing on the same kitchen printer, is accepted
but nothing on it is read or answered, DLE EOT included, until the first one closes; a fourth is refused.
A connection holds its place until what it sent has printed ("Number of connections that can print: 1 (other users
wait until done)", TRG 5.5.2); one that sent only status questions (DLE EOT, answered on arrival) put nothing in the
16 KB buffer from host to printer (TRG 4.1.1) and ends when its host hangs up, also while the mechanism is stopped at
paper end with another connection's job (before stop 82 it waited for that job: three status questions filled the
board, the failover82 probe's F2).

Automatic Status Back (``asb``; Epson's GS a, often left on by a POS driver or set by memory switch): the printer
also sends four status bytes by itself, here when a connection opens and whenever its status changes. Their fixed
bits tell them apart from DLE EOT replies (Citizen CT-S310 manual, 5.3 "Identification of Send Status": DLE EOT
<0**1**10>, ASB first byte <0**1**00>, its second to fourth <0**0****>, XON/XOFF <0001 0001>/<0001 0011>).

A link that stalls (``stalls``): what the printer sends back is held up for a while, then arrives whole and in order,
as TCP delivers it after a lost segment is sent again (RFC 6298: the retransmission timeout starts at 1 s and doubles
each time; a Wi-Fi printer or a busy interface board loses one now and then). Nothing is lost; replies are late.

A link that is slow for good (``reply_delay_s``): everything the printer sends back arrives that many seconds after it
was sent, whole and in order, every reply alike: a Wi-Fi bridge on a weak link, or an Ethernet-to-USB print server
that polls its USB printer's status only every second or two and passes the answers on then (the real71b probe
measured this with a delaying proxy in front of a printer: every DLE EOT and GS r reply 2-3 s late).

A board that needs a moment after each connection (``refuse_after_close_s``): cheap single-socket network interfaces
listen again only a while after the last connection ended, and refuse new ones meanwhile (mike42/escpos-php#485: "the
printer is refusing your connection sometimes, maybe it's busy"; DantSu/ESCPOS-ThermalPrinter-Android#478: printing
twice in quick succession fails). What they took before they stopped listening is served.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import socket
import struct
import tty
from collections.abc import Callable
from pathlib import Path

import structlog

from edge.sim.ports import PortHold, free_port

log = structlog.get_logger()

_DLE_EOT = b"\x10\x04"
_DLE_ENQ = b"\x10\x05"
_GS_R = b"\x1dr"
_CLEAR = b"\x10\x14\x08\x01\x03\x14\x01\x06\x02\x08"  # DLE DC4 fn=8: clear the buffers
_CLEARED = b"\x37\x25\x00"  # its Clear response
_QUERIES = (1, 2, 3, 4)
_BUFFER = 4096  # receive buffer: a printer stops reading (and TCP pushes back) when this much waits to print
_RESET_LOOK_S = 0.2  # how often a connection whose buffer is full is looked at for a reset from its host
_TCP_CLOSE = 7  # tcpi_state (linux/tcp_states.h) of a connection the peer reset
_CHUNK = 4096
# Small stream buffers so a slow printer pushes back on the sender over TCP, as a real one does.
_STREAM_LIMIT = 4096
_SLOW_TICK_S = 0.05  # a slow printer takes bytes_per_s * this at a time
_CONNECTIONS = 3  # open at once: one served, the others wait their turn


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaperSpeed:
    """How long paper takes to come out, like an 80 mm thermal printer: Epson's TM-T88V prints up to 300 mm/s and the
    TM-T20II 200 mm/s (their spec sheets); a line is ESC/POS' default line spacing, 1/6 inch (ESC 2), a QR code or
    barcode about 25 mm, and a cut feeds the paper past the cutter first (about 15 mm on the TM-T88V)."""

    mm_per_s: float = 250.0
    line_mm: float = 25.4 / 6
    code_mm: float = 25.0
    cut_mm: float = 15.0

    def seconds(self, job: bytes) -> float:
        lines = job.count(b"\n")
        codes = job.count(b"\x1d(k\x03\x001Q0") + job.count(b"\x1dk")  # QR print (fn 81), barcode (GS k)
        cuts = job.count(b"\x1dV")
        return (lines * self.line_mm + codes * self.code_mm + cuts * self.cut_mm) / self.mm_per_s


class SimPrinter:
    """Behaves like a printer on TCP 9100. Flags can be changed at any time; they apply from the next byte."""

    def __init__(
        self,
        name: str = "sim",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        out_dir: Path | None = None,
        speed: PaperSpeed | None = None,
    ) -> None:
        """``speed``: paper comes out this fast, so a backlog takes as long as on a real printer (None: instantly, as
        unit tests want). Bytes wait in a 4 KB receive buffer for their turn at the paper; DLE EOT is answered at once,
        also meanwhile, GS r when its turn comes."""
        self.name = name
        self.speed = speed
        self.host = host
        self.port = port
        self.out_dir = out_dir
        self.paper_out = False  # answers "paper out"; takes job bytes but prints nothing
        self.cover_open = False  # answers "cover open"; prints nothing
        self.paper_near_end = False  # answers "near end"; still prints
        # A person holds the FEED button: offline while the paper feeds, and it says why (Epson ESC/POS reference,
        # DLE EOT: n=1 bit 3 offline and bit 6 "paper feed button is being pressed", n=2 bit 3 "paper is being fed by
        # the paper feed button"; download4.epson.biz/sec_pubs/pos/reference_en/escpos/dle_eot.html). Only the replies
        # change: the agent sends no job while it says so.
        self.feed_button = False
        self.answer_status = True  # False: ignores DLE EOT and GS r, as some models and one-way print servers do
        self.answer_in_order = True  # False: answers DLE EOT but ignores GS r, as a few clones do
        # False: a host's reset never reaches it (lost in a network that dropped everything at that moment), so a
        # connection it stopped reading (its buffer full) stays its own while it is stopped
        self.hears_resets = True
        self.ignored: set[int] = set()  # DLE EOT n it never answers, all others it does (a clone's partial command set)
        # Every DLE EOT answered with this byte instead (None: its status): one that is not a status reply (0xFF, or
        # the fixed bits wrong), as from firmware or a model whose replies are not ESC/POS's
        self.status_byte: int | None = None
        # True: answers GS r also while stopped, with the paper end bits set (some clones: "returns 0F when out of
        # paper", a Chinese vendor's GS r 1 note); an Epson does not answer it then.
        self.in_order_when_stopped = False
        self.asb = False  # True: Automatic Status Back, four bytes unasked on connecting and on each status change
        # True (with a speed model): after a fault mid-job the printer waits, and prints the rest of the job once the
        # fault clears (Epson), unless the host cleared its buffers meanwhile; False: the rest is lost
        self.resumes = False
        self.cleared = 0  # DLE DC4 fn=8 (clear buffers) received
        # An auto-cutter jam: stopped in error (DLE EOT 3 bit 3, "waiting for online recovery"), prints nothing. Once
        # a person has pulled the paper out of the cutter (cutter_jammed False), DLE ENQ 1 or 2 takes it out of the
        # error (Epson's TM-T88III specification: "it is possible to recover by correcting the cause of the error and
        # executing DLE ENQ n"; the same in Bixolon's, Citizen's and HPRT's manuals), as a power cycle does.
        self.cutter_error = False
        self.cutter_jammed = False
        self.recoveries = 0  # DLE ENQ 1/2 received
        self.bytes_per_s: float | None = None  # reads no faster than this
        self.drop_after: int | None = None  # hangs up after this many job bytes on a connection; fires once
        # Hangs up after this many job bytes on every connection: a failing interface board or a loose network jack
        # that resets each connection mid-ticket, while status queries (a few bytes) still get through
        self.drop_every_job_after: int | None = None
        # Hangs up when a job's bytes come to this text (a ticket its firmware chokes on), printing the others
        self.drop_job_containing: bytes | None = None
        # Paper runs out / the cover opens after this many job bytes of a job (connection); each fires once.
        self.paper_out_after: int | None = None
        self.cover_open_after: int | None = None
        # The plug pulled after this many job bytes of a job (fires once): see power_off().
        self.power_off_after: int | None = None
        self.powered = True
        self._power_back = asyncio.Event()
        self._power_cuts = 0  # power_off() calls: a connection from before the last one is unknown to it once back
        # {k: s}: the link stalls for s seconds at the reply to the k-th DLE EOT query (counted as status_asked): that
        # reply and everything sent after it on that connection arrive s seconds late, in order
        self.stalls: dict[int, float] = {}
        # Every byte sent back arrives this many seconds late, in order (a slow bridge); from the next byte sent
        self.reply_delay_s = 0.0
        # A person puts a new roll in right after the printer answered the next DLE EOT 1 (fires once): each reply is
        # that instant's state, so a host asking 1, 2, 4 reads "offline" and then no cause for it.
        self.paper_back_after_query_1 = False
        self.jobs: list[bytes] = []  # job bytes of each connection that carried any, status queries removed
        self.dropped: list[int] = []  # indexes into jobs of connections the printer cut short
        self.printed: list[bytes] = []  # what came out on paper
        self.status_queries = 0  # DLE EOT queries answered
        self.status_asked = 0  # DLE EOT queries received, answered or not
        self.in_order_asked = 0  # GS r queries processed, answered or not
        self.in_order_answered = 0  # GS r queries answered (each after the bytes before it were processed)
        self.job_bytes_in = 0  # job bytes received so far over every connection, a job still coming in included
        self._sock: socket.socket | None = None
        self._port = PortHold()  # the port, while the printer is off
        self._connections: set[asyncio.Task[None]] = set()
        self._printed_more = asyncio.Event()
        self._mechanism = asyncio.Lock()  # one job's paper at a time, whichever connection brought it
        self._host = asyncio.Lock()  # the connection being served; the others wait, accepted (UB-E02: up to 3)
        self._feeds: set[_Feed] = set()  # what each connection sent, while it is in the printer's buffers
        self._full = False  # that many are open: the listener is closed, so the next connection is refused
        # After each connection ends, new ones are refused this long (a single-socket board's moment to listen again)
        self.refuse_after_close_s = 0.0
        # The next this many connections are reset once their host has sent everything, none of it read: an
        # interface that took a connection it could not serve (a listener closed with connections in its queue
        # does the same). A TCP that closes with data unread resets (RFC 1122 4.2.2.13, RFC 2525 2.17): the host
        # that had already closed its side never sees it, the bytes were in the kernel, never in the printer.
        self.reset_unread = 0
        # True: once the host has sent its job and ended its side, the interface ends the connection with the job in
        # the printer's buffer, before it is on paper (many network interfaces; the rename75 probe's model). False:
        # only once it is printed (CUPS's socket backend waits for that: "waiting for printer to finish").
        self.closes_when_taken = False
        # True: it ends every connection with a reset, having read and printed all of it (an embedded stack that
        # aborts rather than closes: lwIP's tcp_abort, a socket with SO_LINGER 0; the blind75 probe's model).
        self.resets_at_end = False
        self.reset_connections = 0  # connections reset that way
        self._relisten: asyncio.TimerHandle | None = None  # the end of that moment
        self._unplugged = False  # set_offline(True): its cable out

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        self._listen()

    async def stop(self) -> None:
        self._unplug()
        self._port.release()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def set_offline(self, offline: bool) -> None:
        """Offline is the power pulled: open connections are cut and new ones refused. Back online on the same port,
        which stays ours meanwhile, as a real printer keeps its address while off."""
        self._unplugged = offline
        if offline:
            self._unplug()
        elif self._sock is None and self.powered:
            self._listen()

    def move(self) -> None:
        """Another address (a DHCP lease renewed to a new one): it listens on a new port and what it holds still prints,
        as a printer's buffers do not depend on its interface's address. One that is off (its power, its cable) answers
        there only once it is on again (the chaos77 probe, R1: it took connections while off)."""
        self._stop_listening()
        self._port.release()
        self.port = free_port()
        if self.powered and not self._unplugged:
            self._listen()
        else:
            self._port.hold(self.host, self.port)

    def power_off(self) -> None:
        """The plug pulled (a breaker, a cook's elbow): nothing more prints or answers, and a device without power sends
        nothing either, so open connections go silent (no FIN, no reset: the sender's writes still land in its own
        buffers) and new ones are refused. Unlike set_offline, which resets them as a printer failing mid-job does."""
        self.powered = False
        self._power_cuts += 1
        self._power_back.clear()
        self._full = False
        self._cancel_relisten()
        self._stop_listening()
        for feed in self._feeds:  # with its memory: what waited in the buffers never prints
            feed.lose()

    def power_on(self) -> None:
        """Power back: a rebooted device resets the connections it no longer knows; it listens again."""
        self.powered = True
        self._power_back.set()
        if self._sock is None and not self._unplugged:
            self._listen()

    async def wait_for_printed(self, count: int, timeout: float = 10.0) -> list[bytes]:  # noqa: ASYNC109 (tests' helper)
        try:
            async with asyncio.timeout(timeout):
                while len(self.printed) < count:
                    self._printed_more.clear()
                    await self._printed_more.wait()
        except TimeoutError:
            raise TimeoutError(
                f"sim printer {self.name}: {len(self.printed)} of {count} jobs printed after {timeout:g}s"
            ) from None
        return list(self.printed)

    def _listen(self) -> None:
        # A plain listening socket rather than start_server: listening and closing are then
        # synchronous, so set_offline() takes effect before the caller's next line.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # A printer's TCP window is about its receive buffer, not a PC's autotuned megabytes: what it cannot take
        # waits in the sender's socket (the connections inherit this from the listener, window scaling included).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        sock.bind((self.host, self.port))
        sock.listen(16)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        asyncio.get_running_loop().add_reader(sock, self._accept)
        self._sock = sock
        self._port.release()  # listening now

    def _unplug(self) -> None:
        """Not listening (the port held) and every connection cut."""
        self._full = False  # the connections cut below must not open the listener again
        self._cancel_relisten()
        self._stop_listening()
        for task in self._connections:
            task.cancel()

    def _stop_listening(self) -> None:
        """New connections refused, open ones kept; the port stays ours."""
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock)
            self._sock.close()
            self._sock = None
            self._port.hold(self.host, self.port)

    def _accept(self) -> None:
        assert self._sock is not None  # the reader is removed before the socket goes
        while conn := self._accepted():
            self._start_serving(conn)
            if len(self._connections) >= _CONNECTIONS:  # the next one is refused until one of these ends
                # A real interface refuses at connect time; the kernel's backlog here has already taken more for
                # us, and their clients may have written and closed: they are served, never reset unread.
                while late := self._accepted():
                    self._start_serving(late)
                self._full = True
                self._stop_listening()
                return

    def _accepted(self) -> socket.socket | None:
        assert self._sock is not None
        try:
            return self._sock.accept()[0]
        except (BlockingIOError, InterruptedError):
            return None

    def _start_serving(self, conn: socket.socket) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(conn))
        self._connections.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._connections.discard(task)
        if self.refuse_after_close_s and (self._sock is not None or self._full or self._relisten is not None):
            if self._sock is not None:  # what the kernel took already was taken: served, as at _CONNECTIONS
                while late := self._accepted():
                    self._start_serving(late)
            self._full = False
            self._stop_listening()
            self._cancel_relisten()
            self._relisten = asyncio.get_running_loop().call_later(self.refuse_after_close_s, self._listen_again)
        elif self._full and len(self._connections) < _CONNECTIONS:
            self._full = False
            self._listen()

    def _listen_again(self) -> None:
        """The moment after a connection is over: listening again, unless it is full meanwhile."""
        self._relisten = None
        if self._sock is not None:
            return
        if len(self._connections) >= _CONNECTIONS:
            self._full = True
        else:
            self._listen()

    def _cancel_relisten(self) -> None:
        if self._relisten is not None:
            self._relisten.cancel()
            self._relisten = None

    async def _serve(self, conn: socket.socket) -> None:
        if self.reset_unread and await self._brings_job(conn):
            self.reset_unread -= 1
            await self._reset_unread(conn)
            return
        reader, writer = await asyncio.open_connection(sock=conn, limit=_STREAM_LIMIT)
        try:
            async with contextlib.AsyncExitStack() as turn:
                await turn.enter_async_context(self._host)
                await self._serve_host(reader, writer, turn)
        finally:
            writer.close()

    @staticmethod
    async def _brings_job(conn: socket.socket) -> bool:
        """Whether the connection's first byte starts a job (ESC @), not a status query; looked at, not taken."""
        conn.setblocking(False)
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(conn, readable.set)
        try:
            await readable.wait()
        finally:
            loop.remove_reader(conn)
        try:
            return conn.recv(1, socket.MSG_PEEK) == b"\x1b"
        except OSError:
            return False

    async def _reset_unread(self, conn: socket.socket) -> None:
        """The host's bytes up to its end go nowhere, then a reset: only then is it unseen by a host that does not
        wait for the printer's own end."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while await loop.sock_recv(conn, _CHUNK):
                pass
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self.reset_connections += 1

    async def _serve_host(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, turn: contextlib.AsyncExitStack
    ) -> None:
        """``turn``: this host's turn at the interface, over once it hangs up: the next connection is served while
        what this one sent still prints (and a clear sent on it drops that)."""
        link = _Link(writer, lambda: self.reply_delay_s)
        if self.asb:
            link.write(self._asb())
        feed = _Feed(self, link)
        self._feeds.add(feed)
        held = b""  # the start of a query split across reads
        cut = rebooted = False
        cuts = self._power_cuts
        try:
            while not cut:
                rate = self.bytes_per_s
                chunk = await reader.read(_CHUNK if rate is None else max(1, int(rate * _SLOW_TICK_S)))
                if self.powered and self._power_cuts != cuts:
                    # Switched off and on while this host sent nothing: the rebooted interface knows no such
                    # connection and answers what comes on it with a reset (RFC 793, "Reset Generation" 1)
                    cut = rebooted = True
                    break
                if not chunk:
                    if held:
                        await feed.put(held)
                    break
                parts, held = _split(held + chunk)
                for part in parts:
                    if not self.powered:
                        break
                    if isinstance(part, int):  # DLE EOT: real time, on arrival
                        reply = self._answer(part)
                        if stall := self.stalls.pop(self.status_asked, 0.0):
                            link.stall(stall)
                        link.write(reply)
                        continue
                    if isinstance(part, _Recover):  # real time as well
                        self._recover(part)
                        continue
                    if isinstance(part, _Clear):  # real time too: what waits to print is gone, whichever host sent it
                        self.cleared += 1
                        for buffered in self._feeds:
                            buffered.clear()
                        link.write(_CLEARED)
                        continue
                    if isinstance(part, bytes):
                        drop = self.drop_after if self.drop_after is not None else self.drop_every_job_after
                        if self.drop_job_containing and self.drop_job_containing in bytes(feed.received) + part:
                            drop = len(feed.received)
                        if drop is not None and len(feed.received) + len(part) >= drop:
                            part, cut = part[: drop - len(feed.received)], True
                            self.drop_after = None
                        self.job_bytes_in += len(part)
                    await feed.put(part)
                    if cut:
                        break
                if not self.powered:  # silent until the power is back, then this connection is reset
                    await self._power_back.wait()
                    cut = True
                    break
                if rate is not None:
                    await asyncio.sleep(len(chunk) / rate)
            await turn.aclose()
            if self.closes_when_taken and not cut:
                writer.close()
            await feed.finish()  # a printer prints its buffer, also after the host hangs up
        except ConnectionError:
            await turn.aclose()
            await feed.finish()  # the client reset the connection; a printer prints what it got
        except asyncio.CancelledError:
            cut = True  # unplugged or stopped
            feed.stop()
            raise
        finally:
            self._feeds.discard(feed)
            # Recorded before the connection goes, so a client that sees it close finds the job here.
            self._record(bytes(feed.job), cut=cut, on_paper=feed.on_paper, resumed=feed.resumed)
            if cut and not rebooted:
                writer.transport.abort()  # a reset, as from a printer that fails mid-job
            elif self.resets_at_end or rebooted:
                with contextlib.suppress(OSError):
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                writer.transport.abort()
            else:
                writer.close()

    def _recover(self, command: _Recover) -> None:
        self.recoveries += 1
        if self.cutter_error and not self.cutter_jammed:
            self.cutter_error = False
            if command.n == 2:
                for feed in self._feeds:
                    feed.clear()

    @property
    def halted(self) -> bool:
        """Stopped by a fault: no paper moves, GS r is not answered."""
        return self.paper_out or self.cover_open or self.cutter_error

    def _process(self, feed: _Feed, part: bytes | _InOrder) -> None:
        """What the printer does with a part when it gets to it: prints job bytes (a fault may stop it there), answers
        GS r unless stopped."""
        if isinstance(part, _InOrder):
            feed.link.write(self._answer(part))
            return
        was = self._asb()
        feed.on_paper = self._take(feed.job, part, feed.on_paper)
        if self.asb and self._asb() != was:
            feed.link.write(self._asb())

    def _answer(self, query: int | _InOrder) -> bytes:
        """The reply to DLE EOT n (``query`` is n) or to GS r, counted; b"" when the printer does not answer it."""
        if isinstance(query, int):
            self.status_asked += 1
            if not (self.answer_status and self.powered) or query in self.ignored:
                return b""
            self.status_queries += 1
            reply = bytes([self._reply(query) if self.status_byte is None else self.status_byte])
            if query == 1 and self.paper_back_after_query_1:
                self.paper_back_after_query_1 = self.paper_out = False
            return reply
        self.in_order_asked += 1
        stopped = self.halted or not self.powered
        if not (self.answer_status and self.answer_in_order and (not stopped or self.in_order_when_stopped)):
            return b""
        self.in_order_answered += 1
        return bytes([self._in_order_reply(query.n)])

    def _in_order_reply(self, n: int) -> int:
        """GS r 1 (paper sensors): bits 0-1 near end, 2-3 paper end; GS r 2 (drawer): 0. Fixed bits 4 and 7 clear."""
        return (0x03 if self.paper_near_end else 0) | (0x0C if self.paper_out else 0) if n in (1, 49) else 0

    def _take(self, job: bytearray, part: bytes, on_paper: int) -> int:
        """Append job bytes, fire a mid-job fault when its byte count is reached; returns how many printed."""
        if not self.powered:
            return on_paper
        if self.power_off_after is not None and len(job) + len(part) >= self.power_off_after:
            kept = max(0, self.power_off_after - len(job))  # what reached the head before the power went
            self.power_off_after = None
            printed = self._take(job, part[:kept], on_paper)
            self.power_off()
            return printed
        printing = on_paper == len(job)  # nothing was lost to a fault yet in this job
        for flag in ("paper_out", "cover_open"):
            after = getattr(self, f"{flag}_after")
            if after is not None and len(job) + len(part) >= after:
                setattr(self, f"{flag}_after", None)
                if printing and not (self.paper_out or self.cover_open):
                    on_paper = max(len(job), after)
                    printing = False
                setattr(self, flag, True)
        if printing and not self.halted:
            on_paper = len(job) + len(part)
        job += part
        return on_paper

    def _reply(self, n: int) -> int:
        """One status byte, Epson bit layout."""
        feeding = 0x48 if self.feed_button else 0  # n=1 bits 3 and 6
        if n == 1:  # bit 3: offline; bit 5: waiting for online recovery (after a recoverable error)
            return 0x16 | (0x08 if self.halted else 0) | (0x20 if self.cutter_error else 0) | feeding
        if n == 2:  # bit 3: paper fed by the FEED button; bit 6: an error
            return (
                0x12
                | (0x08 if self.feed_button else 0)
                | (0x04 if self.cover_open else 0)
                | (0x20 if self.paper_out else 0)
                | (0x40 if self.cutter_error else 0)
            )
        if n == 3:  # bit 3: auto-cutter error
            return 0x12 | (0x08 if self.cutter_error else 0)
        return 0x12 | (0x0C if self.paper_near_end else 0) | (0x60 if self.paper_out else 0)

    def _asb(self) -> bytes:
        """The four ASB bytes, Epson layout: offline (bit 3), cover open (bit 5) and paper fed by the FEED button
        (bit 6) in the first, roll paper end (bits 2 and 3) and near end (bits 0 and 1) in the third."""
        offline = self.halted or self.feed_button
        first = 0x10 | (0x08 if offline else 0) | (0x20 if self.cover_open else 0) | (0x40 if self.feed_button else 0)
        paper = (0x0C if self.paper_out else 0) | (0x03 if self.paper_near_end else 0)
        return bytes([first, 0x00, paper, 0x00])

    def _record(self, job: bytes, *, cut: bool, on_paper: int, resumed: bool = False) -> None:
        if not job:
            return
        self.jobs.append(job)
        if cut:
            self.dropped.append(len(self.jobs) - 1)
        # A printer prints what it got before a cut or a fault; with no paper, nothing. One that resumed after the
        # fault printed the rest on the new roll: a second piece of paper.
        pieces = [piece for piece in (job[:on_paper], job[on_paper:] if resumed else b"") if piece]
        for paper in pieces:
            self.printed.append(paper)
            if self.out_dir is not None:
                # A few KB on a simulator's loop; not worth a thread.
                self.out_dir.mkdir(parents=True, exist_ok=True)
                (self.out_dir / f"{self.name}-{len(self.printed):04d}.bin").write_bytes(paper)
            self._printed_more.set()
        log.info("sim_printer_job", name=self.name, bytes=len(job), printed=on_paper, resumed=resumed, cut=cut)


# An embedded web server's answer to bytes that are no HTTP request (lighttpd's, as the netprinter80 probe modelled it)
HTTP_400 = (
    b"HTTP/1.1 400 Bad Request\r\nServer: lighttpd/1.4.59\r\nContent-Type: text/html\r\nContent-Length: 26\r\n"
    b"Connection: close\r\n\r\n<h1>400 Bad Request</h1>\r\n"
)


class NotAPrinter:
    """Something else on a printer's old address: it accepts TCP 9100 and reads every byte, but answers nothing,
    neither DLE EOT nor GS r (an office laser's JetDirect raw port, a label printer, a PC with a 9100 listener). After
    a power cut the router may give the printer a new address and the old one to such a device. Given ``answer``, it
    answers the first bytes of each connection with it and closes the connection, as a web server on 9100 does with
    its error page (``HTTP_400``) and a telnet service with its banner."""

    def __init__(
        self, name: str = "not-a-printer", *, host: str = "127.0.0.1", port: int = 0, answer: bytes = b""
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.answer = answer
        self.received = bytearray()  # every byte of every connection
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(_CHUNK):
                self.received += data
                if self.answer:
                    writer.write(self.answer)
                    await writer.drain()
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()


class SimSerialPrinter(SimPrinter):
    """The same printer on a serial line: the far end of a pseudo-terminal pair; the agent opens ``device`` with
    pyserial.

    A serial line has no connections, so a job is the bytes between two status queries (the driver
    asks before and after every job) or up to ``stop()``.
    """

    def __init__(self, name: str = "sim-serial", *, out_dir: Path | None = None) -> None:
        super().__init__(name, out_dir=out_dir)
        # Switched off, the printer behind a USB-serial adapter neither answers nor prints, while the adapter still
        # takes every byte (no flow control): what is sent meanwhile is lost.
        self.powered = True
        self.off_after: int | None = None  # switched off after this many job bytes of a job; fires once
        self.device = ""
        self._master: int | None = None
        self._slave: int | None = None
        self._job = bytearray()
        self._held = b""
        self._on_paper = 0

    async def start(self) -> None:
        master, slave = os.openpty()
        # Raw: no echo, no newline translation; a serial line carries the bytes as they are. The slave
        # stays open here too, so the line keeps these settings between the agent's opens.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave, self.device = master, slave, os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    async def stop(self) -> None:
        if self._master is None:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        self._end_job()
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def set_offline(self, offline: bool) -> None:
        """Switched off (or on): the line stays, the printer on it neither answers nor prints."""
        if offline:
            self._end_job()
        self.powered = not offline

    def _on_readable(self) -> None:
        assert self._master is not None  # the reader is removed before the fd is closed
        try:
            chunk = os.read(self._master, _CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not self.powered:
            self._held = b""
            return  # lost on a line nobody listens to
        parts, self._held = _split(self._held + chunk)
        for part in parts:
            if isinstance(part, _Recover):
                self._recover(part)
                continue
            if isinstance(part, _Clear):  # nothing waits to print here: it answers, that is all
                self.cleared += 1
                os.write(self._master, _CLEARED)
                continue
            if isinstance(part, (int, _InOrder)):  # GS r processed at once: a serial printer here has no speed model
                self._end_job()
                if reply := self._answer(part):
                    os.write(self._master, reply)
                continue
            if self.off_after is not None and len(self._job) + len(part) >= self.off_after:
                part = part[: self.off_after - len(self._job)]  # the rest goes to a printer that is off
                self.off_after = None
                self._on_paper = self._take(self._job, part, self._on_paper)
                self.set_offline(True)
                return
            self.job_bytes_in += len(part)
            self._on_paper = self._take(self._job, part, self._on_paper)

    def _end_job(self) -> None:
        job, self._job = bytes(self._job), bytearray()
        on_paper, self._on_paper = self._on_paper, 0
        self._record(job, cut=False, on_paper=on_paper)


class _Clear:
    """DLE DC4 fn=8: clear the receive and print buffers, at once."""


@dataclasses.dataclass(frozen=True)
class _Recover:
    """DLE ENQ n: out of a recoverable error (n=2: its buffers cleared first), once its cause is gone."""

    n: int


@dataclasses.dataclass(frozen=True)
class _InOrder:
    """GS r n: answered once the printer has processed every byte before it."""

    n: int


def _split(data: bytes) -> tuple[list[bytes | int | _InOrder | _Clear | _Recover], bytes]:
    """Job byte runs, DLE EOT queries (as n), GS r queries and buffer clears in order, plus a trailing partial command
    to hold back."""
    parts: list[bytes | int | _InOrder | _Clear | _Recover] = []
    start = 0
    while True:
        found = [
            (at, prefix) for prefix in (_DLE_EOT, _GS_R, _CLEAR[:2], _DLE_ENQ) if (at := data.find(prefix, start)) != -1
        ]
        if not found:
            end = len(data) - 1 if data.endswith((_DLE_EOT[:1], _GS_R[:1])) else len(data)
            break
        at, prefix = min(found)
        if prefix == _CLEAR[:2]:
            if len(data) - at < len(_CLEAR) and _CLEAR.startswith(data[at:]):  # its start: wait for the rest
                end = at
                break
            if data.startswith(_CLEAR, at):
                if at > start:
                    parts.append(data[start:at])
                parts.append(_Clear())
                start = at + len(_CLEAR)
            else:  # another DLE DC4 function (a drawer pulse): ordinary data here
                parts.append(data[start : at + 2])
                start = at + 2
            continue
        if at + 2 == len(data):
            end = at
            break
        n = data[at + 2]
        if prefix == _DLE_ENQ and n in (1, 2):
            if at > start:
                parts.append(data[start:at])
            parts.append(_Recover(n))
            start = at + 3
        elif (prefix == _DLE_EOT and n in _QUERIES) or (prefix == _GS_R and n in (1, 2, 49, 50)):
            if at > start:
                parts.append(data[start:at])
            parts.append(n if prefix == _DLE_EOT else _InOrder(n))
            start = at + 3
        else:
            # Not a query: DLE EOT (GS r) followed by anything else is ordinary data.
            if at + 2 > start:
                parts.append(data[start : at + 2])
            start = at + 2
    if end > start:
        parts.append(data[start:end])
    return parts, data[max(end, start) :]


class _Link:
    """What one connection sends back, in order; a stall holds it up for a while, then it goes out whole; a slow link
    (``delay``, seconds) delivers each write that much after it was made."""

    def __init__(self, writer: asyncio.StreamWriter, delay: Callable[[], float]) -> None:
        self._writer = writer
        self._delay = delay
        self._delayed: collections.deque[tuple[float, bytes]] = collections.deque()  # (loop time due, bytes)
        self._held = bytearray()
        self._until = 0.0  # loop time: until then, everything waits in _held

    def stall(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._until = max(self._until, loop.time() + seconds)
        loop.call_at(self._until, self._flush)

    def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        delay = self._delay()
        if not (delay or self._delayed):
            self._send(data)
            return
        # Never ahead of what was sent before it, even when the link got quicker meanwhile
        due = max(loop.time() + delay, self._delayed[-1][0] if self._delayed else 0.0)
        self._delayed.append((due, data))
        loop.call_at(due, self._deliver)

    def _deliver(self) -> None:
        now = asyncio.get_running_loop().time()
        while self._delayed and self._delayed[0][0] <= now:
            self._send(self._delayed.popleft()[1])

    def reset(self) -> bool:
        """Whether the host reset the connection: a TCP stack handles a reset on arrival (RFC 793, "Reset
        Processing"), also while the printer reads nothing (its buffer full), and the connection is gone then."""
        sock = self._writer.get_extra_info("socket")
        return sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE

    def _send(self, data: bytes) -> None:
        if self._writer.is_closing():  # the host hung up while it was on its way
            return
        if self._held or asyncio.get_running_loop().time() < self._until:
            self._held += data
        else:
            self._writer.write(data)

    def _flush(self) -> None:
        if asyncio.get_running_loop().time() < self._until:
            return  # stalled again meanwhile: a later call sends it
        if self._held and not self._writer.is_closing():
            self._writer.write(bytes(self._held))
        self._held.clear()


class _Feed:
    """One connection's data on its way through the printer: processed as it comes (an instant printer), or, with a
    speed model, from a receive buffer of _BUFFER bytes, printed a line at a time at paper speed, one job at a time."""

    def __init__(self, printer: SimPrinter, link: _Link) -> None:
        self.printer, self.link = printer, link
        self.received = bytearray()  # job bytes received so far (for drop_after)
        self.job = bytearray()  # job bytes processed so far
        self.on_paper = 0  # leading job bytes that printed: none arrive on paper after a fault
        self.resumed = False  # printing went on after a fault (``resumes``): the rest of the job is on the new roll
        self.cleared = False  # a host cleared the buffers and this one sent nothing since: no more of it prints
        self.lost = False  # the power went: what was in the buffers is gone, and nothing more of this connection prints
        self._queue: collections.deque[bytes | _InOrder | None] = collections.deque()
        self._waiting = 0  # job bytes in the buffer
        self._took = False  # anything of this connection went into the buffers (job bytes, GS r)
        self._changed = asyncio.Event()
        self._task = None if printer.speed is None else asyncio.get_running_loop().create_task(self._print())
        if self._task is not None:  # a reader waiting for room must not wait on a mechanism that stopped
            self._task.add_done_callback(lambda _: self._changed.set())

    async def put(self, part: bytes | _InOrder) -> None:
        if self.lost:
            return
        self.cleared = False  # sent after a clear: it prints
        if isinstance(part, bytes):
            self.received += part
        if self._task is None:
            self.printer._process(self, part)
            return
        self._took = True
        self._queue.append(part)
        self._waiting += len(part) if isinstance(part, bytes) else 0
        self._changed.set()
        while self._waiting > _BUFFER and not self._task.done() and not self.lost:  # full: it reads no more for now
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), _RESET_LOOK_S)
            if self.printer.hears_resets and self.link.reset():
                raise ConnectionResetError("the host reset the connection while the buffer was full")

    async def finish(self) -> None:
        if self._task is None:
            return
        if not self._took:
            # Status questions only (answered on arrival): nothing of this connection waits in the buffers, so the
            # interface has nothing to hand on and ends it now, even while the mechanism is stopped with another's job.
            self._task.cancel()
            return
        self._queue.append(None)
        self._changed.set()
        await self._task

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def clear(self) -> None:
        """DLE DC4 fn=8: what waits in the buffers is dropped; the line being printed stops too. The end of a
        connection that has hung up stays: the job ends there."""
        self.cleared = True
        self._drop_buffers()

    def lose(self) -> None:
        """Power lost: the receive and print buffers are RAM, and the line being printed stops (a TM-T88V comes back
        empty after a power cycle; with a speed model the rest of a buffered job used to print after power_on)."""
        self.lost = True
        self._drop_buffers()

    def _drop_buffers(self) -> None:
        ended = None in self._queue
        self._queue.clear()
        if ended:
            self._queue.append(None)
        self._waiting = 0
        self._changed.set()

    def _stopped(self) -> bool:
        return self.printer.halted

    async def _fault_cleared(self) -> bool:
        """A printer that resumes waits out a stop (a person loads a roll, closes the cover) and goes on with the job;
        False when the host cleared the buffers meanwhile."""
        stopped_here = self._stopped() or self.on_paper < len(self.job)
        # The flags are plain attributes a test sets at any time: polled, as the printer polls its sensors.
        while self._stopped() and not self.cleared:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self.cleared:
            return False
        self.resumed = self.resumed or (stopped_here and self.on_paper < len(self.job))
        return True

    async def _print(self) -> None:
        speed = self.printer.speed
        assert speed is not None
        async with self.printer._mechanism:
            while True:
                while not self._queue:
                    self._changed.clear()
                    await self._changed.wait()
                part = self._queue.popleft()
                if part is None:
                    if self.printer.resumes:  # a job that stopped at its last line still finishes on the new roll
                        await self._fault_cleared()
                    return
                if self.printer.resumes and not await self._fault_cleared():
                    continue  # cleared: a GS r waiting in the buffer went with it
                if isinstance(part, bytes):
                    for line in part.splitlines(keepends=True):
                        if self.lost or (self.printer.resumes and not await self._fault_cleared()):
                            break
                        if not self._stopped():  # stopped: no paper moves
                            await asyncio.sleep(speed.seconds(line))
                        self.printer._process(self, line)
                    self._waiting = max(0, self._waiting - len(part))
                    self._changed.set()
                else:
                    self.printer._process(self, part)


async def serve(
    name: str,
    port: int,
    out_dir: Path | None,
    *,
    host: str = "127.0.0.1",
    serial: bool = False,
    speed: PaperSpeed | None = None,
) -> None:
    """Runs one simulated printer until cancelled (``edge sim printer [--serial] [--instant]``)."""
    printer = (
        SimSerialPrinter(name, out_dir=out_dir)
        if serial
        else SimPrinter(name, host=host, port=port, out_dir=out_dir, speed=speed)
    )
    await printer.start()
    where = (
        {"device": printer.device} if isinstance(printer, SimSerialPrinter) else {"host": host, "port": printer.port}
    )
    log.info("sim_printer_listening", name=name, **where, out_dir=str(out_dir) if out_dir else None)
    try:
        await asyncio.Event().wait()
    finally:
        await printer.stop()
