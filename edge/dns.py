"""What a failed host-name lookup means, in words a technician can act on (central, the mail relay, the broker)."""

from __future__ import annotations

import socket

# glibc's answers (getaddrinfo(3)): EAI_AGAIN is also what a DNS server that never answers comes to after
# resolv.conf's timeout x attempts (a shop router's forwarder without internet); EAI_NONAME / EAI_NODATA: no such name.
_NO_ANSWER = {socket.EAI_AGAIN}
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


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
