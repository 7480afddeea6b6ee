"""Scanner drivers: serial (and keyboard-wedge) barcode/QR scanners whose scans mark tickets done and orders ready."""

from edge.scanners.codes import TICKET_PREFIX, LineSplitter, NoiseError, OrderRef, UnknownCode, decode_line, parse_code
from edge.scanners.reader import Scanner
from edge.scanners.recorder import ScanRecorder

__all__ = [
    "TICKET_PREFIX",
    "LineSplitter",
    "NoiseError",
    "OrderRef",
    "ScanRecorder",
    "Scanner",
    "UnknownCode",
    "decode_line",
    "parse_code",
]
