"""Gives a scanned code its meaning: parse it, let the store apply it in one transaction, then log and publish the outcome."""

from __future__ import annotations

import time

import structlog

from edge.config import ScannerSettings
from edge.events import EventBus, ScanRecorded
from edge.scanners.codes import UnknownCode, parse_code
from edge.store.scans import ScanRequest, ScanResult, ScanStore

log = structlog.get_logger()


class ScanRecorder:
    def __init__(self, store: ScanStore, bus: EventBus) -> None:
        self._store = store
        self._bus = bus

    async def record(self, scanner: ScannerSettings, code: str, read_at: float | None = None) -> ScanResult:
        """Store what the scan means; returns after the commit. ``read_at``: monotonic time the bytes arrived."""
        parsed = parse_code(code)
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
        fields = {
            "scanner": scanner.name,
            "order_id": result.order_id,
            "station": result.station,
            "outcome": result.outcome,
            "detail": result.detail,
        }
        if read_at is not None:
            fields["stored_ms"] = round((time.monotonic() - read_at) * 1000, 1)
        if result.outcome == "unknown":
            log.warning("scan_unknown", code=code, **fields)
        elif result.outcome == "already_done":
            log.info("scan_repeated", **fields)  # idempotent: nothing changed
        else:
            log.info("scan_recorded", **fields)
        self._bus.publish(
            ScanRecorded(scanner=scanner.name, code=code, outcome=result.outcome, order_id=result.order_id)
        )
        return result
