"""A stored print job to the bytes its printer gets: the spools, the status preview and `edge preview` share it."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from edge.clock import store_zone
from edge.config import PrinterSettings, Settings
from edge.orders.model import Order, parse_order
from edge.printing.profiles import line_width
from edge.printing.render import Renderer, print_options
from edge.states import JobKind, JobVariant
from edge.store.rows import PrintableJob


@dataclasses.dataclass(frozen=True)
class OperatorFiles:
    """What the store's own printing files hold, by digest: the template folder's files (bytes) and each printer's
    logo. Read once per run (edge.printing.check's operator_files, as PrintingCheck.files), so that each job's claim
    can name them (JobRenderer.rendered_with) without reading a file."""

    templates: str
    logos: tuple[tuple[str, str], ...]  # (printer, digest of its logo's bytes)

    def logo(self, printer: str) -> str:
        return next((digest for name, digest in self.logos if name == printer), "")


# The orders the last renders read, kept by their stored JSON: an order's tickets and receipt render moments apart, and
# reading the JSON costs about a third of a small ticket's render. A few only: a 500-item order's is ~0.5 MB.
_ORDERS_KEPT = 4

# A job of a printer that left the config (history, or held with no route) renders at the default width.
_UNCONFIGURED = PrinterSettings(name="unconfigured", type="file")


def make_renderer(settings: Settings, cache_dir: Path | None) -> Renderer:
    """The renderer with the operator's templates, the store's time zone and language; compiled templates are kept in
    ``cache_dir`` (the data dir's cache folder; None: nowhere, for a check that must write nothing)."""
    return Renderer(
        template_dir=settings.printing.template_dir,
        tz=store_zone(settings.agent.timezone),
        cache_dir=cache_dir / "templates" if cache_dir is not None else None,
        language=settings.agent.language,
    )


class RenderJob(Protocol):
    """JobRenderer.render, as the spools take it."""

    def __call__(self, job: PrintableJob, unprintable: list[str] | None = None) -> bytes: ...


class JobRenderer:
    """Renders jobs as the agent prints them: the job's printer's width and options, the store's language."""

    def __init__(
        self, settings: Settings, renderer: Callable[[], Renderer] | None = None, *, files: OperatorFiles
    ) -> None:
        """``renderer`` gives the renderer at each render (the agent's start-up check builds it lazily when cached);
        without it, one is made from the settings now. ``files``: the operator's templates and logos as this run read
        them (edge.printing.check.operator_files)."""
        self._settings = settings
        zone = store_zone(settings.agent.timezone)
        # Named once: each claim hashes these strings, reading no file (a claim is on the printing path).
        self._same_for_all = (files.templates, zone.key if zone else None)
        self._files = files
        # Thread-safe: the spools render in threads, several at once.
        self._read = functools.lru_cache(maxsize=_ORDERS_KEPT)(_read_stored)
        if renderer is None:
            made = make_renderer(settings, settings.agent.data_dir / "cache")
            renderer = lambda: made  # noqa: E731 (a constant provider)
        self._renderer = renderer

    def rendered_with(self, job: PrintableJob) -> str:
        """The settings that shape ``job``'s bytes, short enough to keep with each job: its language, line width and a
        hash of the rest (printer options, the template files' and its logo's content, the time zone; a receipt's store
        name and footer too), e.g. "de 42 3fa9c1d2".
        `edge preview` compares them with today's: it renders a printed job again, not what went to paper."""
        settings = self._settings
        printer = settings.printers.get(job.printer) or _UNCONFIGURED
        rest: list[object] = [print_options(printer), *self._same_for_all, self._files.logo(job.printer)]
        if job.kind == JobKind.RECEIPT:
            rest += [settings.agent.store_name or settings.agent.store_id, settings.receipts.footer]
        digest = hashlib.sha256(repr(rest).encode()).hexdigest()[:8]
        return f"{settings.agent.language} {line_width(printer)} {digest}"

    def render(self, job: PrintableJob, unprintable: list[str] | None = None) -> bytes:
        """Blocking CPU work (tens of ms for a long ticket): the agent calls it in a thread. ``unprintable`` gets the
        texts the printer's code page could not show (printed as "?")."""
        settings = self._settings
        order = self._read(job.payload)
        printer = settings.printers.get(job.printer) or _UNCONFIGURED
        options = print_options(printer)
        renderer = self._renderer()
        if job.kind == JobKind.TICKET:
            if job.station is None:  # only a row written by hand can lack it
                raise ValueError(f"ticket job {job.id} names no station")
            if job.variant in (JobVariant.CHANGE, JobVariant.CANCEL):
                if job.base_payload is None:
                    raise ValueError(f"job {job.id}: revision {job.change_from} of its order is not stored")
                struck = [self._read(p) for p in json.loads(job.struck_payloads or "[]")]
                return renderer.change(
                    order,
                    self._read(job.base_payload),
                    job.station,
                    struck=struck,
                    width=line_width(printer),
                    language=settings.agent.language,
                    copy=job.copy,
                    redirected_from=job.redirected_from,
                    options=options,
                    unprintable=unprintable,
                )
            return renderer.ticket(
                order,
                job.station,
                width=line_width(printer),
                language=settings.agent.language,
                copy=job.copy,
                redirected_from=job.redirected_from,
                released=job.released_at is not None,
                options=options,
                change_revision=job.revision if job.variant == JobVariant.ADDED else None,
                unprintable=unprintable,
            )
        return renderer.receipt(
            order,
            width=line_width(printer),
            language=settings.agent.language,
            copy=job.copy,
            options=options,
            revised=job.replaces_revision is not None,
            replaced_at=_moment(job.replaced_printed_at),
            replaced_number=job.replaced_number,
            drawer_opened=job.drawer_opened,
            store_name=settings.agent.store_name or settings.agent.store_id,
            footer=settings.receipts.footer,
            unprintable=unprintable,
        )


def _read_stored(payload: str) -> Order:
    """A stored payload as the order it is (read without a sender's limits, see parse_order)."""
    return parse_order(json.loads(payload), stored=True)


def _moment(wall: float | None) -> datetime | None:
    """A time the store wrote down (our wall clock, unix seconds) as a datetime."""
    return None if wall is None else datetime.fromtimestamp(wall, UTC)
