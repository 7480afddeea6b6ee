"""The driver for a configured printer, on the transport its type names: the agent's spools and the doctor use it."""

from __future__ import annotations

from edge.config import AnyPrinterSettings
from edge.printing.driver import PrinterDriver
from edge.transports import FileTransport, TcpTransport, Transport


def make_driver(printer: AnyPrinterSettings) -> PrinterDriver:
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
        from edge.transports.serial import SerialTransport  # pyserial loads only for a serial printer

        transport = SerialTransport(
            printer.name,
            printer.device,
            baudrate=printer.baudrate,
            bytesize=printer.bytesize,
            parity=printer.parity,
            stopbits=printer.stopbits,
            flow_control=printer.flow_control,
            write_timeout=printer.write_timeout,
        )
    else:
        transport = FileTransport(printer.name, printer.path)
    return PrinterDriver(printer.name, transport, status_timeout=printer.status_timeout)
