"""Renders orders, receipts and test pages to ESC/POS bytes from jinja2 templates."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import operator
import re
import traceback
import types
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
from escpos.constants import QR_ECLEVEL_M
from escpos.printer import Dummy
from PIL import Image, UnidentifiedImageError

from edge.config import PrinterSettings
from edge.errors import ConfigError
from edge.orders.model import Customer, Fulfilment, Item, Modifier, Order, Payment, TaxLine, Totals
from edge.printing.profiles import check_profile

TEMPLATES = ("ticket.j2", "receipt.j2", "test_page.j2")
_BUILTIN_DIR = Path(__file__).parent / "templates"

# CP858 is CP850 (Latin-1 letters, umlauts, ß) with € at 0xD5; ESC t 19 selects it on Epson-compatible printers.
# We encode every byte of text ourselves, so the printer never sees a code page switch mid-job.
# "auto" takes the first of these the printer's profile has (its number differs by maker: Star calls CP858 4).
_CODEPAGES = ("cp858", "cp1252", "cp437")  # cp437 has no €: it prints as EUR

# C0 (with \n \r \t), DEL and C1: any of them in order text could start a printer command.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# A directive travels through the template output as \x1e<json>\x1f; sanitised values cannot contain either byte.
_MARKER = re.compile("\x1e([^\x1e\x1f]*)\x1f")

_TRANSLITERATION = str.maketrans(
    {
        **dict.fromkeys("‐‑‒–—―−", "-"),
        **dict.fromkeys("“”„‟″", '"'),
        **dict.fromkeys("‘’‚‛′", "'"),
        **dict.fromkeys("\u2002\u2003\u2009\u202f\u2007\u2008", " "),
        **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\ufe0f", ""),
        "…": "...",
        "•": "*",
        "™": "TM",
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Œ": "OE",
        "œ": "oe",
        "ẞ": "SS",
        "€": "EUR",
    }
)

_LABELS: dict[str, dict[str, str]] = {
    "de": {
        "copy": "KOPIE / COPY",  # both words on every copy, as the design names it
        "redirected_from": "UMGELEITET von",
        "due": "Fällig",
        "created": "Bestellt",
        "station": "Station",
        "order": "Bestellung",
        "each": "à",
        "subtotal": "Zwischensumme",
        "discount": "Rabatt",
        "total": "Summe",
        "incl": "inkl.",
        "vat": "MwSt",
        "payment": "Zahlung",
        "test_page": "Testseite",
        "profile": "Profil",
        "width": "Breite",
        "characters": "Zeichen",
        "bold": "Fett",
        "inverse": "Invers",
        "large": "Groß",
    },
    "en": {
        "copy": "KOPIE / COPY",
        "redirected_from": "REDIRECTED from",
        "due": "Due",
        "created": "Ordered",
        "station": "Station",
        "order": "Order",
        "each": "@",
        "subtotal": "Subtotal",
        "discount": "Discount",
        "total": "Total",
        "incl": "incl.",
        "vat": "VAT",
        "payment": "Payment",
        "test_page": "Test page",
        "profile": "Profile",
        "width": "Width",
        "characters": "characters",
        "bold": "Bold",
        "inverse": "Inverse",
        "large": "Large",
    },
}
# Words the backend sends as codes; codes not listed are printed as they came.
_FULFILMENT = {
    "de": {"pickup": "Abholung", "delivery": "Lieferung", "dine_in": "Tisch"},
    "en": {"pickup": "Pickup", "delivery": "Delivery", "dine_in": "Table"},
}
_PAYMENT = {  # payment methods and statuses share one table, their codes do not overlap
    "de": {
        "card": "Karte",
        "cash": "Bar",
        "voucher": "Gutschein",
        "paid": "bezahlt",
        "unpaid": "offen",
        "pending": "offen",
        "refunded": "erstattet",
    },
    "en": {"card": "Card", "cash": "Cash", "voucher": "Voucher"},
}
_DATE_TIME = {"de": "%d.%m.%Y %H:%M", "en": "%Y-%m-%d %H:%M"}
_OTHER_DAY = {"de": "%d.%m. %H:%M", "en": "%Y-%m-%d %H:%M"}

_SIZES = ("1x", "2h", "2w", "2x")
_ALIGNS = ("left", "center", "right")
MIN_WIDTH = 24


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrintOptions:
    """What differs between printer models and stores, from the printer's config; the defaults fit most Epson-compatible printers."""

    profile: str = "default"  # python-escpos capability profile: which commands and code pages the model knows
    codepage: str = "auto"  # auto (the profile's first of CP858, CP1252, CP437), or one of those by name
    cut: str = "full"  # full, partial or none (feed only, for a tear bar)
    qr: str = (
        "auto"  # auto (native when the profile has it, else an image), native, bitImageRaster, graphics, bitImageColumn
    )
    qr_fragment_height: int = 960  # image strip height; some models print garbage with large strips
    cash_drawer: bool = False  # kick the drawer (pin 2) after a receipt paid in cash
    logo: Path | None = None  # image at the top of receipts, scaled down to the paper width


DEFAULT_OPTIONS = PrintOptions()
_DOTS_PER_CHARACTER = 12  # font A is 12 dots wide: 48 characters = 576 dots on 80 mm paper


@dataclasses.dataclass(frozen=True)
class _Directive:
    """A layout instruction a template writes as ``{{ name }}`` or ``{{ name(args) }}``; it is never printed as text."""

    name: str
    args: tuple[Any, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self, *args: Any, **options: Any) -> _Directive:
        return _Directive(self.name, args, tuple(options.items()))

    def marker(self) -> str:
        try:
            return _marker(self)
        except TypeError:  # an unhashable argument (a list from a template): not cached
            return _marker.__wrapped__(self)

    @classmethod
    def from_marker(cls, payload: str) -> _Directive:
        return _from_marker(payload)


# A ticket repeats a few directives hundreds of times: each is encoded and decoded once.
@functools.lru_cache(maxsize=256)
def _marker(directive: _Directive) -> str:
    # json.dumps escapes control characters, so the payload never holds the closing \x1f.
    return "\x1e" + json.dumps([directive.name, directive.args, dict(directive.options)], default=str) + "\x1f"


@functools.lru_cache(maxsize=256)
def _from_marker(payload: str) -> _Directive:
    name, args, options = json.loads(payload)
    return _Directive(name, tuple(args), tuple(options.items()))


# The names templates use for layout; see the built-in templates for examples.
_DIRECTIVES = {
    name: _Directive(name)
    for name in (
        "style",  # style(bold=true, invert=true, underline=true, size="1x|2h|2w|2x"): change only what is named
        "plain",  # back to normal text: no bold, inverse or underline, normal size
        "align",  # align("left|center|right") from the next printed line on
        "hang",  # lines this one wraps into are indented to here
        "to_right",  # the rest of the line is flush right (prices)
        "rule",  # rule or rule("="): a full-width line
        "qr",  # qr(data): a QR code, by the printer itself or as an image (printer's qr setting)
        "logo",  # the printer's logo image, if it has one configured
        "cut",  # feed to the cutter and cut (or only feed, if the printer's cut is "none")
    )
}


def _finalize(value: Any) -> str:
    """Every ``{{ value }}`` passes here: directives become markers, everything else loses its control characters."""
    if isinstance(value, _Directive):
        return value.marker()
    if value is None:
        return ""
    return _CONTROL.sub(" ", str(value))


def _printable(text: str, codec: str) -> str:
    """The text as the printer can show it: no control characters, every character in the job's code page."""
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", text))
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return "".join(_in_codepage(char, codec) for char in text)
    return text


def _in_codepage(char: str, codec: str) -> str:
    bare = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    for candidate in (char, char.translate(_TRANSLITERATION), bare):
        try:
            candidate.encode(codec)
        except UnicodeEncodeError:
            continue
        return candidate
    return "?"


def _money(amount: Decimal | int, currency: str, language: str) -> str:
    if isinstance(amount, float):
        raise TypeError("money must be a Decimal, never a float")
    value = Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    digits = f"{abs(value):,.2f}"
    if language == "de":
        digits = digits.translate(str.maketrans(",.", ".,"))
    sign = "-" if value < 0 else ""
    if language == "de":
        return f"{sign}{digits} {'€' if currency == 'EUR' else currency}"
    return f"{sign}€{digits}" if currency == "EUR" else f"{sign}{currency} {digits}"


def _percent(rate: Decimal, language: str) -> str:
    text = f"{Decimal(rate).normalize():f}"
    return (text.replace(".", ",") if language == "de" else text) + "%"


@dataclasses.dataclass(frozen=True)
class _Style:
    bold: bool = False
    invert: bool = False
    underline: bool = False
    size: str = "1x"

    @functools.cached_property
    def cells(self) -> int:
        """Columns one character takes on paper (asked for every character: computed once per style)."""
        return 2 if self.size in ("2w", "2x") else 1


_PLAIN = _Style()


def _filler(style: _Style) -> _Style:
    """Style for padding beside ``style``: one column wide and no ink, but the same height and weight, so no style switch."""
    return _Style(bold=style.bold, size="2h" if style.size in ("2h", "2x") else "1x")


class _Char(NamedTuple):
    """One character and its style; a tuple, since a long ticket makes tens of thousands of them."""

    text: str
    style: _Style


_STYLE_OF = operator.attrgetter("style")
_TEXT_OF = operator.attrgetter("text")


def _chars(text: str, style: _Style) -> list[_Char]:
    """``text`` as characters in ``style``, built by C calls only (a long ticket has tens of thousands)."""
    return list(map(tuple.__new__, itertools.repeat(_Char), zip(text, itertools.repeat(style))))


def _cells(chars: list[_Char]) -> int:
    return sum(c.style.cells for c in chars)


def _rstrip(chars: list[_Char]) -> list[_Char]:
    """Drop trailing spaces that leave no mark; inverse or underlined ones are part of the look (a banner's margin)."""
    end = len(chars)
    while end and chars[end - 1].text == " " and not (chars[end - 1].style.invert or chars[end - 1].style.underline):
        end -= 1
    return chars[:end]


def _wrap(chars: list[_Char], width: int, hang: int, cells: int | None = None) -> list[list[_Char]]:
    """Greedy word wrap by columns on paper; lines after the first start with ``hang`` spaces.

    ``cells``: the columns ``chars`` take, if the caller counted them already.
    """
    if (_cells(chars) if cells is None else cells) <= width:  # most lines fit as they are
        return [_rstrip(chars)]
    indent = [_Char(" ", _PLAIN)] * hang
    lines: list[list[_Char]] = [[]]
    used = 0
    start = 0  # columns this line's indent takes
    for is_space, group in itertools.groupby(chars, key=lambda c: c.text == " "):
        token = list(group)
        size = _cells(token)
        if used + size <= width:
            lines[-1].extend(token)
            used += size
            continue
        if is_space:
            # The break swallows the spaces it replaces.
            lines.append(list(indent))
            used = start = hang
            continue
        if used > start and size <= width - hang:  # a word too long for any line is split where it is
            lines.append(list(indent))
            used = start = hang
        for char in token:  # a word longer than the line is cut where the paper ends
            if used + char.style.cells > width and used > start:
                lines.append(list(indent))
                used = start = hang
            lines[-1].append(char)
            used += char.style.cells
    lines = [_rstrip(line) for line in lines]
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    return lines


class _Job:
    """Lays template output out in lines of ``width`` columns and writes it, styled, to a Dummy printer."""

    def __init__(self, width: int, options: PrintOptions) -> None:
        self.width = width
        self.options = options
        self.printer = Dummy(profile=options.profile)
        self.codec, number = _codepage(self.printer.profile.profile_data.get("codePages", {}), options.codepage)
        self.printer._raw(b"\x1b@" + b"\x1bt" + bytes([number]))
        self.style = _PLAIN
        self.align = "left"
        self.printed_style = _PLAIN  # what ESC @ left the printer in
        self.printed_align = "left"
        self._start_line()

    def _start_line(self) -> None:
        self.left: list[_Char] = []
        self.left_cells = 0
        self.right: list[_Char] | None = None
        self.hang = 0
        self.had_directive = False

    def write(self, output: str) -> bytes:
        *lines, last = output.split("\n")  # not splitlines(): that would also split on \x1e and \x1f
        for line in lines:
            self._line(line)
            self._end_line()
        if last:
            self._line(last)
            self._end_line()
        return self.printer.output

    def _line(self, line: str) -> None:
        for index, part in enumerate(_MARKER.split(line)):
            if index % 2:
                self.had_directive = True
                self._directive(_Directive.from_marker(part))
            elif part:
                chars = _chars(_printable(part, self.codec), self.style)
                if self.right is None:
                    self.left.extend(chars)
                    self.left_cells += len(chars) * self.style.cells
                else:
                    self.right.extend(chars)

    def _has_text(self) -> bool:
        return any(c.text != " " for c in itertools.chain(self.left, self.right or ()))

    def _end_line(self) -> None:
        if self._has_text():
            self._print_wrapped()
        elif not self.had_directive:
            self._print_line([])  # an empty line in the template is an empty line on paper
        self._start_line()

    def _flush(self) -> None:
        """Print pending text before a block (rule, QR, cut) that must start on its own line."""
        if self._has_text():
            self._print_wrapped()
        self._start_line()
        self.had_directive = True

    def _directive(self, d: _Directive) -> None:
        options = dict(d.options)
        if d.name == "style":
            self.style = self._restyle(options)
        elif d.name == "plain":
            self.style = _PLAIN
        elif d.name == "align":
            if not d.args or d.args[0] not in _ALIGNS:
                raise ValueError(f"align() takes one of {', '.join(_ALIGNS)}, got {d.args!r}")
            self.align = d.args[0]
        elif d.name == "hang":
            self.hang = _cells(self.left)
        elif d.name == "to_right":
            self.right = []
        elif d.name == "rule":
            self._flush()
            char = _printable(str(d.args[0]), self.codec)[:1] if d.args else "-"
            self._print_line([_Char(char or "-", self.style)] * (self.width // self.style.cells))
        elif d.name == "qr":
            self._flush()
            self._sync_align()
            data = _CONTROL.sub(" ", str(d.args[0])) if d.args else ""
            self._qr(data)
        elif d.name == "logo":
            if self.options.logo is not None:
                self._flush()
                self._sync_align()
                self.printer.image(
                    _logo(self.options.logo, self.width * _DOTS_PER_CHARACTER), **self._image_arguments()
                )
        elif d.name == "cut":
            self._flush()
            if self.options.cut == "none":
                self.printer.print_and_feed(6)  # past the tear bar
            else:
                self.printer.cut(mode="PART" if self.options.cut == "partial" else "FULL")
        else:
            raise ValueError(f"unknown layout directive {d.name!r}")

    def _qr(self, data: str) -> None:
        size = 6 if self.width >= 42 else 4
        qr = self.options.qr
        if qr == "native" or (qr == "auto" and self.printer.profile.supports("qrCode")):
            self.printer.qr(data, native=True, ec=QR_ECLEVEL_M, size=size)
        else:
            self.printer.qr(data, native=False, ec=QR_ECLEVEL_M, size=size, image_arguments=self._image_arguments())

    def _image_arguments(self) -> dict[str, Any]:
        impl = "bitImageRaster" if self.options.qr in ("auto", "native") else self.options.qr
        return {"impl": impl, "fragment_height": self.options.qr_fragment_height, "center": False}

    def _restyle(self, options: dict[str, Any]) -> _Style:
        unknown = set(options) - {"bold", "invert", "underline", "size"}
        if unknown:
            raise ValueError(f"style() does not know {', '.join(sorted(unknown))}")
        if options.get("size", "1x") not in _SIZES:
            raise ValueError(f"style(size=...) takes one of {', '.join(_SIZES)}, got {options['size']!r}")
        return dataclasses.replace(self.style, **{k: v if k == "size" else bool(v) for k, v in options.items()})

    def _print_wrapped(self) -> None:
        lines = _wrap(self.left, self.width, min(self.hang, self.width // 2), self.left_cells)
        right = _rstrip(list(itertools.dropwhile(lambda c: c.text == " ", self.right or ())))
        if right:
            columns, used = _cells(right), _cells(lines[-1])
            if columns > self.width:
                lines += _wrap(right, self.width, 0)
            elif used + 1 + columns <= self.width:
                filler = _filler((lines[-1] or right)[-1 if lines[-1] else 0].style)
                lines[-1] = lines[-1] + [_Char(" ", filler)] * (self.width - used - columns) + right
            else:
                lines.append([_Char(" ", _filler(right[0].style))] * (self.width - columns) + right)
        for line in lines:
            self._print_line(line)

    def _sync_align(self) -> None:
        # ESC a only takes effect at the start of a line, which is where every caller is.
        if self.align != self.printed_align:
            self.printer.set(align=self.align)
            self.printed_align = self.align

    def _set_style(self, style: _Style) -> None:
        """Send only what changed; a size change goes out as ESC !, which also clears bold and underline."""
        was = self.printed_style
        changes: dict[str, Any] = {}
        if style.size != was.size:
            changes.update(
                normal_textsize=style.size == "1x",
                double_width=style.size in ("2w", "2x"),
                double_height=style.size in ("2h", "2x"),
                bold=style.bold,
                underline=int(style.underline),
            )
        if style.bold != was.bold:
            changes["bold"] = style.bold
        if style.underline != was.underline:
            changes["underline"] = int(style.underline)
        if style.invert != was.invert:
            changes["invert"] = style.invert
        self.printer.set(**changes)
        self.printed_style = style

    def _print_line(self, chars: list[_Char]) -> None:
        self._sync_align()
        for style, group in itertools.groupby(chars, key=_STYLE_OF):
            if style != self.printed_style:
                self._set_style(style)
            self.printer._raw("".join(map(_TEXT_OF, group)).encode(self.codec))
        self.printer._raw(b"\n")


class Renderer:
    """Turns orders into ESC/POS bytes; an operator may override each template by putting a file of the same name in ``template_dir``."""

    def __init__(self, *, template_dir: Path | None = None, tz: tzinfo | None = None) -> None:
        """Compile (and try out) every template now, so a broken override stops the agent at start-up.

        Args:
            template_dir: operator templates that win over the built-in ones, file by file.
            tz: time zone for printed times; the system's local zone when not given.
        """
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
            finalize=_finalize,
        )
        self._env.globals.update(_DIRECTIVES)
        self._tz = tz
        self._templates: dict[str, jinja2.Template] = {}
        for name in TEMPLATES:
            try:
                self._templates[name] = self._env.get_template(name)
            except jinja2.TemplateSyntaxError as err:
                raise ConfigError("printing.template_dir", f"{name}: {err.message}, line {err.lineno}") from err
            except (jinja2.TemplateError, OSError, UnicodeDecodeError) as err:
                raise ConfigError("printing.template_dir", f"{name}: {err}") from err
        self._try_templates()

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
    ) -> bytes:
        """The production ticket with ``station``'s items; ``redirected_from`` names where it should have printed.

        ``released``: a person let a held (stale) ticket print, so its order time shows the date too.
        """
        _check_job(width, language)
        created = self._local(order.created_at)
        due = self._local(order.fulfilment.due_at) if order.fulfilment.due_at else None
        return self._render(
            "ticket.j2",
            width=width,
            language=language,
            options=options,
            order=order,
            station=station,
            items=order.production_items(station),
            copy=copy,
            redirected_from=redirected_from,
            fulfilment=_fulfilment(order.fulfilment, language),
            customer=order.customer.name if order.customer else None,
            created=created.strftime(_DATE_TIME[language] if released else "%H:%M"),
            due=None
            if due is None
            else due.strftime("%H:%M" if due.date() == created.date() else _OTHER_DAY[language]),
            qr_code=f"edge:v1:{order.id}:{station}",
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
    ) -> bytes:
        """The customer's receipt: every item with its price, totals, taxes and payment; opens the drawer for cash if configured."""
        _check_job(width, language)
        payment = None
        if order.payment:
            names = _PAYMENT[language]
            payment = f"{names.get(order.payment.method, order.payment.method)} ({names.get(order.payment.status, order.payment.status)})"
        return self._render(
            "receipt.j2",
            width=width,
            language=language,
            options=options,
            # Never on a copy: a reprint must not open the drawer a second time.
            drawer=options.cash_drawer and not copy and order.payment is not None and order.payment.method == "cash",
            order=order,
            copy=copy,
            store_name=store_name,
            footer_lines=footer.splitlines(),  # the operator's footer may span lines
            fulfilment=_fulfilment(order.fulfilment, language),
            customer=order.customer.name if order.customer else None,
            created=self._local(order.created_at).strftime(_DATE_TIME[language]),
            payment=payment,
            money=lambda amount: _money(amount, order.totals.currency, language),
            percent=lambda rate: _percent(rate, language),
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
        """Render a receipt and a ticket with one printer's options, so a bad logo or profile stops the agent at start-up."""
        check_profile(printer, options.profile)
        try:
            self.receipt(_SAMPLE_ORDER, width=width, options=options)
            self.ticket(_SAMPLE_ORDER, "kitchen", width=width, options=options)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise ConfigError(f"printers.{printer}", f"cannot print with these options: {err}") from err

    def _render(
        self, name: str, *, width: int, language: str, options: PrintOptions, drawer: bool = False, **context: Any
    ) -> bytes:
        # A namespace, not a dict: in a template t.copy on a dict would be dict.copy.
        output = self._templates[name].render(
            t=types.SimpleNamespace(**_LABELS[language]), width=width, language=language, **context
        )
        job = _Job(width, options)
        job.write(output)
        if drawer:
            job.printer.cashdraw(2)
        return job.printer.output

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(self._tz)

    def _try_templates(self) -> None:
        """Render each template once, so an override that fails only when it runs still fails at start-up."""
        checks: dict[str, Callable[[], bytes]] = {
            "ticket.j2": lambda: self.ticket(_SAMPLE_ORDER, "kitchen", copy=True, redirected_from="bar"),
            "receipt.j2": lambda: self.receipt(_SAMPLE_ORDER, copy=True, store_name="Store", footer="Thank you"),
            "test_page.j2": lambda: self.test_page(printer_name="printer"),
        }
        for name, check in checks.items():
            try:
                check()
            except Exception as err:  # an operator's template can fail in any way; each is a configuration error
                raise ConfigError("printing.template_dir", f"{name}: {err}{_template_line(err, name)}") from err


@functools.lru_cache(maxsize=8)
def _logo(path: Path, max_dots: int) -> Image.Image:
    """The logo file, read once, shrunk to fit the paper (a wider image would wrap into garbage)."""
    with Image.open(path) as image:
        image.load()
        logo = image.convert("RGB")
    if logo.width > max_dots:
        logo = logo.resize((max_dots, max(1, logo.height * max_dots // logo.width)))
    return logo


def _codepage(table: dict[str, str], policy: str) -> tuple[str, int]:
    """The Python codec and the printer's ESC t number for ``policy``, from the profile's code page table."""
    numbers = {name.lower(): int(number) for number, name in table.items() if name.lower() in _CODEPAGES}
    for codec in _CODEPAGES if policy == "auto" else (policy,):
        if codec in numbers:
            return codec, numbers[codec]
    wanted = "any of CP858, CP1252, CP437" if policy == "auto" else policy.upper()
    raise ValueError(f"the printer's profile has no code page {wanted}; choose another profile or codepage")


def _check_job(width: int, language: str) -> None:
    if language not in _LABELS:
        raise ValueError(f"language must be one of {', '.join(_LABELS)}, got {language!r}")
    if width < MIN_WIDTH:
        raise ValueError(f"width must be at least {MIN_WIDTH} characters, got {width}")


def _template_line(err: Exception, name: str) -> str:
    """`, line N` of the template where a render failed, when the traceback shows it."""
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__) if Path(frame.filename).name == name]
    return f", line {lines[-1]}" if lines else ""


def _fulfilment(fulfilment: Fulfilment, language: str) -> str:
    label = _FULFILMENT[language].get(fulfilment.type, fulfilment.type)
    if fulfilment.table is None:
        return label
    table = f"{_FULFILMENT[language]['dine_in']} {fulfilment.table}"
    return table if fulfilment.type == "dine_in" else f"{label}, {table}"


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
)


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
    )
