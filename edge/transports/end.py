"""How a device ended the connection a job went on, once the host had said the job's end (Transport.finish)."""

from __future__ import annotations

import enum


class End(enum.Enum):
    CLOSED = "closed"  # it ended it in turn, having read every byte (a TCP FIN)
    RESET = "reset"  # it reset it: bytes dropped unread, or its own way of ending every connection
    OPEN = "open"  # it kept it open past the wait
    UNKNOWN = "unknown"  # the line cannot tell (serial, USB, a file)
