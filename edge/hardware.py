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
_USB_BUS = re.compile(r"usb\d+")  # a USB host's root hub in /sys/devices/...: usb1/1-2/1-2:1.0


# Ids a box keeps for its life: a Pi's CPU serial, a board's device-tree serial, the firmware's product UUID, a built-in
# adapter's MAC. A USB adapter's MAC ("usb-mac:") is not one: a dongle is swapped without a new box.
STABLE_PREFIXES = ("cpu-serial:", "dt-serial:", "product-uuid:", "mac:")


def hardware_ids() -> frozenset[str]:
    """The box's identities, each named by its source: a Raspberry Pi's CPU serial (/proc/cpuinfo), an ARM board's
    device-tree serial number, the firmware's product UUID (/sys/class/dmi/id/product_uuid, readable by root only on
    most PCs), the MAC address of each network interface on a device (not loopback, bridges, VPNs). A USB-attached
    adapter's MAC counts only when nothing else can be read, and then as "usb-mac:" (not stable: record_hardware in
    edge.store.identity decides nothing on it). Two readings are the same box when they share one: an adapter added,
    a Wi-Fi left off or a UUID the agent's user cannot read changes no box. Empty when nothing can be read (a
    container): nothing is then checked. Reads small files only; never fails."""
    root = Path(os.environ.get(ROOT_ENV) or "/")
    found: set[str] = set()
    cpuinfo = _read(root / "proc" / "cpuinfo")
    if cpuinfo and (serial := _PI_SERIAL.search(cpuinfo)) and serial[1].strip("0"):
        found.add(f"cpu-serial:{serial[1].lower()}")
    for tree in (root / "sys" / "firmware" / "devicetree" / "base", root / "proc" / "device-tree"):
        # One file under two names (proc's is a link to sys's): NUL-ended, readable by every user.
        if (dt_serial := (_read(tree / "serial-number") or "").strip("\x00 \n").lower()).strip("0"):
            found.add(f"dt-serial:{dt_serial}")
            break
    uuid = _read(root / "sys" / "class" / "dmi" / "id" / "product_uuid")
    if uuid and uuid.strip().strip("0-"):
        found.add(f"product-uuid:{uuid.strip().lower()}")
    net = root / "sys" / "class" / "net"
    try:
        interfaces = sorted(net.iterdir())
    except OSError:
        interfaces = []
    on_usb: set[str] = set()
    for interface in interfaces:  # one on a device: not loopback, a bridge, a VPN
        device = interface / "device"
        mac = (_read(interface / "address") or "").strip().lower() if device.exists() else ""
        if mac and mac != _NO_MAC:
            if _on_usb(device):
                on_usb.add(mac)
            else:
                found.add(f"mac:{mac}")
    return frozenset(found or {f"usb-mac:{mac}" for mac in on_usb})


def _on_usb(device: Path) -> bool:
    """An adapter on a USB bus (a dongle, a USB Ethernet adapter): its device's `subsystem` link, or the path it
    resolves to, names a USB bus."""
    try:
        if (device / "subsystem").resolve().name == "usb":
            return True
        return any(_USB_BUS.fullmatch(part) for part in device.resolve().parts)
    except OSError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # missing, or not this user's to read
        return None
