"""What an ESC/POS printer's real-time status replies (DLE EOT n) mean for printing."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class PrinterState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    PAPER_NEAR_END = "paper_near_end"
    PAPER_FEEDING = "paper_feeding"  # a person holds the FEED button: a pause, not an outage
    ERROR = "error"
    UNKNOWN = "unknown"


# The detail of a printer's error state when it hung up in the middle of a ticket and answers status as usual: its
# line or power (a loose jack), not a fault it reports; the manager's mail says so (alerts: printer_error:(dropped)).
HUNG_UP_MID_TICKET = "hung up in the middle of a ticket"

# The spool pauses in these; near end and unknown still print.
BLOCKING_STATES = frozenset(
    {
        PrinterState.OFFLINE,
        PrinterState.PAPER_OUT,
        PrinterState.COVER_OPEN,
        PrinterState.ERROR,
        PrinterState.PAPER_FEEDING,
    }
)

# Every DLE EOT reply has bits 0 and 7 clear and bits 1 and 4 set. A byte that does not is noise
# or something else the printer sent; reading it as a status would make one up.
_FIXED_MASK = 0x93
_FIXED_BITS = 0x12

_PRINTER_OFFLINE = 0x08  # n=1 bit 3
_FEED_BUTTON_PRESSED = 0x40  # n=1 bit 6
_CAUSE_COVER_OPEN = 0x04  # n=2 bit 2
_CAUSE_FEED_BUTTON = 0x08  # n=2 bit 3: paper is being fed by the FEED button
_CAUSE_PAPER_END = 0x20  # n=2 bit 5: printing stopped at paper end
_CAUSE_ERROR = 0x40  # n=2 bit 6
_ERRORS = 0x6C  # n=3 bits 2, 3, 5, 6: recoverable, autocutter, unrecoverable, auto-recoverable
# n=4 reports each roll sensor in two bits; either bit counts, so a printer that sets only one
# still stops the spool instead of printing into nothing.
_ROLL_NEAR_END = 0x0C  # n=4 bits 2, 3
_ROLL_OUT = 0x60  # n=4 bits 5, 6


def is_valid_reply(byte: int) -> bool:
    return byte & _FIXED_MASK == _FIXED_BITS


# What else a printer sends, told apart by fixed bits (Citizen CT-S310 manual, 5.3 "Identification of Send Status"):
# a GS r reply is 0**0****, the first byte of an Automatic Status Back 0**1**00 (three bytes 0**0**** follow), and
# XON/XOFF are 0x11/0x13.
XON_XOFF = frozenset({0x11, 0x13})


def is_asb_start(byte: int) -> bool:
    return byte & _FIXED_MASK == 0x10


def is_in_order_reply(byte: int) -> bool:
    return byte & 0x90 == 0


def stopped(cause: int) -> bool:
    """The offline-cause reply (DLE EOT 2) says printing stopped: cover open, paper end or an error."""
    return is_valid_reply(cause) and bool(cause & (_CAUSE_COVER_OPEN | _CAUSE_PAPER_END | _CAUSE_ERROR))


def error_reported(replies: Mapping[int, int]) -> bool:
    """The offline-cause reply (n=2) says an error stopped the printer; n=3 says which."""
    cause = replies.get(2)
    return cause is not None and is_valid_reply(cause) and bool(cause & _CAUSE_ERROR)


class PrinterFault(enum.StrEnum):
    """Which error a printer in ERROR reports: the key a manager's mail words it by, in its own language
    (edge/alerts/render.py's printer_error:(cutter) …), where the English detail below was all it said (the i18n82
    probe, F2)."""

    CUTTER = "cutter"
    RECOVERABLE = "recoverable"
    UNRECOVERABLE = "unrecoverable"
    AUTO_RECOVERABLE = "auto_recoverable"
    UNNAMED = "unnamed"  # an error, but DLE EOT 3 names none (or was not answered)


# DLE EOT 3 (Epson's bit layout, the same in the clones' manuals): which error, and what a person does about it.
_ERROR_KINDS = (
    (
        0x08,
        PrinterFault.CUTTER,
        "auto-cutter error (paper jammed in the cutter?): pull the paper out of the cutter and close the cover",
    ),
    (
        0x04,
        PrinterFault.RECOVERABLE,
        "recoverable error (a mechanical fault): look at the printer, clear what blocks it",
    ),
    (
        0x20,
        PrinterFault.UNRECOVERABLE,
        "unrecoverable error: switch the printer off and on; if it comes back, it needs service",
    ),
    (
        0x40,
        PrinterFault.AUTO_RECOVERABLE,
        "auto-recoverable error (print head too hot, or the cover opened while printing): it goes on by itself",
    ),
)
_UNNAMED = ("error reported (which one, the printer does not say)", "error reported (none named)")
# Errors DLE ENQ recovers from once their cause is gone (auto-cutter and recoverable): without it, a power cycle.
_RECOVERABLE = 0x0C


def error_detail(replies: Mapping[int, int]) -> str:
    """What the error replies say, for people: the kinds DLE EOT 3 names, else that the printer named none."""
    errors = replies.get(3)
    if errors is None or not is_valid_reply(errors):
        return f"{_UNNAMED[0]}: look at the printer"
    kinds = [words for bit, _, words in _ERROR_KINDS if errors & bit]
    return "; ".join(kinds) or f"{_UNNAMED[1]}: look at the printer"


def fault_of(detail: str) -> PrinterFault | None:
    """The fault an error state's detail (error_detail's words, wherever a message carries them) names first; None
    when it names none of them (a printer that hung up mid-ticket)."""
    found = [(detail.find(words), fault) for _, fault, words in _ERROR_KINDS if words in detail]
    if found:
        return min(found)[1]
    return PrinterFault.UNNAMED if any(words in detail for words in _UNNAMED) else None


def recoverable(replies: Mapping[int, int]) -> bool:
    """An error DLE ENQ takes the printer out of, once its cause is gone (a cutter jam pulled out)."""
    errors = replies.get(3)
    return errors is not None and is_valid_reply(errors) and bool(errors & _RECOVERABLE)


def parse_status(replies: Mapping[int, int]) -> PrinterState:
    """The state from replies to DLE EOT n (keyed by n = 1..4); invalid or missing replies say nothing."""
    valid = {n: byte for n, byte in replies.items() if n in (1, 2, 3, 4) and is_valid_reply(byte)}
    if not valid:
        # Silence is not "paper OK": a printer that says nothing may be printing into nothing.
        return PrinterState.UNKNOWN
    printer, cause, errors, roll = (valid.get(n, _FIXED_BITS) for n in (1, 2, 3, 4))
    if cause & _CAUSE_COVER_OPEN:
        return PrinterState.COVER_OPEN
    if cause & _CAUSE_PAPER_END or roll & _ROLL_OUT:
        return PrinterState.PAPER_OUT
    if cause & _CAUSE_ERROR or errors & _ERRORS:
        return PrinterState.ERROR
    if printer & _PRINTER_OFFLINE:
        # Offline because a person feeds paper with the button (either reply says so: after a job only n=1 is asked):
        # it prints on once the button is let go.
        feeding = cause & _CAUSE_FEED_BUTTON or printer & _FEED_BUTTON_PRESSED
        return PrinterState.PAPER_FEEDING if feeding else PrinterState.OFFLINE
    if roll & _ROLL_NEAR_END:
        return PrinterState.PAPER_NEAR_END
    return PrinterState.ONLINE
