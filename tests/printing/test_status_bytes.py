"""Every combination of valid DLE EOT 1, 2, 3, 4 replies maps to the state the ESC/POS bit layout says."""

from __future__ import annotations

import itertools

from edge.printing.status import PrinterState, parse_status

# The variable bits of a status byte (bits 0 and 7 are always 0, bits 1 and 4 always 1).
VARIABLE = (0x04, 0x08, 0x20, 0x40)
VALID = [0x12 | sum(bits) for r in range(5) for bits in itertools.combinations(VARIABLE, r)]


def expected(printer: int, cause: int, errors: int, roll: int) -> PrinterState:
    """The rule, written out from the Epson manual: what stops printing wins over what only warns."""
    if cause & 0x04:  # n=2 bit 2: cover open
        return PrinterState.COVER_OPEN
    if cause & 0x20 or roll & 0x60:  # n=2 bit 5: stopped at paper end; n=4 bits 5/6: roll end
        return PrinterState.PAPER_OUT
    if cause & 0x40 or errors & 0x6C:  # n=2 bit 6: error; n=3: recoverable, cutter, unrecoverable, auto-recoverable
        return PrinterState.ERROR
    if printer & 0x08 and (cause & 0x08 or printer & 0x40):  # offline, fed by the FEED button (n=2 bit 3, n=1 bit 6)
        return PrinterState.PAPER_FEEDING
    if printer & 0x08:  # n=1 bit 3: offline
        return PrinterState.OFFLINE
    if roll & 0x0C:  # n=4 bits 2/3: roll near end
        return PrinterState.PAPER_NEAR_END
    return PrinterState.ONLINE


def test_every_valid_combination() -> None:
    """All 16^4 combinations of valid replies: the parsed state is the expected one, and each state occurs."""
    seen = set()
    for printer, cause, errors, roll in itertools.product(VALID, repeat=4):
        state = parse_status({1: printer, 2: cause, 3: errors, 4: roll})
        assert state == expected(printer, cause, errors, roll), (hex(printer), hex(cause), hex(errors), hex(roll))
        seen.add(state)
    assert seen == set(PrinterState) - {PrinterState.UNKNOWN}


def test_partial_answers_use_what_came() -> None:
    """A printer that answers only n=1 (then falls silent) is judged on n=1 alone; nothing at all is unknown."""
    for printer in VALID:
        assert parse_status({1: printer}) == expected(printer, 0x12, 0x12, 0x12)
    assert parse_status({}) == PrinterState.UNKNOWN
