"""The start-up printing check (every template and each printer's options rendered once, so a broken one stops the
start) and its fingerprinted cache: a restart with the same inputs skips the renders, and the imports they need
(jinja2; python-escpos and Pillow where a printer has an image), before READY; they are done right after READY in a
worker thread instead."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import importlib
import os
import sys
import threading
import time
from pathlib import Path

import structlog

import edge
from edge.clock import store_zone
from edge.config import Settings
from edge.heap import give_back_scratch
from edge.printing.jobs import OperatorFiles, make_renderer
from edge.printing.layout import prints_images
from edge.printing.profiles import line_width, load_escpos
from edge.printing.render import Renderer, check_printer, print_options
from edge.printing.text import CODEPAGES

log = structlog.get_logger()

CACHE_FILE = "printing-check"  # in the data dir's cache folder: the fingerprint of the last inputs that passed
_CODE_SUFFIXES = (".py", ".j2")


# Renderers that passed the check in this process, by the fingerprint of their inputs: the same inputs pass the same
# way, so an agent made again in one process (the test suite makes hundreds) takes the checked renderer instead of
# rendering every template and option again. An agent process makes one.
_PASSED: dict[str, Renderer] = {}


class PrintingCheck:
    """Checks printing before READY unless the cache says these very inputs passed before, and gives the checked
    renderer; on a cached start the renderer is built (and checked) at ``warm`` or at its first use."""

    def __init__(self, settings: Settings, *, cache_dir: Path | None) -> None:
        """Raises ConfigError (one readable line) when a template, profile or logo cannot print.

        Args:
            cache_dir: where the fingerprint and the compiled templates are kept (``data_dir/cache``); None: check at
                every start and write nothing (`edge config check` as root, where the data directory may not exist
                yet: made by root, the agent's user could not use it).
        """
        self._settings = settings
        self._cache_dir = cache_dir
        self._file = cache_dir / CACHE_FILE if cache_dir is not None else None
        self._building = threading.Lock()
        started = time.perf_counter()
        # The store's own files, read once for this run: the check's fingerprint and each job's claim name them.
        self.files = operator_files(settings)
        digest = fingerprint(settings, self.files)
        self.cached = self._file is not None and _read(self._file) == digest.encode()
        self._renderer: Renderer | None = _PASSED.get(digest)
        self._fingerprint: str | None = digest
        # A box's first start with only the agent's own templates (no template folder, no logo): what the store set
        # (each printer's profile and code page) is checked now, the templates right after READY, as on a cached
        # start. Those templates are rendered by the agent's tests in every language and width; jinja2 and their
        # compile cost a Pi ~0.1 s before READY.
        self.after_ready = (
            self._renderer is None and not self.cached and self._file is not None and not _store_supplied(settings)
        )
        if self.after_ready:
            for printer in settings.printers.values():
                check_printer(printer.name, print_options(printer), line_width(printer))
            result = "after_ready"
        elif self._renderer is None and not self.cached:
            self._renderer = self._checked(digest)
            give_back_scratch()
            result = "passed"
        else:
            result = "cached"
        took_ms = round(1000 * (time.perf_counter() - started), 1)
        log.info("printing_check", result=result, took_ms=took_ms)

    def renderer(self) -> Renderer:
        """The checked renderer; on a cached start the first call builds it (blocking: call it in a thread)."""
        renderer = self._renderer
        if renderer is None:
            with self._building:  # the warm-up and a first render may race; one builds, the other waits for it
                if self._renderer is None:
                    self._renderer = self._checked(self._fingerprint)
                renderer = self._renderer
        return renderer

    def _checked(self, digest: str | None) -> Renderer:
        """The check run; remembered (in this process, and for ``remember``) only if no input changed meanwhile:
        then the fingerprint is of what passed."""
        renderer = self._check()
        if digest is not None and fingerprint(self._settings) == digest:
            _PASSED[digest] = renderer
        else:
            self._fingerprint = None
        return renderer

    @property
    def warms(self) -> bool:
        """Whether the renders are left to ``warm``, right after READY."""
        return self.cached or self.after_ready

    def remember(self) -> None:
        """Records that these inputs passed (after a check that ran, under the data dir lock; a check left for after
        READY records itself when it passes). Written atomically and not fsynced: a cache lost or torn by a power cut
        only means the next start checks again."""
        if self.cached or self.after_ready:
            return
        self._write()

    def _write(self) -> None:
        if self._file is None or self._fingerprint is None:
            return
        temporary = self._file.with_name(f"{CACHE_FILE}.{os.getpid()}.tmp")
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(self._fingerprint, encoding="ascii")
            temporary.replace(self._file)
        except OSError as err:
            log.warning("printing_check_not_cached", path=str(self._file), error=str(err), effect="checked every start")
            with contextlib.suppress(OSError):  # e.g. the folder is not one: there is nothing to remove
                temporary.unlink(missing_ok=True)

    def warm(self) -> None:
        """Blocking (a worker thread, right after READY): loads and tries the printing stack now, so the first ticket
        does not wait for it. A failure here means an input the fingerprint missed: the cache is dropped, so the next
        start checks before READY and stops with the readable line; until then the jobs fail as they render."""
        started = time.perf_counter()
        try:
            self.renderer()
        except Exception as err:
            if self._file is not None:  # first: the log line says the next start checks (and a test reads it so)
                with contextlib.suppress(OSError):
                    self._file.unlink(missing_ok=True)
            log.error("printing_check_failed_after_ready", error=str(err), effect="tickets cannot render")
            return
        if self.after_ready:
            self._write()
        give_back_scratch()
        log.info("printing_warmed", took_ms=round(1000 * (time.perf_counter() - started), 1))

    def _check(self) -> Renderer:
        renderer = make_renderer(self._settings, self._cache_dir)  # renders every template once
        for printer in self._settings.printers.values():
            renderer.check_options(printer.name, print_options(printer), width=line_width(printer))
        return renderer


def _store_supplied(settings: Settings) -> bool:
    """Whether anything the store supplied prints: templates of its own or a logo (these are rendered before READY)."""
    return settings.printing.template_dir is not None or any(p.logo is not None for p in settings.printers.values())


def load_libraries(settings: Settings) -> None:
    """Imports what printing with these settings needs now: jinja2, and python-escpos (with its printer database) and
    Pillow if a printer prints images. For commands run as root: they become the agent's user for good once they have
    read the config, and every file they import after that must be readable by that user."""
    importlib.import_module("jinja2")
    # Codecs are imported on first use: jinja2's compiler reads templates' string literals with unicode-escape, and
    # tickets are encoded in one of the code pages.
    for codec in ("unicode-escape", *CODEPAGES):
        codecs.lookup(codec)
    try:
        images = any(prints_images(print_options(printer)) for printer in settings.printers.values())
    except KeyError:  # an unknown profile, which the check names; loading them does no harm
        images = True
    if images:
        load_escpos()
        for library in ("escpos.printer", "PIL.Image"):
            importlib.import_module(library)


def fingerprint(settings: Settings, files: OperatorFiles | None = None) -> str:
    """A digest of every input the check's result depends on: the printing settings of each printer (with the logo
    file's bytes), language, time zone, the template folder's files (bytes), the agent's own code and built-in
    templates (a checkout changes them without a version bump), the installed distributions (python-escpos, Pillow,
    jinja2 … by version), a capabilities file given to python-escpos, and Python's version. ``files``: the operator's
    files as just read (operator_files), else read now.

    The agent's own files count by size and modification time, not bytes: that is how Python itself decides whether
    to run a changed module again (its .pyc check), and it spares reading ~0.8 MB of source from an SD card at every
    boot."""
    digest = hashlib.blake2b(digest_size=20)

    def part(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode() + data)

    part("python", sys.version.encode())
    part("distributions", "\n".join(_distributions()).encode())
    for path in _files(Path(edge.__file__).parent):
        part(f"code:{path}", _stat(path))
    capabilities = os.environ.get("ESCPOS_CAPABILITIES_FILE")
    part("capabilities", b"" if capabilities is None else capabilities.encode() + b"\0" + _read(Path(capabilities)))
    agent = settings.agent
    zone = store_zone(agent.timezone)  # the box's own zone where the config names none
    part("agent", repr((agent.language, agent.timezone, zone.key if zone else None)).encode())
    part("operator_files", repr(files or operator_files(settings)).encode())
    for printer in settings.printers.values():
        part("printer", repr((printer.name, printer.width, print_options(printer))).encode())
    return digest.hexdigest()


def operator_files(settings: Settings) -> OperatorFiles:
    template_dir = settings.printing.template_dir
    templates = hashlib.blake2b(repr(template_dir).encode(), digest_size=8)
    if template_dir is not None:
        for path in _files(Path(template_dir), suffixes=None):
            data = _read(path)
            templates.update(f"{path}\0{len(data)}\0".encode() + data)
    logos = tuple(
        (printer.name, hashlib.blake2b(_read(Path(printer.logo)), digest_size=8).hexdigest())
        for printer in settings.printers.values()
        if printer.logo is not None
    )
    return OperatorFiles(templates=templates.hexdigest(), logos=logos)


def _read(path: Path) -> bytes:
    """The file's bytes; an unreadable file reads as its error, which differs from any content."""
    try:
        return path.read_bytes()
    except OSError as err:
        return f"\0unreadable\0{err.errno}".encode()


def _stat(path: Path) -> bytes:
    try:
        found = path.stat()
    except OSError as err:
        return f"\0unreadable\0{err.errno}".encode()
    return f"{found.st_size}:{found.st_mtime_ns}".encode()


def _files(folder: Path, suffixes: tuple[str, ...] | None = _CODE_SUFFIXES) -> list[Path]:
    """Every file below ``folder`` (of these suffixes), in a stable order; none if it is no folder."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [Path(root, name) for name in sorted(files) if suffixes is None or name.endswith(suffixes)]
    return found


def _distributions() -> list[str]:
    """Installed distributions with their versions, from the folder names pip leaves (no importlib.metadata: it costs
    more to import than the whole check saves): any install, upgrade or removal changes the list."""
    names = []
    for entry in sys.path:
        try:
            names += [n for n in os.listdir(entry or ".") if n.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue  # a zip, or a path that does not exist
    return sorted(names)
