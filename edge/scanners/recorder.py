"""Gives a scanned code its meaning: parse it, let the store apply it in one transaction (and publish it), log it."""

from __future__ import annotations

import time
from typing import Any

import structlog

from edge.config import ScannerSettings
from edge.scanners.codes import UnknownCode, parse_code
from edge.states import ScanOutcome
from edge.store.scans import ScanRequest, ScanResult, ScanStore

log = structlog.get_logger()


class ScanRecorder:
    def __init__(self, store: ScanStore) -> None:
        self._store = store  # publishes ScanRecorded once a scan is committed

    async def record(self, scanner: ScannerSettings, code: str, read_at: float | None = None) -> ScanResult:
        """Store what the scan means; returns after the commit. ``read_at``: monotonic time the bytes arrived."""
        parsed = parse_code(code)
        if scanner.type == "hid" and (isinstance(parsed, UnknownCode) or parsed.station is None):
            # Typed in the other keyboard layout, a ticket code reads as nonsense: say which layout to set.
            from edge.scanners.hid import layout_hint  # evdev is there: a hid scanner read this code

            if hint := layout_hint(scanner.name, scanner.layout, code):
                parsed = UnknownCode(hint)
        if isinstance(parsed, UnknownCode):
            request = ScanRequest(
                scanner=scanner.name, code=code, order_ref=None, station=None, plain=True, detail=parsed.reason
            )
        else:
            request = ScanRequest(
                scanner=scanner.name,
                code=code,
                order_ref=parsed.ref,
                # The ticket says which station it is from; a plain id or number is for the scanner's own station.
                station=parsed.station or scanner.station,
                plain=parsed.station is None,
                hand_out=scanner.hand_out,
                hand_out_gap_s=scanner.hand_out_gap_s,
            )
        result = await self._store.record(request)
        fields: dict[str, Any] = {
            "scanner": scanner.name,
            "order_id": result.order_id,
            "station": result.station,
            "outcome": result.outcome,
            "detail": result.detail,
        }
        if read_at is not None:
            fields["stored_ms"] = round((time.monotonic() - read_at) * 1000, 1)
        if result.outcome == ScanOutcome.UNKNOWN:
            log.warning("scan_unknown", code=code, **fields)
        elif result.outcome == ScanOutcome.ALREADY_DONE:
            log.info("scan_repeated", **fields)  # idempotent: nothing changed
        else:
            log.info("scan_recorded", **fields)
        return result
