"""The driver for a configured printer, on the transport its type names: the agent's spools and the doctor use it."""

from __future__ import annotations

import threading
from collections.abc import Collection

from edge.config import AnyPrinterSettings
from edge.printing.commands import Commands
from edge.printing.driver import PrinterDriver
from edge.printing.profiles import profile
from edge.transports import FileTransport, TcpTransport, Transport


def make_driver(
    printer: AnyPrinterSettings,
    *,
    devices: dict[str, threading.Lock] | None = None,
    answered: Collection[str] = (),
    without_in_order: Collection[str] = (),
) -> PrinterDriver:
    """``devices``: one lock per device, shared by the drivers of one agent. A printer set up under two names (a
    station each) is one device, and its drivers must take turns: a network printer serves one connection at a time
    and keeps the next one waiting unanswered (edge/sim/printer.py), where a status question would take it for
    offline; a serial line or a USB device has one opener. ``answered``: the devices whose printer answered a status
    query in an earlier run (JobStore.answered_devices); ``without_in_order``: those whose printer answered DLE EOT but
    not GS r (JobStore.devices_without_in_order)."""
    transport: Transport
    if printer.type == "network":
        transport = TcpTransport(
            printer.name,
            printer.host,
            printer.port,
            connect_timeout=printer.connect_timeout,
            write_timeout=printer.write_timeout,
        )
    elif printer.type == "usb":
        from edge.transports.usb import UsbTransport  # pyusb loads only for a USB printer

        transport = UsbTransport(
            printer.name,
            printer.vendor_id,
            printer.product_id,
            interface=printer.interface,
            in_ep=printer.in_ep,
            out_ep=printer.out_ep,
            write_timeout=printer.write_timeout,
            serial_number=printer.serial_number,
            usb_port=printer.usb_port,
        )
    elif printer.type == "serial":
        from edge.printing import driver as model
        from edge.transports.serial import Pace, SerialTransport  # pyserial loads only for a serial printer

        transport = SerialTransport(
            printer.name,
            printer.device,
            baudrate=printer.baudrate,
            bytesize=printer.bytesize,
            parity=printer.parity,
            stopbits=printer.stopbits,
            flow_control=printer.flow_control,
            write_timeout=printer.write_timeout,
            # A line without working flow control is sent at the pace of the slowest printer the driver waits for.
            pace=Pace(model._SLOW_PRINTER_BYTES_PER_S, model._SLOW_PRINTER_LINES_PER_S, model._SLOW_PRINTER_CUT_S),
        )
    else:
        transport = FileTransport(printer.name, printer.path)
    lock = None if devices is None else devices.setdefault(transport.device, threading.Lock())
    return PrinterDriver(
        printer.name,
        transport,
        status_timeout=printer.status_timeout,
        lock=lock,
        answers_status=answers_status(printer),
        model=printer.profile if printer.answers_status == "auto" else "",
        answered_before=transport.device in answered,
        without_in_order_before=transport.device in without_in_order,
        strip_end=_strip_end(printer),
    )


def _strip_end(printer: AnyPrinterSettings) -> bytes:
    """What ends a paper strip on this printer, as its tickets end."""
    try:
        model = profile(printer.profile)
    except KeyError:  # an unknown profile stops the start-up elsewhere (edge.printing.render)
        model = profile("default")
    commands = Commands(model)
    commands.end_strip(printer.cut)
    return commands.output


def answers_status(printer: AnyPrinterSettings) -> bool | None:
    """Whether the printer answers status queries: its ``answers_status`` setting, or with "auto" its profile (True
    for a model that always does, None: to be learnt)."""
    if printer.answers_status != "auto":
        return printer.answers_status == "yes"
    try:
        return profile(printer.profile).answers_status or None
    except KeyError:  # an unknown profile stops the start-up elsewhere (edge.printing.render); learnt meanwhile
        return None
