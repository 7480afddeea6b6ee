"""Gives a scanned code its meaning: parse it, let the store apply it in one transaction (and publish it), log it."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import structlog

from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import ScannerSettings
from edge.durable import write_durably
from edge.errors import StoreUnavailableError
from edge.log import Summarised
from edge.scanners.codes import UnknownCode, parse_code
from edge.states import ScanOutcome
from edge.store.db import STORE_RETRY_S
from edge.store.scans import ScanRequest, ScanResult, ScanStore

log = structlog.get_logger()


_REREADS_LOGGED_S = 60.0  # re-reads not written: one log line per scanner this often, with how many since
_HELD_MAX = 1000  # scans kept while the store refuses writes (a full card): about a day of a busy kitchen's


class ScanRecorder:
    def __init__(self, store: ScanStore, *, clock: Clock = SYSTEM_CLOCK, left: Path | None = None) -> None:
        """``left``: where the scans held are kept for the next run of this boot, should this one stop or die first
        (the runtime directory: the card is what refuses them)."""
        self._store = store  # publishes ScanRecorded once a scan is committed
        self._clock = clock
        self._left = left
        # One write of that file at a time, in the order of the changes, also one a cancelled task left running.
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scans-left")
        # Refused by the store (a full or read-only card): recorded in order, with the time they were read (wall and
        # monotonic), once it writes again. A cook does not scan a ticket twice: lost, the order never showed ready.
        self._held: collections.deque[tuple[ScanRequest, float, float | None]] = collections.deque()
        self._retry: asyncio.Task[None] | None = None
        self._rereads = Summarised("scan_repeated", every_s=_REREADS_LOGGED_S, level="info", clock=clock.mono)
        self._unknown_rereads = Summarised("scan_unknown", every_s=_REREADS_LOGGED_S, clock=clock.mono)

    @property
    def held(self) -> int:
        """Scans waiting for the store to write again."""
        return len(self._held)

    async def resume(self) -> None:
        """The scans an earlier run of this boot left, recorded before any new one (in the order read)."""
        if self._left is None:
            return
        try:
            text = await asyncio.to_thread(self._left.read_text)
            # The monotonic time read is this boot's (the runtime directory lasts the boot); a file left by a run
            # before stop 68 has none: such a scan counts as read when recorded.
            left = [
                (ScanRequest(**s["request"]), float(s["at"]), None if s.get("read") is None else float(s["read"]))
                for s in json.loads(text)
            ]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as err:
            log.error("scans_left_unreadable", path=str(self._left), error=str(err))
            return
        log.info("scans_left_by_the_last_run", count=len(left))
        self._held.extendleft(reversed(left))
        self._retry = asyncio.create_task(self._record_held(wait_first=False), name="scans-held")

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
        try:
            if not self._held:
                return
            if await self._leave():
                log.warning("scans_left_for_the_next_run", count=len(self._held), path=str(self._left))
            else:
                log.error("scans_not_recorded", count=len(self._held), reason="the store refused writes until the stop")
        finally:
            self._writer.shutdown(wait=True)  # quick: a small file on a tmpfs

    async def _leave(self) -> bool:
        """The scans held, as they are now, in the file for the next run (none: no file); False if there is none."""
        if self._left is None:
            return False
        path, scans = self._left, [{"request": dataclasses.asdict(r), "at": at, "read": rd} for r, at, rd in self._held]

        def write() -> None:
            if scans:
                write_durably(path, json.dumps(scans).encode())
            else:
                path.unlink(missing_ok=True)

        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, write)
            return True
        except OSError as err:
            log.error("scans_not_left", path=str(path), error=str(err))
            return False

    async def record(self, scanner: ScannerSettings, code: str, read_at: float | None = None) -> ScanResult | None:
        """Store what the scan means; returns after the commit (None: held until the store writes again).
        ``read_at``: monotonic time the bytes arrived."""
        # When it was read: a store busy for seconds first must not move it to the next day, and a scan held for a full
        # card is judged against the reads before it by when it was read, not when recorded.
        at, read = self._clock.wall(), self._clock.mono()
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
                revision=parsed.revision,
                hand_out=scanner.hand_out,
                hand_out_gap_s=scanner.hand_out_gap_s,
            )
        if self._held:  # behind the scans waiting: they keep their order
            self._hold(request, at, read, None)
            await self._leave()
            return None
        try:
            result = await self._store.record(request, at=at, read=read)
        except StoreUnavailableError as err:
            self._hold(request, at, read, err)
            await self._leave()
            return None
        self._log(request, result, read_at)
        return result

    def _hold(self, request: ScanRequest, at: float, read: float, err: StoreUnavailableError | None) -> None:
        if len(self._held) >= _HELD_MAX:
            dropped, _, _ = self._held.popleft()
            log.error("scan_not_recorded", scanner=dropped.scanner, code=dropped.code, reason="too many held")
        self._held.append((request, at, read))
        if err is not None:
            log.warning("scans_wait_for_storage", scanner=request.scanner, code=request.code, error=str(err))
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._record_held(), name="scans-held")

    async def _record_held(self, *, wait_first: bool = True) -> None:
        while self._held:
            if wait_first:
                await asyncio.sleep(STORE_RETRY_S)
            wait_first = True
            recorded = 0
            with contextlib.suppress(StoreUnavailableError):  # still refused: next time round
                while self._held:
                    request, at, read = self._held[0]
                    result = await self._store.record(request, at=at, read=read)
                    self._held.popleft()
                    recorded += 1
                    self._log(request, result, None, late_s=round(self._clock.wall() - at, 1))
            if recorded:  # a death before this records them again: a scan repeated changes nothing
                await self._leave()

    def _log(self, request: ScanRequest, result: ScanResult, read_at: float | None, **more: Any) -> None:
        fields: dict[str, Any] = {
            "scanner": request.scanner,
            "order_id": result.order_id,
            "station": result.station,
            "outcome": result.outcome,
            "detail": result.detail,
            **more,
        }
        if read_at is not None:
            fields["stored_ms"] = round((time.monotonic() - read_at) * 1000, 1)
        if result.scan_id is None:  # what lies under a hands-free scanner: a line a minute per scanner, not 2 a second
            said = self._unknown_rereads if result.outcome == ScanOutcome.UNKNOWN else self._rereads
            said.note(request.scanner, code=request.code, **fields)
        elif result.outcome == ScanOutcome.UNKNOWN:
            log.warning("scan_unknown", code=request.code, **fields)
        elif result.outcome == ScanOutcome.ALREADY_DONE:
            log.info("scan_repeated", **fields)  # idempotent: nothing changed
        else:
            log.info("scan_recorded", **fields)
