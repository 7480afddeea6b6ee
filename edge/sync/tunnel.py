"""A TCP connection through the store network's web proxy (``central.proxy``): an HTTP CONNECT tunnel (RFC 9110
9.3.6), for the MQTT link. paho dials plain sockets (its own proxy support needs PySocks, unmaintained since 2019);
the central API's calls go through aiohttp's proxy support. Blocking: paho calls it on its network thread."""

from __future__ import annotations

import base64
import dataclasses
import socket
import urllib.parse

_HEAD_LIMIT = 16384


class ProxyRefusedError(ConnectionError):
    """The proxy answered the CONNECT with something other than 200: no tunnel."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Proxy:
    url: str  # http://host:port, checked by the config
    user: str = ""
    password: str = ""

    def open(self, host: str, port: int, timeout: float) -> socket.socket:
        """A connection to ``host:port`` through the proxy, which resolves the name; OSError if there is none."""
        parts = urllib.parse.urlsplit(self.url)
        sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=timeout)
        try:
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
            if self.user:
                login = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
                head += f"Proxy-Authorization: Basic {login}\r\n"
            sock.sendall((head + "\r\n").encode("latin-1"))
            status, reason = _status(sock, self.url)
            if status != 200:
                raise ProxyRefusedError(
                    f"the proxy {self.url} refused a tunnel to {target}: HTTP {status} {reason}", status
                )
            return sock
        except BaseException:
            sock.close()
            raise


def _status(sock: socket.socket, proxy: str) -> tuple[int, str]:
    """The status of the proxy's answer, read to the end of its head and no further: after a 200 the next byte is the
    broker's (which speaks only after us, so nothing is read past the head)."""
    answer = b""
    while not answer.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)  # one at a time: a byte past the head would belong to the tunnel
        if not byte:
            raise ConnectionError(f"the proxy {proxy} closed the connection instead of answering CONNECT")
        answer += byte
        if len(answer) > _HEAD_LIMIT:
            raise ConnectionError(f"the proxy {proxy} answered CONNECT with a head of over {_HEAD_LIMIT} bytes")
    version, _, rest = answer.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ConnectionError(f"the proxy {proxy} answered CONNECT with {answer[:80]!r}, not HTTP")
    return int(code), reason
