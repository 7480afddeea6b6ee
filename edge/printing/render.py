"""Renders orders, receipts and test pages to ESC/POS bytes from jinja2 templates (built-in or the operator's)."""

from __future__ import annotations

import contextlib
import dataclasses
import traceback
import types
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.clock import repeated_hour
from edge.config import MIN_WIDTH, PrinterSettings
from edge.errors import ConfigError
from edge.orders.changes import diff_station, struck_lines
from edge.orders.model import Customer, Fulfilment, Item, Modifier, Order, Payment, TaxLine, Totals
from edge.printing import labels
from edge.printing.layout import DEFAULT_OPTIONS, Layout, PrintOptions, finalize, template_globals
from edge.printing.lines import NO_BREAK
from edge.printing.profiles import check_profile, check_width, profile
from edge.printing.text import UNPRINTABLE_NOTE, by_id, encodes, printable, printed_number, read_as
from edge.states import OrderStatus

if TYPE_CHECKING:
    import jinja2

__all__ = ["DEFAULT_OPTIONS", "TEMPLATES", "PrintOptions", "Renderer", "print_options"]

TEMPLATES = ("ticket.j2", "receipt.j2", "test_page.j2", "change.j2")
_BUILTIN_DIR = Path(__file__).parent / "templates"


def ticket_code(order: Order, station: str) -> str:
    """The QR code on a station's ticket or change ticket (edge/scanners/codes.py): a later revision's carries it, so
    the original's scan is told from the change ticket's and does not mark done what a change added since."""
    return f"edge:v1:{order.id}:{station}" + (f":{order.revision}" if order.revision > 1 else "")


def _codec(options: PrintOptions) -> str:
    return profile(options.profile).codepage(options.codepage)[0]


def _tell_unprintable(items: Sequence[Item], codec: str, told: list[str] | None, order: Order | None = None) -> None:
    """Adds to ``told`` the items' names and modifiers that print with "?" (characters the code page lacks), and
    UNPRINTABLE_NOTE for a note or an allergen that does (the items', and ``order``'s: a ticket's head prints them);
    the guest's name and the rest of the ticket are not told."""
    if told is None:
        return
    guest_texts = [order.note or "", *order.allergens] if order is not None else []
    if order is not None and order.number.endswith(by_id(order.id)) and order.number not in told:
        told.append(order.number)  # the number shows nothing (see _readable): the till's numbering needs changing
    for item in items:
        for text in (item.name, *(modifier.name for modifier in item.modifiers)):
            if _loses(text, codec) and text not in told:
                told.append(text)
        guest_texts += [item.note or "", *item.allergens]
    if any(_loses(text, codec) for text in guest_texts) and UNPRINTABLE_NOTE not in told:
        told.append(UNPRINTABLE_NOTE)


def _loses(text: str, codec: str) -> bool:
    return not encodes(text, codec) and printable(text, codec).count("?") > text.count("?")


def _readable(order: Order, codec: str) -> Order:
    """The order with its SKU beside each item name the printer's code page cannot show one letter or digit of: "1x
    ???? (KP-12)" for a name in Chinese, so that the cook can still tell the dish (print probe 3, F2). And its number
    as printed: a template sizes the number by its length (double width only if it fits), and "Щ" prints as "Shch";
    one with no letter or digit the code page shows ("🍕") with the order's id beside it."""
    items = tuple(
        item if _shows_something(item.name, codec) else dataclasses.replace(item, name=f"{item.name} ({item.sku})")
        for item in order.items
    )
    number = printed_number(order.number, order.id, codec)
    if (items, number) == (order.items, order.number):
        return order
    return dataclasses.replace(order, items=items, number=number)


def _before(was: str, now: str, codec: str) -> str | None:
    """``was``, what the paper before said, where it reads otherwise than ``now`` on this paper, else None: a soft
    hyphen or a no-break space a revision adds or drops is no news for the cook (the inject81 probe, F5)."""
    return None if read_as(was, codec) == read_as(now, codec) else was


def _shows_something(text: str, codec: str) -> bool:
    return any(char.isalnum() for char in (text if encodes(text, codec) else printable(text, codec)))


class Renderer:
    """Turns orders into ESC/POS bytes; an operator may override each template by putting a file of the same name in
    ``template_dir``."""

    def __init__(
        self,
        *,
        template_dir: Path | None = None,
        tz: tzinfo | None = None,
        cache_dir: Path | None = None,
        language: str = "de",
    ) -> None:
        """Compile (and try out) every template now, so a broken override stops the agent at start-up.

        Args:
            template_dir: operator templates that win over the built-in ones, file by file.
            tz: time zone for printed times; the system's local zone when not given.
            cache_dir: where compiled templates are kept across starts (compiling them all takes ~40 ms).
            language: the store's, which the templates are tried in (a branch for another language never prints).
        """
        import jinja2  # here, not with the module: a cached start-up check reaches READY without it (check.py)

        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(_BUILTIN_DIR)]
        if template_dir is not None:
            if not Path(template_dir).is_dir():
                raise ConfigError("printing.template_dir", f"{template_dir}: not a directory")
            loaders.insert(0, jinja2.FileSystemLoader(template_dir))
        self._env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            undefined=jinja2.StrictUndefined,  # a misspelt field fails the start-up check instead of printing blank
            finalize=finalize,
            bytecode_cache=_bytecode_cache(cache_dir) if cache_dir is not None else None,
        )
        self._env.globals.update(template_globals())
        self._tz = tz
        self._templates: dict[str, jinja2.Template] = {}
        for name in TEMPLATES:
            try:
                self._templates[name] = self._env.get_template(name)
            except jinja2.TemplateSyntaxError as err:
                raise ConfigError("printing.template_dir", f"{name}: {err.message}, line {err.lineno}") from err
            except (jinja2.TemplateError, OSError, UnicodeDecodeError) as err:
                raise ConfigError("printing.template_dir", f"{name}: {err}") from err
        self._try_templates(language)

    def ticket(
        self,
        order: Order,
        station: str,
        *,
        width: int = 48,
        language: str = "de",
        copy: bool = False,
        redirected_from: str | None = None,
        released: bool = False,
        options: PrintOptions = DEFAULT_OPTIONS,
        change_revision: int | None = None,
        unprintable: list[str] | None = None,
    ) -> bytes:
        """The production ticket with ``station``'s items; ``redirected_from`` names where it should have printed.

        ``released``: a person let a held (stale) ticket print, so its order time shows the date too.
        ``change_revision``: the station's first ticket, brought by this revision of the order: marked as a change.
        ``unprintable`` (each render of a job may take one): gets the texts the printer's code page could not show.
        """
        _check_job(width, language)
        codec = _codec(options)
        order = _readable(order, codec)
        items = order.production_items(station)
        _tell_unprintable(items, codec, unprintable, order)
        t = labels.LABELS[language]
        marks = ([t["copy"]] if copy else []) + ([t["changed"]] if change_revision is not None else [])
        return self._render(
            "ticket.j2",
            width=width,
            language=language,
            options=options,
            order=order,
            station=station,
            items=items,
            copy=copy,
            redirected_from=redirected_from,
            fulfilment=labels.describe_fulfilment(order.fulfilment, language),
            customer=_guest(order),
            created=self._clock(order.created_at, labels.DATE_TIME[language] if released else "%H:%M"),
            due=self._due(order, language),
            qr_code=ticket_code(order, station),
            change_revision=change_revision,
            allergens=", ".join(order.allergens),
            note=order.note,
            closing=_closing(marks, order.number, len(items), width=width, language=language),
        )

    def _due(self, order: Order, language: str) -> str | None:
        """The due time as a ticket shows it: the time, and the date too when it is not the day of the order."""
        if order.fulfilment.due_at is None:
            return None
        due, created = self._local(order.fulfilment.due_at), self._local(order.created_at)
        return _shown(due, "%H:%M" if due.date() == created.date() else labels.OTHER_DAY[language])

    def change(
        self,
        order: Order,
        before: Order,
        station: str,
        *,
        struck: Sequence[Order] = (),
        width: int = 48,
        language: str = "de",
        copy: bool = False,
        redirected_from: str | None = None,
        options: PrintOptions = DEFAULT_OPTIONS,
        unprintable: list[str] | None = None,
    ) -> bytes:
        """The change ticket (ÄNDERUNG / CHANGED) from ``before`` (the revision on paper) to ``order`` at one station;
        when ``order`` is cancelled, the void ticket (STORNO / CANCELLED) striking what ``before`` and the ``struck``
        revisions (later ones that may be on paper too) put there."""
        _check_job(width, language)
        codec = _codec(options)
        order, before = _readable(order, codec), _readable(before, codec)
        struck = [_readable(revision, codec) for revision in struck]
        _tell_unprintable([item for item in order.items if item.station == station], codec, unprintable, order)
        cancelled = order.status == "cancelled"
        fulfilment = labels.describe_fulfilment(order.fulfilment, language)
        before_fulfilment = labels.describe_fulfilment(before.fulfilment, language)
        due, before_due = self._due(order, language), self._due(before, language)
        lines = struck_lines([before, *struck], station) if cancelled else diff_station(before, order, station)
        allergens = ", ".join(order.allergens)
        t = labels.LABELS[language]
        marks = ([t["copy"]] if copy else []) + [t["cancelled"] if cancelled else t["changed"]]
        return self._render(
            "change.j2",
            width=width,
            language=language,
            options=options,
            order=order,
            station=station,
            cancelled=cancelled,
            lines=lines,
            reason=order.cancel_reason,
            copy=copy,
            redirected_from=redirected_from,
            fulfilment=fulfilment,
            # What the head said on the paper before, where it changed (None: as before)
            fulfilment_before=None if before_fulfilment == fulfilment else before_fulfilment,
            due=due,
            due_before=None if before_due == due else (before_due or labels.LABELS[language]["asap"]),
            customer=_guest(order),
            number_before=_before(before.number, order.number, codec),  # what the cook's paper shows
            created=self._clock(order.created_at, "%H:%M"),
            qr_code=ticket_code(order, station),  # scanned like a ticket, the newest of its station
            # The order's allergies and note as they are now, and (struck) as the paper before said them where they
            # changed: the cook cooks what this ticket adds by them too.
            allergens=allergens,
            allergens_before=_before(", ".join(before.allergens), allergens, codec) or "",
            note=order.note,
            note_before=_before(before.note or "", order.note or "", codec) or None,
            closing=_closing(marks, order.number, len(lines), width=width, language=language),
        )

    def receipt(
        self,
        order: Order,
        *,
        width: int = 48,
        language: str = "de",
        copy: bool = False,
        store_name: str = "",
        footer: str = "",
        options: PrintOptions = DEFAULT_OPTIONS,
        revised: bool = False,
        replaced_at: datetime | None = None,
        replaced_number: str | None = None,
        unprintable: list[str] | None = None,
        drawer_opened: bool | None = None,
    ) -> bytes:
        """The customer's receipt: every item with its price, totals, taxes and payment; opens the drawer for cash if
        configured (once a sale: not where ``drawer_opened`` says a receipt of the sale has, nor on a revised one;
        None, not known: not on a COPY).

        ``revised``: a receipt of an older revision of the order may be in the guest's hand (printed at
        ``replaced_at``, when known): this one says at its head that it is the revised receipt and replaces that one,
        so two receipts of one order number with two totals are told apart; ``replaced_number``: the order's number on
        that one, named as the change ticket does when a revision renumbered the order.
        """
        _check_job(width, language)
        codec = _codec(options)
        number_before = None
        if revised and replaced_number is not None and replaced_number != order.number:
            number_before = printed_number(replaced_number, order.id, codec)
        order = _readable(order, codec)
        _tell_unprintable(order.items, codec, unprintable)
        return self._render(
            "receipt.j2",
            width=width,
            language=language,
            options=options,
            # Once a sale: not where a receipt of it has (a COPY of one printed), nor on a revised receipt: the cash
            # was taken with the sale's first one. A COPY of a receipt that never reached the printer opens it.
            drawer=options.cash_drawer
            and not (copy if drawer_opened is None else drawer_opened)
            and not revised
            and order.payment is not None
            and (order.payment.method, order.payment.status) == ("cash", "paid"),
            order=order,
            copy=copy,
            revised=revised,
            # One word: a line too long breaks before the date, never between it and the time.
            replaced_at=self._clock(replaced_at, labels.DATE_TIME[language]).replace(" ", NO_BREAK)
            if replaced_at
            else None,
            number_before=number_before,
            store_name=store_name,
            footer_lines=footer.splitlines(),  # the operator's footer may span lines
            fulfilment=labels.describe_fulfilment(order.fulfilment, language),
            customer=order.customer.name if order.customer else None,
            created=self._clock(order.created_at, labels.DATE_TIME[language]),
            payment=labels.describe_payment(order.payment, language) if order.payment else None,
            money=lambda amount: labels.money(amount, order.totals.currency, language),
            percent=lambda rate: labels.percent(rate, language),
        )

    def test_page(
        self, *, printer_name: str, width: int = 48, language: str = "de", options: PrintOptions = DEFAULT_OPTIONS
    ) -> bytes:
        """A page that shows the technician the width, the character set, the styles and a QR code work."""
        _check_job(width, language)
        return self._render(
            "test_page.j2",
            width=width,
            language=language,
            options=options,
            printer_name=printer_name,
            profile=options.profile,
            ruler="".join(str(n % 10) for n in range(1, width + 1)),
            qr_code=f"edge:test:{printer_name}",
        )

    def check_options(self, printer: str, options: PrintOptions, *, width: int) -> None:
        """Render a receipt and a ticket with one printer's options, so a bad profile or logo stops the agent at
        start-up."""
        check_printer(printer, options, width)
        try:
            self.receipt(_SAMPLE_ORDER, width=width, options=options)
            self.ticket(_SAMPLE_ORDER, "kitchen", width=width, options=options)
        except (OSError, ValueError) as err:  # Pillow's UnidentifiedImageError (not an image) is an OSError
            raise ConfigError(f"printers.{printer}", f"cannot print with these options: {err}") from err

    def _render(
        self, name: str, *, width: int, language: str, options: PrintOptions, drawer: bool = False, **context: Any
    ) -> bytes:
        # A namespace, not a dict: in a template t.copy on a dict would be dict.copy.
        output = self._templates[name].render(
            t=types.SimpleNamespace(**labels.LABELS[language]), width=width, language=language, **context
        )
        job = Layout(width, options)
        if drawer:
            # First, with the printer's set-up: a kick after the cut is lost when the roll ends in the receipt (a
            # printer does not act on bytes after paper end, the rest is cleared) and its COPY never kicks.
            job.commands.open_drawer()
        job.write(output)
        return job.commands.output

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(self._tz)

    def _clock(self, moment: datetime, shown: str) -> str:
        """The moment in the store's time as ``shown`` (a strftime format); see _shown."""
        return _shown(self._local(moment), shown)

    def _try_templates(self, language: str) -> None:
        """Render each template once in ``language``, so an override that fails only when it runs (or only in the
        language the store prints in) still fails at start-up."""
        checks: dict[str, Callable[[], bytes]] = {
            "ticket.j2": lambda: (
                self.ticket(
                    _SAMPLE_ORDER, "kitchen", language=language, copy=True, redirected_from="bar", change_revision=2
                )
                + self.ticket(_BARE_ORDER, "kitchen", language=language)
            ),
            "change.j2": lambda: (
                self.change(
                    _SAMPLE_CHANGE, _SAMPLE_ORDER, "kitchen", language=language, copy=True, redirected_from="bar"
                )
                + self.change(_SAMPLE_CANCEL, _SAMPLE_ORDER, "kitchen", language=language)
                + self.change(_BARE_CHANGE, _BARE_ORDER, "kitchen", language=language)
            ),
            "receipt.j2": lambda: (
                self.receipt(_SAMPLE_ORDER, language=language, copy=True, store_name="Store", footer="Thank you")
                + self.receipt(_BARE_ORDER, language=language, store_name="Store", footer="")
                + self.receipt(
                    _SAMPLE_CHANGE,
                    language=language,
                    revised=True,
                    replaced_at=_SAMPLE_ORDER.created_at,
                    replaced_number="0",
                    store_name="Store",
                    footer="",
                )
                + self.receipt(_BARE_CHANGE, language=language, revised=True, store_name="Store", footer="")
            ),
            "test_page.j2": lambda: self.test_page(printer_name="printer", language=language),
        }
        for name, check in checks.items():
            try:
                check()
            except Exception as err:  # an operator's template can fail in any way; each is a configuration error
                raise ConfigError("printing.template_dir", f"{name}: {err}{_template_line(err, name)}") from err


# Templates this process compiled or loaded: (template key, source checksum) -> code. A renderer made again (the
# start-up check's, then the spools'; every in-process agent of the test suite) takes its code from here, not the disk.
_COMPILED: dict[tuple[str, str], types.CodeType] = {}


def _bytecode_cache(folder: Path) -> jinja2.BytecodeCache:
    """jinja2's file cache of compiled templates, keyed by each template's source checksum (an edited template is
    compiled again), behind this process's own memory of them. A cache that cannot be read or written is no cache:
    never a reason to stop."""
    import jinja2

    class SparingCache(jinja2.FileSystemBytecodeCache):
        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            if (code := _COMPILED.get((bucket.key, bucket.checksum))) is not None:
                bucket.code = code
                return
            try:
                super().load_bytecode(bucket)
            except Exception:  # unreadable, or garbage (a torn write): compile from the source
                bucket.reset()
            if bucket.code is not None:
                _COMPILED[bucket.key, bucket.checksum] = bucket.code

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            if bucket.code is not None:
                _COMPILED[bucket.key, bucket.checksum] = bucket.code
            with contextlib.suppress(OSError):
                super().dump_bytecode(bucket)

    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
    return SparingCache(str(folder))


def _check_job(width: int, language: str) -> None:
    if language not in labels.LABELS:
        raise ValueError(f"language must be one of {', '.join(labels.LABELS)}, got {language!r}")
    if width < MIN_WIDTH:
        raise ValueError(f"width must be at least {MIN_WIDTH} characters, got {width}")


def _template_line(err: Exception, name: str) -> str:
    """`, line N` of the template where a render failed, when the traceback shows it."""
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__) if Path(frame.filename).name == name]
    return f", line {lines[-1]}" if lines else ""


# Exercises every branch of the built-in templates in the start-up check.
_SAMPLE_ORDER = Order(
    id="sample",
    number="1",
    created_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    channel="pos",
    priority=0,
    customer=Customer(name="Sample", phone=None),
    fulfilment=Fulfilment(type="dine_in", table="1", due_at=datetime(2026, 1, 2, 12, 0, tzinfo=UTC)),
    items=(
        Item(
            sku="S",
            name="Sample",
            qty=2,
            unit_price=Decimal("1.00"),
            requires_production=True,
            station="kitchen",
            modifiers=(Modifier(name="extra", price=Decimal("0.50")), Modifier(name="plain", price=None)),
            note="note",
            allergens=("allergen",),
        ),
    ),
    totals=Totals(
        subtotal=Decimal("3.00"),
        discount=Decimal("0.50"),
        tax=(TaxLine(rate=Decimal("19"), amount=Decimal("0.40")),),
        total=Decimal("2.50"),
        currency="EUR",
    ),
    payment=Payment(method="card", status="paid"),
    print_receipt=True,
    note="note",
    allergens=("allergen",),
)

# Every kind of line change (quantity, modified by line_id with modifiers and note, removed, added), the order's
# allergens and note changed, then void.
_SAMPLE_CHANGE = dataclasses.replace(
    _SAMPLE_ORDER,
    revision=2,
    note="new note",
    allergens=("allergen", "another"),
    items=(
        dataclasses.replace(_SAMPLE_ORDER.items[0], qty=3),
        dataclasses.replace(_SAMPLE_ORDER.items[0], sku="T", name="Added", modifiers=(), note="new"),
    ),
)
_SAMPLE_CANCEL = dataclasses.replace(_SAMPLE_ORDER, revision=3, status=OrderStatus.CANCELLED, cancel_reason="reason")

# The same order with every optional field absent, as orders arrive (a phone order: no customer, no due time, no
# payment): an operator's template that reads one as if always there fails the check, not the first such ticket.
_BARE_ORDER = dataclasses.replace(
    _SAMPLE_ORDER,
    customer=None,
    fulfilment=Fulfilment(type="pickup", table=None, due_at=None),
    items=(dataclasses.replace(_SAMPLE_ORDER.items[0], modifiers=(), note=None, allergens=()),),
    totals=dataclasses.replace(_SAMPLE_ORDER.totals, discount=Decimal("0.00"), tax=()),
    payment=None,
    print_receipt=None,
    note=None,
    allergens=(),
)
_BARE_CHANGE = dataclasses.replace(_BARE_ORDER, revision=2, items=(dataclasses.replace(_BARE_ORDER.items[0], qty=3),))


def _shown(local: datetime, shown: str) -> str:
    """A local time as ``shown`` (a strftime format), with its zone in the hour the autumn night repeats: "02:10 CEST"
    and "02:50 CET" are 40 minutes the other way round than they read bare."""
    return local.strftime(f"{shown} %Z" if repeated_hour(local) else shown)


def _guest(order: Order) -> str | None:
    """Who the ticket's order is for, as the kitchen and the driver need it: name and phone number (either may be
    missing)."""
    customer = order.customer
    if customer is None:
        return None
    # The number's spaces do not break: a driver dials it from one line
    phone = customer.phone.replace(" ", NO_BREAK) if customer.phone else None
    return ", ".join(part for part in (customer.name, phone) if part) or None


def _closing(marks: list[str], number: str, count: int, *, width: int, language: str) -> list[str]:
    """A long job's closing line, "== KOPIE / COPY · Ende 1042 · 150 Pos. ==": what its head marks it as (a COPY, a
    change, a STORNO: the far end of a long strip is all a cook may hold), its number and how many item lines it
    holds. Where it is wider than the paper it goes on in the next line between its parts, never inside the number or
    the count (in lines for single-width text, as the templates print it)."""
    t = labels.LABELS[language]
    first, *rest = [*marks, f"{t['end']} {number}", f"{count} {t['positions']} =="]
    lines = [f"== {first}"]
    for part in rest:
        if len(lines[-1]) + len(" · ") + len(part) <= width:
            lines[-1] += f" · {part}"
        else:
            lines.append(part)
    return lines


def check_printer(printer: str, options: PrintOptions, width: int) -> None:
    """What can be checked of a printer's options without rendering (its profile, a code page of that profile, a line
    its head prints): ConfigError naming the setting for one that cannot print."""
    check_profile(printer, options.profile)
    try:
        profile(options.profile).codepage(options.codepage)
    except ValueError as err:
        raise ConfigError(f"printers.{printer}", f"cannot print with these options: {err}") from err
    check_width(printer, options.profile, width)


def print_options(printer: PrinterSettings) -> PrintOptions:
    """One printer's model and store options from its config section."""
    return PrintOptions(
        profile=printer.profile,
        cut=printer.cut,
        qr=printer.qr,
        qr_fragment_height=printer.qr_fragment_height,
        cash_drawer=printer.cash_drawer,
        logo=printer.logo,
        codepage=printer.codepage,
        cancel_kanji=printer.cancel_kanji,
    )
