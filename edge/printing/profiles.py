"""python-escpos capability profiles: a printer's model as the library knows it, checked where printing is set up."""

from __future__ import annotations

from escpos.capabilities import CAPABILITIES

from edge.errors import ConfigError


def check_profile(printer: str, profile: str) -> None:
    """ConfigError naming ``printers.PRINTER.profile`` when python-escpos has no capability profile of that name."""
    if profile not in CAPABILITIES["profiles"]:
        problem = f"unknown python-escpos profile {profile!r} (e.g. default, TM-T88V, TM-T20II)"
        raise ConfigError(f"printers.{printer}.profile", problem)
