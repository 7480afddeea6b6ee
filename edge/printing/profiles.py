"""python-escpos capability profiles: a printer's model as the library knows it, checked where printing is set up."""

from __future__ import annotations

from edge.errors import ConfigError


def check_profile(printer: str, profile: str) -> None:
    """ConfigError naming ``printers.PRINTER.profile`` when python-escpos has no capability profile of that name."""
    from escpos.capabilities import CAPABILITIES  # here: its printer database takes ~0.1 s to load (see layout.py)

    if profile not in CAPABILITIES["profiles"]:
        problem = f"unknown python-escpos profile {profile!r} (e.g. default, TM-T88V, TM-T20II)"
        raise ConfigError(f"printers.{printer}.profile", problem)
