"""A config for the `edge` commands run as subprocesses, and a loopback DNS server that knows no name."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.helpers import TOKEN, toml


def write_box_config(folder: Path, **sections: dict[str, Any]) -> Path:
    """edge.toml in ``folder``: one network printer on a closed loopback port, the API on 127.0.0.1 (``sections``:
    values set over these, per section)."""
    raw: dict[str, Any] = {
        "agent": {"store_id": "test-store", "data_dir": str(folder / "data"), "log_format": "json"},
        "api": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
        "printers": {"kitchen": {"type": "network", "host": "127.0.0.1", "port": 9, "status_timeout": 0.5}},
        "stations": {"kitchen": "kitchen"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    path = folder / "edge.toml"
    path.write_text(toml(raw), encoding="utf-8")
    return path


def unshare_permitted() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], check=False).returncode == 0
    except OSError:
        return False


class NoSuchNameDns:
    """A DNS server on 127.53.x.y:53 (UDP) answering every question NXDOMAIN, and a resolv.conf naming it: a name
    that does not resolve, looked up on loopback only. ``wrap()`` runs a command with that resolv.conf."""

    def __init__(self, folder: Path) -> None:
        self.resolv = folder / "resolv.conf"
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):
            ip = f"127.53.{os.getpid() % 250 + 1}.{random.randint(1, 254)}"
            try:
                self._sock.bind((ip, 53))
                break
            except OSError:
                continue
        else:
            raise RuntimeError("no free 127.53.x.y address for the DNS server")
        self.resolv.write_text(f"nameserver {ip}\noptions timeout:1 attempts:1\n", encoding="utf-8")
        threading.Thread(target=self._answer, daemon=True).start()

    def _answer(self) -> None:
        while True:
            try:
                query, sender = self._sock.recvfrom(512)
            except OSError:
                return  # closed
            # The query's id and question back, flags: a response, recursion available, RCODE 3 (no such name).
            self._sock.sendto(query[:2] + b"\x81\x83" + query[4:6] + b"\x00\x00\x00\x00\x00\x00" + query[12:], sender)

    def wrap(self) -> list[str]:
        mount = f'mount --bind {self.resolv} /etc/resolv.conf && exec "$@"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh"]

    def close(self) -> None:
        self._sock.close()
