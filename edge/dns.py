"""What a failed host-name lookup means, in words a technician can act on (central, the mail relay, the broker, the
printers); a lookup that is given up on in time."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import socket
import threading
from collections.abc import Sequence
from typing import Any

# glibc's answers (getaddrinfo(3)): EAI_AGAIN is also what a DNS server that never answers comes to after
# resolv.conf's timeout x attempts (a shop router's forwarder without internet); EAI_NONAME / EAI_NODATA: no such name.
_NO_ANSWER = {socket.EAI_AGAIN}
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_UNRESOLVED_IN = re.compile(r"cannot resolve (\S+): ")

Addresses = Sequence[tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]]  # getaddrinfo's, to connect to

# Lookups still running, one per name and port: a caller that gave up on one and asks again waits for the same one
# instead of leaving another thread behind in the resolver each time.
_running: dict[tuple[str, int], concurrent.futures.Future[Addresses]] = {}
_running_lock = threading.Lock()


def lookup(host: str, port: int, timeout: float) -> Addresses:
    """Blocking: ``host``'s addresses for a TCP connection to ``port``, looked up now (never kept: a printer that DHCP
    moved is found at its new address), or socket.gaierror EAI_AGAIN after ``timeout``. glibc cannot be cut short
    (resolv.conf's timeout x attempts x servers, 10-30 s, for a DNS server that does not answer): the lookup goes on
    in a daemon thread that nothing waits for, a stop or an exit included."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # an address: nothing to look up, no thread
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    key = (host, port)
    with _running_lock:
        found = _running.get(key)
        if found is None:
            found = _running[key] = concurrent.futures.Future()
            threading.Thread(target=_look_up, args=(key, found), name=f"lookup-{host}", daemon=True).start()
    try:
        return found.result(timeout)
    except TimeoutError:
        raise socket.gaierror(socket.EAI_AGAIN, f"no answer in {timeout:g}s") from None


def _look_up(key: tuple[str, int], found: concurrent.futures.Future[Addresses]) -> None:
    try:
        try:
            addresses = socket.getaddrinfo(*key, type=socket.SOCK_STREAM)
        finally:
            with _running_lock:
                del _running[key]  # the next caller looks up anew
    except Exception as err:  # for the caller: a name the resolver cannot even encode fails there, not in this thread
        found.set_exception(err)
    else:
        found.set_result(addresses)


def unresolved(err: BaseException | None, host: str) -> str:
    """For a failed lookup of ``host`` (``err`` or what caused it): "cannot resolve HOST: why"; "" for any other
    error."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, socket.gaierror):
            if err.errno in _NO_ANSWER:
                why = "the DNS server does not answer (no internet, or the router's DNS is down)"
            elif err.errno in _NO_SUCH_NAME:
                why = "no such name (check the spelling)"
            else:
                why = err.strerror or str(err)
            return f"cannot resolve {host}: {why}"
        # aiohttp keeps the lookup's error as os_error; aiosmtplib and others chain it.
        err = getattr(err, "os_error", None) or err.__cause__ or err.__context__
    return ""


def unresolved_host(text: str) -> str:
    """The host whose lookup failed, as ``unresolved``'s words in ``text`` name it (a printer's state detail); ""
    when they are not in it."""
    found = _UNRESOLVED_IN.search(text)
    return found.group(1) if found else ""
