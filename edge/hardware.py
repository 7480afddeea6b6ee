"""Which box this is: what its hardware says of itself, which a copy of its SD card does not carry (unlike
/etc/machine-id and everything else on the card). Read at the agent's start and by `edge doctor`; recorded with the
database (edge.store.identity.record_hardware), so that a card cloned or moved into another box is noticed."""

from __future__ import annotations

import os
import re
from pathlib import Path

# Test only: a folder read in place of / (its proc/cpuinfo, sys/class/...), for tests that put a card in another box.
ROOT_ENV = "EDGE_TEST_HARDWARE_ROOT"

_PI_SERIAL = re.compile(r"^Serial\s*:\s*([0-9a-fA-F]+)\s*$", re.MULTILINE)
_NO_MAC = "00:00:00:00:00:00"


def hardware_ids() -> frozenset[str]:
    """The box's identities, each named by its source: a Raspberry Pi's CPU serial (/proc/cpuinfo), the firmware's
    product UUID (/sys/class/dmi/id/product_uuid, readable by root only on most PCs), the MAC address of each network
    interface on a device (not loopback, bridges, VPNs). Two readings are the same box when they share one: an
    adapter added, a Wi-Fi left off or a UUID the agent's user cannot read changes no box. Empty when nothing can be
    read (a container): nothing is then checked. Reads small files only; never fails."""
    root = Path(os.environ.get(ROOT_ENV) or "/")
    found: set[str] = set()
    cpuinfo = _read(root / "proc" / "cpuinfo")
    if cpuinfo and (serial := _PI_SERIAL.search(cpuinfo)) and serial[1].strip("0"):
        found.add(f"cpu-serial:{serial[1].lower()}")
    uuid = _read(root / "sys" / "class" / "dmi" / "id" / "product_uuid")
    if uuid and uuid.strip().strip("0-"):
        found.add(f"product-uuid:{uuid.strip().lower()}")
    net = root / "sys" / "class" / "net"
    try:
        interfaces = sorted(net.iterdir())
    except OSError:
        interfaces = []
    for interface in interfaces:  # one on a device: not loopback, a bridge, a VPN
        mac = (_read(interface / "address") or "").strip().lower() if (interface / "device").exists() else ""
        if mac and mac != _NO_MAC:
            found.add(f"mac:{mac}")
    return frozenset(found)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # missing, or not this user's to read
        return None
