"""Talks to systemd's service manager: READY, STATUS, WATCHDOG and STOPPING datagrams to $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

import structlog

log = structlog.get_logger()

# A start that takes long but gets on (a full card's purge before READY=1) asks systemd for this much more time, at
# most this often: sd_notify(3), EXTEND_TIMEOUT_USEC: "extend the startup ... timeout corresponding the current state.
# The value specified is a time in microseconds during which the service must send a new message. A service timeout
# will occur if the message is not received, but only if the runtime of the current state is beyond the original
# maximum times of TimeoutStartSec=". systemd.service(5): the first must come before TimeoutStartSec (120 s) is
# exceeded, then again within the time each one gave "until the service startup status is finished by READY=1".
# Three messages' time: one slow transaction is not a stuck start; a stuck one sends none and is stopped.
EXTEND_BY_S = 30
EXTEND_EVERY_S = 10


class Notifier:
    """The sd_notify protocol: one datagram per message; a no-op when the agent is not started by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # '@' names a socket in the abstract namespace: the kernel wants a leading NUL byte instead.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is for; a child started with our environment must stay quiet.
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1_000_000 if usec.isdigit() and int(usec) > 0 and mine else None
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._extended_at: float | None = None  # monotonic: when the start last asked for more time

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *lines: str) -> bool:
        """Sends one message; never raises, because systemd being away must not stop the agent."""
        if not self._address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as err:
            log.warning("systemd_notify_failed", socket=self._address.replace("\0", "@"), error=str(err))
            return False
        return True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def extend_start(self, status: str, *, now: float) -> None:
        """The start is getting on, and may take longer than TimeoutStartSec (the watchdog is not armed before
        READY=1, systemd.service(5)): EXTEND_BY_S more, with what it does, at most every EXTEND_EVERY_S of ``now``
        (monotonic). Called at each step it makes, so a start stuck in one asks for no more time."""
        if self._extended_at is not None and now - self._extended_at < EXTEND_EVERY_S:
            return
        self._extended_at = now
        self.notify(f"EXTEND_TIMEOUT_USEC={EXTEND_BY_S * 1_000_000}", f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def start_watchdog(self, status: Callable[[], Awaitable[str]] | None = None) -> None:
        """Pings at half WatchdogSec from the event loop itself: a stuck loop stops the pings and systemd restarts
        us."""
        if self.watchdog_s is not None and self._task is None:
            self._task = asyncio.create_task(self._watchdog(status), name="systemd-watchdog")

    async def _watchdog(self, status: Callable[[], Awaitable[str]] | None) -> None:
        assert self.watchdog_s is not None
        while True:
            lines = ["WATCHDOG=1"]
            if status is not None:
                try:
                    lines.append(f"STATUS={await status()}")
                except Exception as err:  # a status line is nice to have; the ping is what matters
                    log.warning("systemd_status_failed", error=str(err))
            self.notify(*lines)
            await asyncio.sleep(self.watchdog_s / 2)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
