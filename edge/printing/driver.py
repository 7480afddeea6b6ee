"""Sends one job to one ESC/POS printer, with status checks before and after, off the event loop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

from edge.errors import DeviceError, DeviceStalledError, DeviceUnreachableError, DeviceWriteError
from edge.printing.commands import DRAWER_PULSE
from edge.printing.status import (
    BLOCKING_STATES,
    XON_XOFF,
    PrinterState,
    error_detail,
    error_reported,
    is_asb_start,
    is_in_order_reply,
    is_valid_reply,
    parse_status,
    recoverable,
    stopped,
)
from edge.transports import End, Transport

log = structlog.get_logger()

T = TypeVar("T")

_DLE_EOT = b"\x10\x04"
# The confirming status query waits behind the whole job, so its timeout grows with the job, planned for the slowest
# printers: data at about this many bytes per second (a serial line may be slower still), and paper at an impact
# printer's pace, a kitchen's classic (heat does not blacken its paper): Epson's TM-U220 prints 4.7 lines a second at
# 40 columns, fewer in double height, and feeds past its cutter before it cuts.
_SLOW_PRINTER_BYTES_PER_S = 2000
_SLOW_PRINTER_LINES_PER_S = 3.0
_SLOW_PRINTER_CUT_S = 1.0
# A printer's receive buffer (4 KB, the TM-T88V's default) may hold another host's lines (the till's receipt) ahead of
# a job: this long at the slowest pace, 48 columns a line, more for a GS r reply from a printer that answers GS r.
_AHEAD_S = 4096 / 48 / _SLOW_PRINTER_LINES_PER_S
_LF, _CUT = b"\n", b"\x1dV"
# A printer that has never answered and stayed silent this many status exchanges in a row cannot answer (a model or
# a one-way print server without status): its jobs stop waiting for replies that never come.
_SILENT_AFTER = 2
_SILENT = "it never answers status queries"
# After a job sent without asking, a printer seen to keep its end of the connection open is waited for this long, for
# a reset that says it dropped the job (one comes at once), not for an end that does not come.
_KEEPS_OPEN_WAIT_S = 0.25
# Silence from a printer that stopped taking a ticket's bytes, or went quiet while it printed one: its own stop (not
# the network, not another host) is why, or its power; status queries wait behind a full buffer.
_SILENT_IN_TICKET = (
    "answers nothing since a ticket was sent to it: switched off, out of paper, its cover open or an error (it cannot"
    " say which while its buffer is full); look at the printer"
)
# GS r 1 (transmit paper sensor status) is processed in order, after every byte before it, and not while the printer is
# stopped at paper end: its reply says the ticket is out. DLE EOT is answered on arrival, while a ticket in the
# printer's buffer may still be printing (Epson: "executed even when the receive buffer is full").
_GS_R_PAPER = b"\x1dr\x01"
_GS_R_PAPER_END = 0x0C  # its reply's bits 2 and 3: the roll paper end sensor
_GS_R_NEAR_END = 0x03  # bits 0 and 1: the roll near-end sensor
# DLE DC4 fn=8 (real time): clears the receive and print buffers. An Epson stopped at paper end or with the cover open
# in the middle of a job goes on with the rest of it once the fault clears: without this, that half ticket (without
# its head) would come out before the COPY of the whole.
_CLEAR_BUFFERS = b"\x10\x14\x08\x01\x03\x14\x01\x06\x02\x08"
_RECOVER_CLEARING = b"\x10\x05\x02"  # DLE ENQ 2: recover from an error after clearing the buffers
# Its Clear response (37H 25H 00H) is a block: a header, then bytes up to a NUL. Passed over: its last two bytes
# look like GS r replies (bits 4 and 7 clear), and on a connection that goes on, one read as the job's said "out".
_BLOCK_HEADER, _BLOCK_END = 0x37, 0x00
# While waiting for that reply, the real-time cause of a stop is asked this often: paper end ends the wait at once.
_STOP_POLL_S = 0.25
# A receipt's drawer pulse goes with its set-up, in its first bytes (edge/printing/render.py); looked for there only.
_PULSE_WITHIN = 64
# While the rest of a long job waits on this side for the printer to take it: how long each wait for its GS r reads.
_HELD_BACK_WAIT_S = 2.0
_BUSY_RETRY_S = 0.1  # how soon a connection the printer refused while busy with our jobs is tried again
# A network interface serves one connection and keeps three waiting (Epson's UB-E02 Technical Reference Guide, 4.5):
# no more of the jobs sent to it can wait in it, however many were sent.
_INTERFACE_HOLDS = 4
# A reply missed on a connection is waited for this many status_timeouts more before the next query on it: a TCP
# segment lost on the way is sent again after 1 s, then 2 s more (RFC 6298).
_LATE_REPLY_TIMEOUTS = 2
# A printer whose replies all come late (a Wi-Fi bridge on a weak link, an Ethernet-to-USB print server that polls its
# printer slowly: 2-3 s in the real71b probe) is waited for this many times its reply time from then on; replies later
# than _SLOWEST_REPLY_S are not waited for (as from a printer that does not answer): a ticket would wait that long.
_REPLY_MARGIN = 2.0
_SLOWEST_REPLY_S = 10.0
# An unanswered query's reply is waited for up to this many status_timeouts in all (and _SLOWEST_REPLY_S) before the
# printer counts as not answering: 9 s at the default 1.5 s. Three (4.5 s) took one whose replies came 5 s late for a
# printer without status, and a roll that ran out lost its tickets, marked printed (the verify71 probe). The price:
# a printer that never answers costs that long an exchange, twice in a run, before it is given up on.
_LATE_REPLY_WAITS = 6
# A device that talks text on a printer's address (a web server's "HTTP/1.1 400 Bad Request", a telnet banner): its
# letters carry a reply's fixed bits ('R' 0x52, 'r' 0x72: paper end, 'v' 0x76), and read as replies they said paper out
# (the netprinter80 probe, F2). A printer sends a byte per query and four for an Automatic Status Back, printable only
# when paper end or an error sets bit 5 or 6: even an exchange's replies, doubled, make a shorter run. Text is this many
# printable bytes in a row, or a line (a printable byte, then CR LF).
_TEXT_RUN = 8
_TEXT = frozenset(range(0x20, 0x7F)) | {0x09, 0x0D, 0x0A}
# What a printer that ignores DLE EOT n cannot say (paper end and a stop still read as offline from DLE EOT 1)
_UNASKED_MEANS = {
    2: "why it is offline (cover open, paper end, an error)",
    3: "which error stopped it",
    4: "the roll near its end",
}


class _Replies:
    """What the printer sends back on one connection, sorted: replies to real-time DLE EOT queries, replies to in-order
    GS r queries, and bytes it sends unasked, passed over (Automatic Status Back, often left on by a POS driver, and
    XON/XOFF). Taken as replies, those shifted every reply after them by a query: a ticket cut short by paper end read
    as printed.

    A real-time reply that comes after its query was given up on (held up on the way: a lost TCP segment is sent again
    after a second or more) is passed over too: replies come in the order of their queries, so the first ones to come
    after such a miss answer the queries missed. Read as the next query's, a DLE EOT 1 reply said "cover open" to DLE
    EOT 2, and one from before paper end said "paper present" after it."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._real_time: collections.deque[int] = collections.deque()
        self._in_order: collections.deque[int] = collections.deque()
        self._asb_left = 0  # bytes of an Automatic Status Back still to pass over
        self._in_block = False  # inside a block reply (the Clear response), passed over up to its NUL
        # DLE EOT given up on, their replies to come: (n, monotonic time asked)
        self._missed: collections.deque[tuple[int, float]] = collections.deque()
        self._late = 0  # replies to such queries that came
        self._late_s = 0.0  # how long after its query the last of them came
        # A missed reply never came, even after the wait: replies read after that may answer other queries
        self.doubtful = False
        # For each GS r asked and not answered yet, the DLE EOT missed before it: DLE EOT is answered on arrival, GS r
        # once the bytes before it are processed, so when its reply comes, theirs (on the same stream) never will.
        self._before_in_order: collections.deque[tuple[tuple[int, float], ...]] = collections.deque()
        self.overtaken: set[int] = set()  # n of DLE EOT whose reply a later query's overtook: the printer ignores it
        # Bytes that are no reply to anything asked (0xFF, a status with its fixed bits wrong): the last one
        self.not_a_reply: int | None = None
        self._run = bytearray()  # the printable bytes last read in a row
        # The run of text that showed it is no printer ("" until then): nothing read on the connection is a reply
        self.text = ""

    def forget_real_time(self) -> None:
        """Before a DLE EOT query: a reply read earlier and not asked for answers a DLE EOT that the printer found in a
        job's image data (it executes those wherever they come, Epson warns); taken as this query's reply, it would
        shift every reply after it."""
        self._real_time.clear()

    def next(self, *, in_order: bool, timeout: float) -> int | None:
        """The next reply of that kind within ``timeout``, None when none came."""
        found = self._in_order if in_order else self._real_time
        self._read_until(lambda: bool(found), timeout)
        return found.popleft() if found else None

    def asked_in_order(self) -> None:
        """GS r was just asked."""
        self._before_in_order.append(tuple(self._missed))

    def missed(self, n: int, asked_at: float) -> None:
        """DLE EOT n, asked at ``asked_at`` (monotonic), was given up on: its reply, if it comes, is passed over."""
        self._missed.append((n, asked_at))

    def settle(self, timeout: float) -> set[int]:
        """Waits up to ``timeout`` for the replies still owed (not at all when none is); returns the n of those that
        did not come (no longer waited for). After text, none: the device ignores no query, it is no printer."""
        self._read_until(lambda: not self._missed, timeout)
        if self.text:
            return set()
        gone, self._missed = {n for n, _ in self._missed}, collections.deque()
        self.doubtful = self.doubtful or bool(gone)
        return gone

    def late(self, timeout: float) -> float | None:
        """Whether the reply to a missed real-time query comes within ``timeout`` (the printer is there, only late):
        how many seconds after its query it came, None when it did not."""
        before = self._late
        self._read_until(lambda: self._late > before, timeout)
        return self._late_s if self._late > before else None

    def _read_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        left = timeout  # unchanged unless a byte was passed over: a serial port keeps its settings then
        while not done() and left > 0 and not self.text:
            data = self._transport.read(1, left)
            if data:
                self._sort(data[0])
            left = deadline - time.monotonic()

    def _sort(self, byte: int) -> None:
        if self._is_text(byte):
            # What was taken for replies on this connection was letters too
            self._real_time.clear()
            self._in_order.clear()
            return
        if self._in_block:
            self._in_block = byte != _BLOCK_END
            return
        if byte in XON_XOFF:
            return
        if self._asb_left:
            self._asb_left -= 1
        elif is_asb_start(byte):
            self._asb_left = 3
        elif byte == _BLOCK_HEADER:
            self._in_block = True
        elif is_valid_reply(byte) and self._missed:
            self._late += 1
            self._late_s = time.monotonic() - self._missed.popleft()[1]
        elif is_valid_reply(byte):
            self._real_time.append(byte)
        elif is_in_order_reply(byte):
            self._in_order.append(byte)
            if not self._before_in_order:  # no GS r asked: a DLE EOT reply with bit 4 clear, say
                self.not_a_reply = byte
            for query in self._before_in_order.popleft() if self._before_in_order else ():
                if query in self._missed:
                    self._missed.remove(query)
                    self.overtaken.add(query[0])
        else:
            self.not_a_reply = byte

    def _is_text(self, byte: int) -> bool:
        """Whether the bytes read so far, ``byte`` the last, are text (every byte counts, before it is sorted: a '7'
        would start a block reply and pass the rest over, a 'T' an Automatic Status Back)."""
        if self.text:
            return True
        if byte not in _TEXT:
            self._run.clear()
            return False
        self._run.append(byte)
        line = len(self._run) >= 3 and self._run.endswith(b"\r\n") and 0x20 <= self._run[-3] < 0x7F
        if line or len(self._run) >= _TEXT_RUN:
            self.text = self._run.decode("ascii")
        return bool(self.text)


@dataclasses.dataclass
class _Habit:
    """Whether the printer answers one kind of query. One that has never answered it in this run and missed it
    _SILENT_AFTER times in a row is taken for one that cannot: it is no longer waited for; any answer brings the waits
    back."""

    answered: bool = False  # ever, in this run
    misses: int = 0  # in a row
    expected: bool = False  # the model (its profile or config) answers: silence is never taken for "cannot"
    earlier: bool = False  # it answered on this address in an earlier run: likewise

    @property
    def given_up(self) -> bool:
        return not self.expected and not self.earlier and not self.answered and self.misses >= _SILENT_AFTER

    def disbelieve(self) -> None:
        """Expected from the model, never answered, even after the longest wait: taken for one that cannot (the
        configured model is not this printer's)."""
        self.expected, self.misses = False, _SILENT_AFTER

    def note(self, answered: bool) -> bool:
        """Records one exchange; True when that changed ``given_up``."""
        before = self.given_up
        if answered:
            self.answered, self.misses = True, 0
        else:
            self.misses += 1
        return self.given_up != before


@dataclasses.dataclass(frozen=True)
class PrintOutcome:
    confirmed: bool  # the printer answered a status query sent after the job, so it has taken every byte
    state: PrinterState  # read after the job; UNKNOWN if the printer did not answer
    processed: bool = False  # it answered GS r after the job: every byte of the job went through, the ticket is out
    # A reply missed on the job's connection never came: the state after it may be read from a reply to a query from
    # before the job (a printer status from before paper ran out), so it says nothing of the ticket
    doubtful: bool = False

    @property
    def on_paper(self) -> bool:
        """False when the job is not known to be out and the status after it shows paper end, cover open, an error
        or offline, or cannot be trusted: the job may be only partly on paper, and is printed again as COPY."""
        return self.processed or (not self.doubtful and self.state not in BLOCKING_STATES)


class PrinterNotReadyError(DeviceError):
    """The printer reported a state that stops printing (paper out, cover open…); no job bytes were sent."""

    def __init__(self, device_id: str, transport: str, state: PrinterState, why: str = "") -> None:
        super().__init__(device_id, transport, f"{why or state.value.replace('_', ' ')}, job not sent")
        self.state = state


class PrinterDriver:
    """One printer: one connection per job, status asked only between jobs, never inside one."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        status_timeout: float = 1.5,
        lock: threading.Lock | None = None,
        answers_status: bool | None = None,
        model: str = "",
        answered_before: bool = False,
        without_in_order_before: bool = False,
        strip_end: bytes = b"",
    ) -> None:
        """``lock``: the device's, shared with the drivers of the same device under other names. ``answers_status``:
        True when the model answers status queries (its profile or config says so): silence from it is a printer
        not ready, never one without status; False when it cannot (configured): its jobs go without asking from the
        first one; None: learnt (never answered, twice: taken for one that cannot). ``model``: for the state's
        detail. ``answered_before``: a printer on this device answered status in an earlier run; with None, its
        silence is then a printer off or another device on its address (after a power cut), never one that cannot
        answer, whose tickets would be sent blind into whatever took the address. ``without_in_order_before``: the
        printer on this device answered DLE EOT but not GS r in an earlier run: its jobs do not wait for GS r (on a
        model said to answer it, each restart cost a long wait and a COPY), and the first status poll of the run asks
        GS r once, so one that answers now is waited for again. ``strip_end``: the bytes that end a paper strip as
        its tickets end (feed past the cutter, cut)."""
        self.name = name
        self.transport = transport
        self.status_timeout = status_timeout
        self._reply_s = 0.0  # how late its replies come, once seen to come later than status_timeout every time
        # Printers serve one connection at a time. A thread lock, not an asyncio one: a thread keeps
        # running after the task awaiting it is cancelled, and must still hold the printer.
        self._lock = lock or threading.Lock()
        # The printer's own thread (started at the first call), not asyncio's shared pool: a job holds its thread as
        # long as the printer takes, seconds for a long ticket on a slow one, and a store with as many printers busy
        # as that pool has threads (cores + 4) left none for the commits behind answers to orders or for rendering
        # the next ticket of a printer that was free: both waited for a printer to finish.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"printer-{name}")
        # Whether it answers DLE EOT, and GS r after a job (a few clones answer only DLE EOT); on its thread.
        self._status_answers = _Habit(
            expected=answers_status is True,
            misses=_SILENT_AFTER if answers_status is False else 0,
            earlier=answered_before and answers_status is None,
        )
        self._model = model
        # Why the last status exchange read OFFLINE from silence ("" when it did not): for the spool's state detail.
        self.silence = ""
        # Why the last status read OFFLINE, whatever the cause (refused, hung up, silent), or ERROR (the kind DLE EOT 3
        # names), for the state detail while the spool waits: a printer that answered nothing and is now switched off
        # is told as off ("" otherwise).
        self.stopped_why = ""
        self._stopped_in_ticket = False  # a ticket stalled or went unanswered, and it has not answered since
        self._stalled = False  # a ticket's write stalled (its connection reset), and it has not answered since
        # The last job's drawer pulse went out but the printer was not seen to take it (no DLE EOT reply after it):
        # a hang-up then leaves the sale's drawer to its next receipt (JobStore.mark_failed's pulse_lost).
        self.pulse_unseen = False
        self._sensed = PrinterState.UNKNOWN  # the paper as the last GS r reply told it
        self._failed = ""  # why the last question between jobs could not be asked (its thread only)
        # The models that answer DLE EOT answer GS r.
        self._in_order_answers = (
            _Habit(misses=_SILENT_AFTER) if without_in_order_before else _Habit(expected=answers_status is True)
        )
        self._in_order_asked_again = not without_in_order_before  # GS r asked once more in this run
        # Why its replies say less than its model's would (a profile that does not fit it), for the state's detail
        self.caveat = self._wrong_model() if without_in_order_before and answers_status is True else ""
        self._ignored: set[int] = set()  # DLE EOT n it did not answer even late, since it last answered them
        # DLE EOT n (not 1) it is known not to answer at all (a later query's reply overtook its): not asked in this run
        self._unasked: set[int] = set()
        self._replies = _Replies(transport)
        self._busy_until = 0.0  # monotonic: until then jobs sent without asking may still wait in the printer
        self._blind_ended: End | None = None  # how the last job sent without asking ended its connection
        self._blind_jobs: collections.deque[float] = collections.deque(maxlen=_INTERFACE_HOLDS)  # their times
        self._clear_first = ""  # why the next connection clears the buffers first, until the clear went out
        # A ticket cut short may be on the paper still in the printer (its cover opened, the line dropped, a crash):
        # the next job first cuts it off, or it and the COPY come out as one strip.
        self._strip_end = strip_end
        self._cut_short_on_strip = False

    def clear_at_first_contact(self) -> None:
        """Its buffers may hold the rest of a job a crash cut short (the agent that sent it is gone): they are cleared
        on the next connection, before anything else goes (also to a printer stopped at paper end, and whether that
        connection is a status query or a job), and again on the one after until the clear went out."""
        self._clear_first, self._cut_short_on_strip = "a job a crash cut short may be left in them", True

    @property
    def clearing_first(self) -> bool:
        """Whether the clear asked for by clear_at_first_contact has yet to go out."""
        return bool(self._clear_first)

    @property
    def answered_status(self) -> bool:
        """Whether the printer answered a status query in this run."""
        return self._status_answers.answered

    @property
    def answered_earlier(self) -> bool:
        """Whether it is known from an earlier run to answer status queries (``answered_before``)."""
        return self._status_answers.earlier

    @property
    def lacks_in_order(self) -> bool | None:
        """Whether it is taken for a printer that does not answer GS r (True), known to answer it (False), or not
        known yet (None)."""
        return True if self._in_order_answers.given_up else False if self._in_order_answers.answered else None

    @property
    def asks_status(self) -> bool:
        """Whether its jobs ask the printer's status before and after them (not one taken for a printer without)."""
        return self.transport.can_read and not self._status_answers.given_up

    async def status(self) -> PrinterState:
        """Asks the printer; OFFLINE if it cannot be reached, UNKNOWN if it does not answer."""
        state, replies = await self._in_thread(self._status)
        if state == PrinterState.ERROR:
            log.info(
                "printer_error_status", device_id=self.name, replies={n: f"0x{byte:02x}" for n, byte in replies.items()}
            )
        return state

    async def answers_in_order(self) -> bool | None:
        """Whether the printer answers GS r, i.e. can say a ticket is out (asked alone, between jobs); None when it
        cannot be asked (not reachable, or a transport with no way back)."""
        return await self._in_thread(self._answers_in_order)

    async def print(self, data: bytes) -> PrintOutcome:
        """Sends one job; raises DeviceUnreachableError or PrinterNotReadyError (nothing sent) or DeviceWriteError
        (maybe partly out)."""
        return await self._in_thread(self._print, data)

    def close(self) -> None:
        """The thread ends once the call in it, if any, has returned (a printer's timeouts bound it)."""
        self._thread.shutdown(wait=False)

    async def _in_thread(self, fn: Callable[..., T], *args: object) -> T:
        """``fn`` on the printer's thread, with the caller's context (its log fields), as ``asyncio.to_thread`` does."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._thread, context.run, fn, *args)

    @contextlib.contextmanager
    def _device_errors(self, unexpected: type[DeviceError]) -> Iterator[None]:
        """Any other exception from the transport (a bug, an OSError outside its try) becomes ``unexpected``, so the
        spool always records an outcome instead of leaving the job 'printing' until a restart."""
        try:
            yield
        except DeviceError:
            raise
        except Exception as err:
            log.exception("transport_unexpected_error", device_id=self.name)
            raise unexpected(self.name, self.transport.label, f"unexpected {type(err).__name__}: {err}") from err

    def _open(self) -> None:
        while True:
            try:
                with self._device_errors(DeviceUnreachableError):  # nothing was sent yet
                    self.transport.open()
                break
            except DeviceUnreachableError:
                # A network interface keeps three connections waiting and refuses more: refused while jobs sent
                # without asking may still wait in it (_sent_blind), the printer is busy with ours, not gone. It takes
                # its turn, for as long as the slowest printer would take to print them.
                left = self._busy_until - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(left, _BUSY_RETRY_S))
        self._replies = _Replies(self.transport)
        if self._clear_first:
            self._clear_leftover()

    def _clear_leftover(self) -> None:
        """The clear of clear_at_first_contact, on a connection just opened. Not sent: the printer is taken for one
        that cannot be reached (nothing went out), and the next connection tries again."""
        if err := self._send_clear():
            self._close()
            raise DeviceUnreachableError(self.name, self.transport.label, f"buffers not cleared: {err}") from err
        log.info("printer_buffers_cleared", device_id=self.name, reason=self._clear_first)
        self._clear_first = ""

    def _status(self) -> tuple[PrinterState, dict[int, int]]:
        # Accepted the connection, then hung up: not taking jobs.
        offline: tuple[PrinterState, dict[int, int]] = (PrinterState.OFFLINE, {})
        self.silence = self._failed = ""
        ask = self._ask_state if self._in_order_asked_again else self._ask_state_then_in_order

        def ask_and_recover() -> tuple[PrinterState, dict[int, int]]:
            state, replies = ask()
            if state == PrinterState.ERROR and recoverable(replies):
                # DLE ENQ 2: out of the error once its cause is gone (the jam pulled out), instead of a power cycle;
                # its buffers go with it (the cut-short ticket prints again whole, as COPY). Before the cause is gone
                # the printer ignores it.
                self.transport.write(_RECOVER_CLEARING)
            return state, replies

        found = self._query(ask_and_recover, unreachable=offline, mute=(PrinterState.UNKNOWN, {}), hung_up=offline)
        why = self._failed or (
            str(DeviceUnreachableError(self.name, self.transport.label, self.silence)) if self.silence else ""
        )
        if why and self._stalled and (held := getattr(self.transport, "stall_held", "")):
            why = f"{why}; {held}"  # silent or refusing since: maybe the reset that ended the ticket never got there
        state, replies = found
        self.stopped_why = (
            why if state == PrinterState.OFFLINE else error_detail(replies) if state == PrinterState.ERROR else ""
        )
        return found

    def _ask_state_then_in_order(self) -> tuple[PrinterState, dict[int, int]]:
        """The state, then GS r alone, for a printer taken from an earlier run for one without it: an answer (another
        printer on the address, new firmware) makes its jobs wait for GS r again."""
        found = self._ask_state()
        if found[0] == PrinterState.ONLINE:
            self._in_order_asked_again = True
            self._write_in_order()
            if self._replies.next(in_order=True, timeout=self._wait_s) is not None:
                self._in_order_answers, self.caveat = _Habit(answered=True), ""
        return found

    def _answers_in_order(self) -> bool | None:
        def ask() -> bool:
            self._write_in_order()
            return self._replies.next(in_order=True, timeout=self._wait_s) is not None

        return self._query(ask, unreachable=None, mute=None, hung_up=None)

    def _query(self, ask: Callable[[], T], *, unreachable: T, mute: T, hung_up: T) -> T:
        """One question between jobs on a connection of its own: ``ask``'s answer, or what stands for it when the
        printer cannot be reached, the transport has no way back, or the printer hangs up meanwhile."""
        with self._lock:
            try:
                self._open()
            except DeviceUnreachableError as err:
                self._failed = str(err)
                return unreachable
            try:
                if not self.transport.can_read:
                    return mute
                with self._device_errors(DeviceWriteError):
                    return ask()
            except DeviceWriteError as err:
                self._failed = str(err)
                return hung_up
            finally:
                self._close()

    def _close(self) -> None:
        self._learn_unasked()
        try:
            self.transport.close()
        except Exception:  # the outcome is already decided; a failing close must not replace it
            log.exception("transport_close_failed", device_id=self.name)

    def _learn_unasked(self) -> None:
        """DLE EOT n seen on this connection to go unanswered by a printer that answered a query asked after it: a
        clone with part of the command set. Asked before each ticket it cost the wait for a late reply every time (9 s
        a ticket at the default: the netprinter80 probe, F1); DLE EOT 1 is always asked (the printer's own state)."""
        if self._replies.text:
            return  # its letters may have looked like a GS r reply overtaking a query's
        for n in sorted(self._replies.overtaken - self._unasked - {1}):
            self._unasked.add(n)
            log.warning(
                "printer_ignores_query",
                device_id=self.name,
                query=f"DLE EOT {n}",
                hint=f"it answers other status queries but never DLE EOT {n} (a clone with part of the command set): "
                f"not asked again in this run, so {_UNASKED_MEANS.get(n, 'what it says')} is not seen; if it is the "
                f"model printers.{self.name}.profile names, look at its status settings",
            )

    def _write_in_order(self) -> None:
        """Asks GS r 1 on the open connection."""
        self.transport.write(_GS_R_PAPER)
        self._replies.asked_in_order()

    def _print(self, data: bytes) -> PrintOutcome:
        with self._lock:
            self._open()
            try:
                return self._print_open(data)
            except DeviceStalledError:
                # Its silence from now on is that stop's, until it answers again
                self._stopped_in_ticket = self._stalled = True
                # What it took of the job stays in its buffer (the reset ends the connection, not the buffer): an
                # Epson prints it on the new roll, headless, before the COPY (the power83 probe, F1). Not on a printer
                # that gets its jobs without asking: tickets marked printed may wait in its buffer too (night74).
                if self.asks_status:
                    self._clear_first = "a job that stalled may be left in them"
                raise
            finally:
                self._close()

    def _print_open(self, data: bytes) -> PrintOutcome:
        """The job on the open connection: asked first whether the printer can take it, then sent, then waited for."""
        # A printer taken for one that cannot answer status gets its jobs without asking (each would wait
        # status_timeout twice, for nothing); the status poll between jobs still asks. One that has answered
        # and falls silent is offline instead (switched off, its cable pulled): see _ask_state.
        asks = self.asks_status
        if asks:
            self._check_ready()
        if self._cut_short_on_strip:
            data = self._strip_end + data
        at = data.find(DRAWER_PULSE, 0, _PULSE_WITHIN) if asks else -1
        pulse = at + len(DRAWER_PULSE) if at >= 0 else 0  # the bytes up to the pulse's end
        self.pulse_unseen = pulse > 0
        with self._device_errors(DeviceWriteError):  # from the first job byte on, it may be partly out
            self._cut_short_on_strip = True
            if pulse > 0:
                # A cash sale's drawer pulse, then DLE EOT 1: its reply (answered on arrival) says the printer took
                # the pulse. A printer that hangs up before it took nothing of the sale's receipt: its next receipt
                # opens the drawer; one that hangs up after has opened it (a COPY then would open it twice).
                self.transport.write(data[:pulse])
                self.pulse_unseen = not self._ask((1,))
                self.transport.write(data[pulse:])
            else:
                self.transport.write(data)
            if not asks:
                self._blind_end(data)
                self._cut_short_on_strip = False
                return PrintOutcome(confirmed=False, state=PrinterState.UNKNOWN)
            processed = self._out(data)
            if processed:
                # Out whole: its GS r reply is the paper sensors' state, what DLE EOT 4 would say, and the printer's own
                # state the next job's check reads. Asking DLE EOT 1, 4 as well cost a printer answering in 300 ms
                # (Wi-Fi in power save) 0.6 s a ticket, and at a rush its tickets came a minute late (rush79, F2).
                state, confirmed = self._sensed, True
            else:
                # A DLE EOT reply means the printer has taken every byte before it (not that it printed them).
                replies = {} if processed is None else self._ask((1, 4), first_timeout=self._taking_time(data))
                if replies and parse_status(replies) == PrinterState.OFFLINE:
                    # Only the cause (DLE EOT 2) tells a cover opened mid-ticket from other offline states: asked only
                    # then, so a ticket that comes out costs no more queries.
                    replies |= self._ask((2,))
                if replies:
                    state, confirmed = parse_status(replies), True
                else:
                    state, confirmed = self._silent_after(data)
        doubtful = confirmed and self._replies.doubtful  # a state read, maybe from a reply to another query
        outcome = PrintOutcome(confirmed=confirmed, state=state, processed=bool(processed), doubtful=doubtful)
        # After a paper end the half ticket is on the old roll's tail: a cut would only waste the new one's start.
        self._cut_short_on_strip = not outcome.on_paper and state != PrinterState.PAPER_OUT
        if not outcome.on_paper:
            self._clear_rest()
        return outcome

    def _blind_end(self, data: bytes) -> None:
        """How the printer ended a job's connection after the job sent without asking. A reset may be a ticket dropped
        unread (the night74 probe: a connection its full interface had queued) or how its interface ends every one (an
        abortive close: the blind75 probe): it is the first only if the job before did not end so too. One that keeps
        its end open is waited for only a moment from then on (else a ticket each _job_time: the blind75 probe)."""
        wait = _KEEPS_OPEN_WAIT_S if self._blind_ended is End.OPEN else self._job_time(data)
        end = self.transport.finish(wait)
        resets, self._blind_ended = self._blind_ended is End.RESET, end
        if end is End.RESET and not resets:
            raise DeviceWriteError(
                self.name, self.transport.label, "reset the connection after the ticket: it may have dropped it unread"
            )
        if end is not End.CLOSED:  # it may still hold the job, and its connection
            self._sent_blind(data)

    def _sent_blind(self, data: bytes) -> None:
        """Moves on the time until which jobs sent without asking may wait in the printer: behind the ones before, but
        never more of them than its interface can hold."""
        now, took = time.monotonic(), self._job_time(data)
        self._blind_jobs.append(took)
        self._busy_until = min(max(now, self._busy_until) + took, now + sum(self._blind_jobs))

    def _out(self, data: bytes) -> bool | None:
        """Whether the job just sent is out of the printer: True when it answered GS r after it (within the time a slow
        printer takes for it), False when it stopped meanwhile (paper end, cover open, error) or does not
        answer GS r; None when it answered nothing at all."""
        if self._in_order_answers.given_up:
            return False  # a printer without GS r: the DLE EOT reply after the job is all there is
        self._write_in_order()
        # A printer known to answer GS r is never taken for one that does not: its ticket is out when it answers.
        known = self._in_order_known
        now = time.monotonic()
        deadline, taken_by = now + self._job_time(data), now + self._taking_time(data)
        waited_longer = False
        wait_s = _STOP_POLL_S
        while True:
            left = deadline - time.monotonic()
            sensors = self._replies.next(in_order=True, timeout=min(max(left, 0.0), wait_s))
            if sensors is not None:
                self._in_order_answers.note(True)
                self._heard(True)
                self._sensed = PrinterState.PAPER_NEAR_END if sensors & _GS_R_NEAR_END else PrinterState.ONLINE
                # Epson leaves GS r unanswered at paper end; some clones answer it with the paper end bits set.
                return not sensors & _GS_R_PAPER_END
            if left <= _STOP_POLL_S and known and not waited_longer:
                # Slower than planned, and GS r asked again goes unanswered too: still printing (a backlog ahead of
                # the ticket, a slower model); a stop on the way is still seen below.
                self._lost_gs_r()
                waited_longer, deadline = True, deadline + _AHEAD_S
                continue
            if left <= _STOP_POLL_S:
                break
            # The job is longer than the printer's buffer: it takes the rest only as it prints (print probe 4, F1).
            # While the rest waits on this side, a poll would wait behind it (the transport gives up on a printer that
            # takes nothing for write_timeout, so reads here are long enough for it to look); a poll already held up
            # that way answers late, saying the printer has the bytes, not that they are out. Either way its GS r
            # still says when, waited for as long as the job takes from now.
            held_back = self.transport.holding_back()
            wait_s = _HELD_BACK_WAIT_S if held_back else _STOP_POLL_S
            if not held_back and 2 in self._unasked | self._ignored:
                # A printer that ignores DLE EOT 2 cannot say it stopped (its silence read as one that answers nothing:
                # every ticket printed again as COPY): its GS r is waited for until the job's time is up.
                continue
            if not held_back:
                # On a slow line the poll waits behind the rest of the job's bytes: as long as they may take, or a
                # reply's.
                cause = self._real_time(2, timeout=max(taken_by - time.monotonic(), self._wait_s))
                late = cause is None and known and self._replies.late(timeout=self._late_time(data)) is not None
                self._heard(cause is not None or late)
                if cause is None and not late:
                    return None
                if cause is not None and stopped(cause):
                    return False  # GS r waits behind the stop: the job may be only partly out
                if cause is not None:
                    continue
            now = time.monotonic()
            deadline, taken_by = max(deadline, now + self._job_time(data)), now + self._wait_s
        if known:
            self._clear_rest()
            why = "though it answers GS r" if self._in_order_answers.answered else self._no_in_order_after_all()
            raise DeviceWriteError(self.name, self.transport.label, f"no GS r reply after the job in time, {why}")
        self._lost_gs_r()
        if self._in_order_answers.note(False):
            log.warning(
                "printer_no_in_order_status",
                device_id=self.name,
                hint="it answers DLE EOT but not GS r: a ticket is taken for printed once the printer has it, so "
                "paper that runs out while it prints from its buffer is not seen",
            )
        return False

    def _no_in_order_after_all(self) -> str:
        """A printer whose model answers GS r, that has not answered it once in this run, even after a buffer's worth
        more, while DLE EOT shows no stop: not the configured model (a clone answering DLE EOT only). This ticket
        fails (printed again as COPY, once: it might still be printing); from now on its DLE EOT reply after a job
        confirms it, as for a printer learnt to be without GS r. Returns why, for the job's error."""
        self._in_order_answers.disbelieve()
        self.caveat = self._wrong_model()
        log.warning("printer_no_in_order_status", device_id=self.name, hint=self.caveat)
        setting = self._setting
        return f"and it never answered GS r in this run, though {setting} says it does: taken for a printer without"

    @property
    def _setting(self) -> str:
        """What says its model answers status: its profile, or answers_status."""
        return f"printers.{self.name}." + (f'profile = "{self._model}"' if self._model else 'answers_status = "yes"')

    def _wrong_model(self) -> str:
        """The caveat of a printer whose model answers GS r that does not."""
        return (
            f"answers DLE EOT but has never answered GS r, though {self._setting} says it does: likely wrong for this "
            "model; paper that runs out while it prints from its buffer is not seen"
        )

    def _lost_gs_r(self) -> None:
        """After a job whose GS r went unanswered: GS r asked once more, alone. An answer at once tells a printer that
        lost the first one, and maybe some of the job (a serial printer discards what comes while its buffer is full):
        not known to be out, failed, as COPY. Silence: one that never answers it (a few clones), or one still busy."""
        self._write_in_order()
        if self._replies.next(in_order=True, timeout=self._wait_s) is not None:
            self._in_order_answers.note(True)
            self._clear_rest()
            raise DeviceWriteError(
                self.name, self.transport.label, "no GS r reply after the job, though it answers GS r: bytes were lost"
            )

    def _clear_rest(self) -> None:
        """The job is printed again whole, as COPY: what is left of it in the printer must not come out first. Its
        Clear response is not waited for (the connection closes next); a printer without the command ignores it."""
        self._send_clear()  # failing, it is gone as well: nothing of the job comes out of it then either

    def _send_clear(self) -> DeviceWriteError | None:
        """DLE DC4 fn=8 on this connection; the error when it could not go out."""
        try:
            with self._device_errors(DeviceWriteError):
                self.transport.write(_CLEAR_BUFFERS)
        except DeviceWriteError as err:
            return err
        return None

    def _silent_after(self, data: bytes) -> tuple[PrinterState, bool]:
        """No reply after a job, to GS r or DLE EOT: the state, and whether the printer answered after all. From a
        printer that answered before it, on a line that takes bytes whether it is on or not (a serial line; a network
        printer that lost power sends no reset), that is a printer switched off (or cut off) while it printed:
        OFFLINE, the job may be only partly out. A slow printer holding the line back, or a link holding its replies
        up, answers late: it gets as long as the slowest printer takes to print the job, and at least twice the time
        its bytes take, before that is said; when its late reply comes, it is asked afresh."""
        if not (self._status_answers.answered and self.transport.vanishes_silently):
            return PrinterState.UNKNOWN, False
        # One known to answer GS r was waited for already (_out): a late reply from it does not end the job there.
        if self._in_order_known or self._replies.late(timeout=self._late_time(data)) is None:
            self._heard(False)
            self._stopped_in_ticket, self.silence = True, _SILENT_IN_TICKET
            return PrinterState.OFFLINE, False
        replies = self._ask((1, 2, 4))
        return parse_status(replies), bool(replies)

    def _late_time(self, data: bytes) -> float:
        """How long a reply held up behind the job may come late: as long as the slowest printer takes to print it,
        and at least twice the time its bytes take."""
        return max(2 * self._taking_time(data), self._job_time(data))

    @property
    def _in_order_known(self) -> bool:
        """Its model answers GS r, or it has in this run: a ticket is out once it answers, not before."""
        return self._in_order_answers.expected or self._in_order_answers.answered

    def _taking_time(self, data: bytes) -> float:
        """How long a DLE EOT reply may take after a job: it waits behind the job's bytes on the slowest printer or
        line, not behind its paper."""
        line = self.transport.line_bytes_per_s
        return self._wait_s + len(data) / min(_SLOW_PRINTER_BYTES_PER_S, line or _SLOW_PRINTER_BYTES_PER_S)

    def _job_time(self, data: bytes) -> float:
        """How long the GS r reply may take after a job: it waits until the slowest printer has printed it."""
        printing = data.count(_LF) / _SLOW_PRINTER_LINES_PER_S + data.count(_CUT) * _SLOW_PRINTER_CUT_S
        return max(self._taking_time(data), self._wait_s + printing)

    def _check_ready(self) -> None:
        """Raises when the job must not go now."""
        try:
            with self._device_errors(DeviceWriteError):
                state, replies = self._ask_state()
        except DeviceWriteError as err:
            # Not one job byte went out, so to the spool this is a printer that is not there.
            raise DeviceUnreachableError(self.name, self.transport.label, "hung up before the job was sent") from err
        if not replies and state == PrinterState.OFFLINE:
            # A serial line (a USB adapter) would take the job all the same, and it would be lost: the spool waits.
            # So does one that never answered though its model does: it may not be a printer at all.
            raise DeviceUnreachableError(self.name, self.transport.label, f"{self.silence}, job not sent")
        if state in BLOCKING_STATES:
            why = error_detail(replies) if state == PrinterState.ERROR else ""
            raise PrinterNotReadyError(self.name, self.transport.label, state, why)

    def _ask_state(self) -> tuple[PrinterState, dict[int, int]]:
        """The printer's state and its replies. Silence is UNKNOWN from a printer that never answered in this run
        (unless its model answers), and OFFLINE from one that has: it is switched off or its cable pulled. From one
        that never answered though its model does, OFFLINE too: whatever takes the connection may not be a printer
        (its address given to another device after a power cut), and tickets sent to it would be lost."""
        answered_before = self._status_answers.answered
        replies = self._status_replies()
        self.silence = ""
        answers = answered_before or self._status_answers.expected or self._status_answers.earlier
        if self._replies.text:
            self.silence = self._talks_text(self._replies.text)
        elif not replies and answers and self._replies.not_a_reply is not None:
            self.silence = self._not_replies(self._replies.not_a_reply)
        elif not replies and answered_before:
            self.silence = _SILENT_IN_TICKET if self._stopped_in_ticket else self.transport.silent
        elif not replies and (self._status_answers.expected or self._status_answers.earlier):
            self.silence = self._never_answered()
        if self.silence:
            return PrinterState.OFFLINE, replies
        state = parse_status(replies)
        if state == PrinterState.OFFLINE:
            # The offline bit with no cause in the replies asked after it: each reply is that instant's state, and a
            # roll put in (a cover shut) between the queries reads so. Asked once more: a printer really offline
            # says so again; one whose fault just cleared was never offline.
            replies = self._status_replies() or replies
            state = parse_status(replies)
        return state, replies

    def _status_replies(self) -> dict[int, int]:
        replies = self._ask((1, 2, 4))
        if error_reported(replies):
            replies |= self._ask((3,))  # which error; for the technician's log
        return replies

    def _not_replies(self, byte: int) -> str:
        """Why a printer that sent bytes back, none of them a status reply, reads offline: not silence (another device
        holding it, the till?) but replies the agent cannot read (the netprinter80 probe, F3)."""
        return (
            f"answers status queries with bytes that are not ESC/POS status replies (0x{byte:02x}): check "
            f"printers.{self.name}.profile, or whether the printer is the model it names (its firmware?)"
        )

    def _talks_text(self, text: str) -> str:
        """Why a device that answers status queries with text reads offline, whatever it was before: no printer (the
        netprinter80 probe, F2); its tickets would be lost in it."""
        hint = getattr(self.transport, "not_a_printer", "") or getattr(
            self.transport, "never_answered", "is this its device?"
        )
        return f"answers status queries with text ({text!r}), not status replies: {hint}"

    def _never_answered(self) -> str:
        if self._status_answers.expected:
            why = f"a {self._model} answers them" if self._model else "it is set up as a printer that answers them"
        else:
            why = "the printer on this address answered them before the agent restarted"
        hint = getattr(self.transport, "never_answered", "is it switched on, and is this its device?")
        return f"has never answered a status query in this run, though {why}: {hint}"

    def _ask(self, queries: tuple[int, ...], *, first_timeout: float | None = None) -> dict[int, int]:
        """Sends DLE EOT n one at a time and reads each one-byte reply."""
        replies: dict[int, int] = {}
        timeout = self._wait_s if first_timeout is None else first_timeout
        for n in queries:
            if n in self._unasked:
                continue
            reply = self._real_time(n, timeout=timeout)
            if reply is None and not self._replies.text:
                reply = self._answered_late(n)
            if reply is None:
                # Asking on would only add waits: most printers that ignore one query ignore them all, and after a
                # reply held up on the way the next query waits for it first.
                break
            replies[n] = reply
            timeout = self._wait_s
        if self._replies.text:
            return {}  # letters, not replies
        self._heard(bool(replies))
        return replies

    def _real_time(self, n: int, *, timeout: float) -> int | None:
        """DLE EOT n and its reply, None when none came in time. A reply missed earlier on this connection would be
        taken for this query's: it is waited for first, a while, and passed over. One that does not come even then
        is a query the printer ignores (a clone with part of the command set): not waited for again in this run."""
        self._ignored |= self._replies.settle(timeout=_LATE_REPLY_TIMEOUTS * self._wait_s)
        self._replies.forget_real_time()
        self.transport.write(_DLE_EOT + bytes([n]))
        asked_at = time.monotonic()
        reply = self._replies.next(in_order=False, timeout=timeout)
        if reply is not None:
            self._ignored.discard(n)
        elif n not in self._ignored:
            self._replies.missed(n, asked_at)
        return reply

    @property
    def _wait_s(self) -> float:
        """How long a reply is waited for: status_timeout, or longer for a printer whose replies all come later."""
        return max(self.status_timeout, min(_SLOWEST_REPLY_S, _REPLY_MARGIN * self._reply_s))

    def _answered_late(self, n: int) -> int | None:
        """DLE EOT n went unanswered in time; its reply may only be late. Before, the exchange (and a poll's
        connection) ended there and a late reply was never an answer: a printer whose replies all come late (a slow
        bridge) was taken for one without status, or for one held by another device, offline for good. Its reply is
        waited for as long as one held up on the way, then n is asked again: late again, the printer always answers
        late, and its replies are waited for long enough from now on; at once, it was held up once (a lost segment,
        the till's turn at the printer): nothing learnt. Returns that reply; None when the late one did not come."""
        if n in self._ignored:
            return None
        took = self._replies.late(timeout=min((_LATE_REPLY_WAITS - 1) * self._wait_s, _SLOWEST_REPLY_S))
        if took is None or took > _SLOWEST_REPLY_S:
            return None
        asked_at = time.monotonic()
        reply = self._real_time(n, timeout=max(self._wait_s, min(_REPLY_MARGIN * took, _SLOWEST_REPLY_S)))
        again = time.monotonic() - asked_at
        if reply is not None and again > self._wait_s:
            self._slow_replies(again)
        return reply

    def _slow_replies(self, reply_s: float) -> None:
        """Its replies come ``reply_s`` after their queries, later than it is waited for: from now on it is waited
        for long enough, and the technician is told what to set so that it is from the start (not kept over a
        restart: the first exchange of the next run learns it again)."""
        self._reply_s = reply_s
        log.warning(
            "printer_slow_replies",
            device_id=self.name,
            reply_s=round(reply_s, 2),
            wait_s=round(self._wait_s, 2),
            hint=f"its status replies come {reply_s:.1f} s late (a slow link or print server): waited for "
            f"{self._wait_s:.1f} s from now on; set printers.{self.name}.status_timeout = {math.ceil(self._wait_s)} "
            "so that they are from the start",
        )

    def _heard(self, answered: bool) -> None:
        if self._replies.text:
            # Text is neither an answer nor silence: taken for a printer that cannot answer, it would get its tickets
            return
        self._stopped_in_ticket = self._stopped_in_ticket and not answered
        self._stalled = self._stalled and not answered
        if not self._status_answers.note(answered):
            return
        if answered:
            log.info("printer_answers_status", device_id=self.name)
            if self.caveat.startswith(_SILENT):  # it answers after all: not the line's settings
                self.caveat = ""
            return
        hint = (
            f"{_SILENT} (DLE EOT): paper out and cover open cannot be seen; tickets are sent without waiting for"
            " replies"
        )
        if (byte := self._replies.not_a_reply) is not None:  # not silent: what it sends is no status reply
            hint = f"{hint}; {self._not_replies(byte)}"
        if line := getattr(self.transport, "unanswered", ""):  # a serial line's likelier cause, for the state detail
            hint = self.caveat = f"{hint}; {line}"
        log.warning("printer_silent", device_id=self.name, hint=hint)
