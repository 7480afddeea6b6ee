"""Printer settings: what every printer shares (paper, model, status), and one type per transport with its own keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import edge.config._fields as f

PrinterType = Literal["network", "usb", "serial", "file"]
MIN_WIDTH = 24  # characters a line: below that a ticket's columns cannot be laid out


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrinterSettings:
    """What every printer has: how its tickets look and how often its status is asked (``[printers.NAME]``)."""

    name: str
    type: PrinterType
    # Characters a line; None: what the profile's head prints, at most 48 (a TM-T88V: 42, a 58 mm POS-5890: 32), else
    # 48 (edge.printing.profiles.line_width)
    width: int | None = dataclasses.field(default=None, metadata=f.check(f.between(MIN_WIDTH, 64, " characters")))
    # python-escpos capability profile, e.g. TM-T88V; checked where printing is set up (edge.printing.render)
    profile: str = "default"
    # auto: the profile's first of CP858, CP1252 (both with €), CP437 (€ prints as EUR); or one of them by name
    codepage: Literal["auto", "cp858", "cp1252", "cp437"] = "auto"
    # FS . (cancel Kanji/Chinese character mode) after ESC @ in every job: clones that ship in Chinese mode print
    # umlauts, ß and € then; false for a printer that would print the "." of an FS command it does not know
    cancel_kanji: bool = True
    cut: Literal["full", "partial", "none"] = "full"
    cash_drawer: bool = False  # kick the drawer on receipts paid in cash
    logo: Path | None = dataclasses.field(default=None, metadata=f.check(f.existing_file))  # top of receipts
    # QR codes: "auto" = the printer's own QR command when the profile has one, else an image made this way
    qr: Literal["auto", "native", "bitImageRaster", "graphics", "bitImageColumn"] = "auto"
    # some models need smaller image strips
    qr_fragment_height: int = dataclasses.field(default=960, metadata=f.check(f.at_least(8)))
    status_timeout: float = dataclasses.field(default=1.5, metadata=f.check(f.positive))
    # status query between jobs while idle
    status_poll_s: float = dataclasses.field(default=10.0, metadata=f.check(f.positive))
    # Whether the printer answers status queries (DLE EOT). auto: the profile says (Epson's TM models: yes), else the
    # agent learns it (never answered twice: a printer without status); yes: silence is a printer not ready (offline),
    # never one without status; no: it cannot answer (a one-way print server), its tickets go without asking
    answers_status: Literal["auto", "yes", "no"] = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkPrinterSettings(PrinterSettings):
    """A printer on TCP (port 9100), the usual kitchen printer."""

    type: Literal["network"] = "network"
    host: str = dataclasses.field(metadata=f.check(f.network_host, required="is required for a network printer"))
    port: int = dataclasses.field(default=9100, metadata=f.check(f.port))
    connect_timeout: float = dataclasses.field(default=3.0, metadata=f.check(f.positive))
    write_timeout: float = dataclasses.field(default=10.0, metadata=f.check(f.positive))


_USB_IDS = "and product_id are required for a usb printer (see `lsusb`)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UsbPrinterSettings(PrinterSettings):
    """A printer on USB (pyusb): ids as `lsusb` shows them, e.g. vendor_id = 0x04b8 (Epson)."""

    type: Literal["usb"] = "usb"
    vendor_id: int = dataclasses.field(metadata=f.check(f.usb_id, required=_USB_IDS))
    product_id: int = dataclasses.field(metadata=f.check(f.usb_id, required=_USB_IDS, required_key="vendor_id"))
    # Which one, when printers of one model share the ids: the serial number it reports, or the socket it is in.
    serial_number: str = ""
    usb_port: str = dataclasses.field(default="", metadata=f.check(f.usb_port))
    interface: int = 0
    in_ep: int = dataclasses.field(default=0x82, metadata=f.check(f.usb_id))
    out_ep: int = dataclasses.field(default=0x01, metadata=f.check(f.usb_id))
    write_timeout: float = dataclasses.field(default=10.0, metadata=f.check(f.positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SerialPrinterSettings(PrinterSettings):
    """A printer on a serial line (pyserial): a stable device name like /dev/serial/by-id/..., not /dev/ttyUSB0."""

    type: Literal["serial"] = "serial"
    device: str = dataclasses.field(
        metadata=f.check(required="is required for a serial printer, e.g. /dev/serial/by-id/usb-...")
    )
    baudrate: int = dataclasses.field(default=9600, metadata=f.check(f.positive))
    bytesize: int = dataclasses.field(default=8, metadata=f.check(f.one_of(5, 6, 7, 8)))
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    stopbits: float = dataclasses.field(default=1.0, metadata=f.check(f.one_of(1, 1.5, 2)))
    flow_control: Literal["none", "rtscts", "dsrdtr", "xonxoff"] = "none"
    write_timeout: float = dataclasses.field(default=10.0, metadata=f.check(f.positive))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FilePrinterSettings(PrinterSettings):
    """Each job a .bin file in ``path`` (debugging, demos); the loader's default is data_dir/out/NAME."""

    type: Literal["file"] = "file"
    path: Path


AnyPrinterSettings = NetworkPrinterSettings | UsbPrinterSettings | SerialPrinterSettings | FilePrinterSettings

PRINTER_TYPES: dict[str, type[AnyPrinterSettings]] = {
    "network": NetworkPrinterSettings,
    "usb": UsbPrinterSettings,
    "serial": SerialPrinterSettings,
    "file": FilePrinterSettings,
}
