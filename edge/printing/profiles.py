"""python-escpos capability profiles: a printer's model as the library knows it, checked where printing is set up; and
the one way python-escpos is first imported."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from typing import Any

from edge.errors import ConfigError

_IMPORTING = threading.Lock()
_PICKLE_DIR = "ESCPOS_CAPABILITIES_PICKLE_DIR"


def load_escpos() -> None:
    """Imports python-escpos' printer database (~0.1 s: see layout.py), leaving nothing in the temporary folder.

    On import it makes a folder there for a pickle of the database and never removes it; it makes one even when
    ESCPOS_CAPABILITIES_PICKLE_DIR names another (``environ.get(..., mkdtemp())``): one per process, thousands over a
    test run, one per `edge config check` on a box. Once imported the database is in memory, so the folders this
    import made (its thread's mkdtemp calls, nobody else's) are removed. Call it before any import of escpos."""
    if "escpos.capabilities" in sys.modules:  # every ticket's layout asks: no lock once it is there
        return
    with _IMPORTING:
        if "escpos.capabilities" in sys.modules:
            return
        made: list[str] = []
        importer = threading.get_ident()
        real = tempfile.mkdtemp

        def recorded(*args: Any, **kwargs: Any) -> str:
            path = real(*args, **kwargs)
            if threading.get_ident() == importer:
                made.append(path)
            return path

        tempfile.mkdtemp = recorded  # type: ignore[assignment]
        try:
            import escpos.capabilities  # noqa: F401
        except OSError as err:
            if folder := os.environ.get(_PICKLE_DIR):  # the operator's own setting: say which one
                raise ConfigError(
                    _PICKLE_DIR,
                    f"{folder}: {err.strerror or err} (python-escpos keeps its printer"
                    " database there; unset it or name a folder the agent's user can write)",
                ) from err
            raise
        finally:
            tempfile.mkdtemp = real
            for path in made:
                shutil.rmtree(path, ignore_errors=True)


def check_profile(printer: str, profile: str) -> None:
    """ConfigError naming ``printers.PRINTER.profile`` when python-escpos has no capability profile of that name."""
    load_escpos()
    from escpos.capabilities import CAPABILITIES

    if profile not in CAPABILITIES["profiles"]:
        problem = f"unknown python-escpos profile {profile!r} (e.g. default, TM-T88V, TM-T20II)"
        raise ConfigError(f"printers.{printer}.profile", problem)
