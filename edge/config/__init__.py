"""One typed settings object from a TOML file, the secrets file (edge.env) and EDGE_* variables; errors name the key.

The lowest layer: it imports the standard library and edge.errors only, so every part may import it.
"""

from edge.config._loader import (
    SECRETS_FILE,
    check_secrets_owner,
    load_settings,
    load_settings_around_faults,
    parse_settings,
    read_env,
    read_secrets,
    resolve_config_path,
    secrets_path,
)
from edge.config._printers import (
    AnyPrinterSettings,
    FilePrinterSettings,
    NetworkPrinterSettings,
    PrinterSettings,
    SerialPrinterSettings,
    UsbPrinterSettings,
)
from edge.config._sections import (
    AgentSettings,
    AlertSettings,
    ApiSettings,
    BackupSettings,
    CentralSettings,
    MqttSettings,
    PrintingSettings,
    ReceiptSettings,
    RetentionSettings,
    ScannerSettings,
    Settings,
    SmtpSettings,
    SpoolSettings,
    UnknownVariable,
)
from edge.config._values import Secret, is_loopback_host, parse_clock, parse_hours, parse_recipients, signing_key

__all__ = [
    "SECRETS_FILE",
    "AgentSettings",
    "AlertSettings",
    "AnyPrinterSettings",
    "ApiSettings",
    "BackupSettings",
    "CentralSettings",
    "FilePrinterSettings",
    "MqttSettings",
    "NetworkPrinterSettings",
    "PrinterSettings",
    "PrintingSettings",
    "ReceiptSettings",
    "RetentionSettings",
    "ScannerSettings",
    "Secret",
    "SerialPrinterSettings",
    "Settings",
    "SmtpSettings",
    "SpoolSettings",
    "UnknownVariable",
    "UsbPrinterSettings",
    "check_secrets_owner",
    "is_loopback_host",
    "load_settings",
    "load_settings_around_faults",
    "parse_clock",
    "parse_hours",
    "parse_recipients",
    "parse_settings",
    "read_env",
    "read_secrets",
    "resolve_config_path",
    "secrets_path",
    "signing_key",
]
