"""Printer models as python-escpos' capability database describes them, read here as the plain JSON it is (importing
python-escpos for it costs a Pi ~4 MB and ~0.1 s: see layout.py); and the one way python-escpos itself is first
imported, which only images need (a logo, a QR code drawn as an image)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from edge.config import MIN_WIDTH, PrinterSettings
from edge.errors import ConfigError
from edge.printing.text import codepage

_IMPORTING = threading.Lock()
_PICKLE_DIR = "ESCPOS_CAPABILITIES_PICKLE_DIR"
_CAPABILITIES_FILE = "ESCPOS_CAPABILITIES_FILE"  # python-escpos' own setting: a database in place of its own
FONT_A_DOTS = 12  # a character of the standard font (Font A, 12 x 24 on Epson's heads)
DEFAULT_WIDTH = 48  # characters a line on 80 mm paper at 203 dpi (576 dots), the usual kitchen printer's


@dataclasses.dataclass(frozen=True)
class Profile:
    """What the layout needs of a printer model: its code page table and the features it has."""

    name: str
    code_pages: Mapping[str, str]  # the ESC t number (as the database writes it) -> the code page's name
    features: frozenset[str]  # those the database marks true, e.g. qrCode, paperFullCut
    vendor: str = ""  # as the database writes it: Epson, Zjiang, Star Micronics…
    # Dots the head prints across the paper, where the database knows (TM-T88V: 512 at 180 dpi on 80 mm paper); a wider
    # image is refused by python-escpos.
    width_dots: int | None = None
    # Characters a line of its standard font (Font A) holds, where the database knows the head (TM-T88V: 42, a 58 mm
    # POS-5890: 32, a TM-T20II: 48); a line any longer is carried on to the next by the printer.
    columns: int | None = None
    # codepage() of code_pages by policy: every render asks, and the table has dozens of entries to look through.
    _codepages: dict[str, tuple[str, int]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def codepage(self, policy: str) -> tuple[str, int]:
        """The Python codec and the ESC t number for ``policy`` (text.codepage); ValueError when the model has none."""
        found = self._codepages.get(policy)
        if found is None:
            found = self._codepages[policy] = codepage(self.code_pages, policy)
        return found

    def supports(self, feature: str) -> bool:
        return feature in self.features

    @property
    def answers_status(self) -> bool:
        """Whether every printer of this model answers DLE EOT (real-time status). python-escpos' database does not
        say; Epson's TM models all do (the ESC/POS reference lists DLE EOT for every TM model, and each model's
        specification documents it), so a silent one is not a printer without status but something else (off, or
        another device on its address). Other vendors' profiles cover clones that may or may not answer: learnt."""
        return self.vendor == "Epson"


def profile(name: str) -> Profile:
    """The model ``name`` from the database python-escpos would use; KeyError when it has none of that name."""
    found = _profile(os.environ.get(_CAPABILITIES_FILE), name)
    if found is None:
        raise KeyError(name)
    return found


def check_profile(printer: str, name: str) -> None:
    """ConfigError naming ``printers.PRINTER.profile`` when python-escpos has no capability profile of that name."""
    try:
        profile(name)
    except KeyError:
        problem = f"unknown python-escpos profile {name!r} (e.g. default, TM-T88V, TM-T20II)"
        raise ConfigError(f"printers.{printer}.profile", problem) from None


@functools.lru_cache(maxsize=16)
def _profile(path: str | None, name: str) -> Profile | None:
    """The model ``name`` of the database at ``path`` (python-escpos' own when None), None when it has none; read
    once for each model a process asks for (a box: its printers' one or two). All 35 of python-escpos' models kept
    0.14 MB for good."""
    data = (_read_database(path).get("profiles") or {}).get(name)
    if not isinstance(data, dict):
        return None
    return Profile(
        name,
        {str(number): str(page) for number, page in (data.get("codePages") or {}).items()},
        frozenset(feature for feature, has in (data.get("features") or {}).items() if has),
        str(data.get("vendor") or ""),
        dots := _width_dots(data),
        _columns(data, dots),
    )


def columns(name: str) -> int | None:
    """The characters a line of model ``name``'s standard font holds; None where the database does not know its head
    (the default profile) or has no such model (the profile's own check says so)."""
    try:
        return profile(name).columns
    except KeyError:
        return None


def line_width(printer: PrinterSettings) -> int:
    """The characters a line of ``printer``'s tickets: its ``width``, else what its model prints up to 80 mm paper's
    usual 48, else 48."""
    if printer.width is not None:
        return printer.width
    fits = columns(printer.profile)
    return DEFAULT_WIDTH if fits is None or fits < MIN_WIDTH else min(fits, DEFAULT_WIDTH)


def check_width(printer: str, model: str, width: int) -> None:
    """ConfigError naming ``printers.PRINTER.width`` when a line that wide does not fit the model's head."""
    fits = columns(model)
    if fits is not None and width > max(fits, MIN_WIDTH):
        raise ConfigError(
            f"printers.{printer}.width",
            f"{width} characters do not fit a {model} line: it prints {fits} in its standard font (a longer line runs"
            f" on to the next); set width = {fits}, or leave it out",
        )


def _width_dots(data: dict[str, Any]) -> int | None:
    """media.width.pixels of a profile: a number, or "Unknown" (the default profile)."""
    pixels = ((data.get("media") or {}).get("width") or {}).get("pixels")
    return pixels if isinstance(pixels, int) and pixels > 0 else None


def _columns(data: dict[str, Any], dots: int | None) -> int | None:
    """Font A's columns as the database gives them, or its head's dots at 12 a character (Epson's Font A is 12 x 24),
    the larger: a few entries get one of the two wrong (NT-80-V-UL's 12 columns on 576 dots), and a width that only
    one allows is left to the technician."""
    if dots is None:
        return None
    font = ((data.get("fonts") or {}).get("0") or {}).get("columns")
    return max(font if isinstance(font, int) else 0, dots // FONT_A_DOTS)


def _read_database(path: str | None) -> dict[str, Any]:
    if path is None:
        spec = importlib.util.find_spec("escpos")  # finds the package without running it
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("printers", "python-escpos is not installed")
        path = str(Path(spec.submodule_search_locations[0], "capabilities.json"))
    try:
        with open(path, encoding="utf-8") as file:
            database = json.load(file)
    except (ValueError, OSError):
        # An operator's database may be YAML, or unreadable: python-escpos reads it (and says what is wrong)
        load_escpos()
        from escpos.capabilities import CAPABILITIES

        database = CAPABILITIES
    return database if isinstance(database, dict) else {}


def load_escpos() -> None:
    """Imports python-escpos' printer database (~0.1 s: see layout.py), leaving nothing in the temporary folder.

    On import it makes a folder there for a pickle of the database and never removes it; it makes one even when
    ESCPOS_CAPABILITIES_PICKLE_DIR names another (``environ.get(..., mkdtemp())``): one per process, thousands over a
    test run, one per `edge config check` on a box. Once imported the database is in memory, so the folders this
    import made (its thread's mkdtemp calls, nobody else's) are removed. Call it before any import of escpos."""
    if "escpos.capabilities" in sys.modules:  # every image asks: no lock once it is there
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
            _import_capabilities()
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


def _import_capabilities() -> None:
    """``import escpos.capabilities``, once more without its pickle when that cannot be read. python-escpos writes the
    pickle in place and never fsyncs it, and loads it with no check: after a power cut it can be empty, cut short or
    torn, and the import (so every start of an agent with a logo) then failed with EOFError or UnpicklingError. It is
    a cache of the YAML database: removed, the import parses the YAML and writes it again."""
    try:
        import escpos.capabilities  # noqa: F401
    except OSError:
        raise
    except Exception as err:
        folder = os.environ.get(_PICKLE_DIR)  # a *.capabilities.pickle there is only ever python-escpos' cache
        pickles = sorted(Path(folder).glob("*.capabilities.pickle")) if folder else []
        if not pickles:
            raise
        structlog.get_logger().warning(
            "escpos_cache_unreadable",
            path=", ".join(map(str, pickles)),
            error=f"{type(err).__name__}: {err}",
            effect="rebuilt",
        )
        for pickle in pickles:
            pickle.unlink(missing_ok=True)
        importlib.import_module("escpos.capabilities")
