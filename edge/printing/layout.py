"""The layout engine: lays template output out in lines of the paper's width, runs the layout directives a template
writes (one table, one function each) and writes the styled result as ESC/POS commands (commands.py)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.printing.commands import ALIGN, BOLD, INVERT, SIZE, UNDERLINE, Commands
from edge.printing.lines import (
    NO_BREAK,
    PLAIN,
    SIZES,
    STYLE_OF,
    TEXT_OF,
    Char,
    Style,
    columns,
    filler,
    rstrip,
    styled,
    wrap,
)
from edge.printing.profiles import FONT_A_DOTS, profile
from edge.printing.text import CONTROL, INVISIBLE, printable

if TYPE_CHECKING:
    from PIL import Image

# python-escpos and Pillow are imported only where a job has an image (a logo, a QR code drawn as one): a store printing
# text and native QR codes never loads them (~8 MB on a Pi), and a restart reaches READY without them either way.

_ALIGNS = ("left", "center", "right")
_CANCEL_KANJI = b"\x1c."  # FS . (1C 2E): cancel Kanji (Chinese) character mode
# A ticket longer than this (about 17 cm of paper at 1/6 inch a line) no longer shows its head beside its end on the
# rail: a dozen dishes with their modifiers stay under it, a party's ticket does not (if_long)
LONG_JOB_LINES = 40

# A directive travels through the template output as \x1e<json>\x1f; sanitised values cannot contain either byte.
_MARKER = re.compile("\x1e([^\x1e\x1f]*)\x1f")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrintOptions:
    """What differs between printer models and stores, from the printer's config; the defaults fit most
    Epson-compatible printers."""

    profile: str = "default"  # python-escpos capability profile: which commands and code pages the model knows
    codepage: str = "auto"  # auto (the profile's first of CP858, CP1252, CP437), or one of those by name
    cut: str = "full"  # full, partial or none (feed only, for a tear bar)
    # auto (native when the profile has it, else an image), native, bitImageRaster, graphics, bitImageColumn
    qr: str = "auto"
    qr_fragment_height: int = 960  # image strip height; some models print garbage with large strips
    cash_drawer: bool = False  # kick the drawer (pin 2) as a receipt paid in cash starts
    logo: Path | None = None  # image at the top of receipts, scaled down to the paper width
    # FS . after ESC @: Chinese-market clones (Xprinter, ZJiang, HPRT, Goojprt) ship in double-byte (Kanji) mode, which
    # ESC @ restores, and print an umlaut and the byte after it as one Hanzi. A model without Kanji discards it (Epson:
    # "If the data following ESC, FS or GS is not defined as a command, then the two bytes are read in and discarded")
    cancel_kanji: bool = True


DEFAULT_OPTIONS = PrintOptions()


@dataclasses.dataclass(frozen=True)
class Directive:
    """A layout instruction a template writes as ``{{ name }}`` or ``{{ name(args) }}``; it is never printed as text."""

    name: str
    args: tuple[Any, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self, *args: Any, **options: Any) -> Directive:
        return Directive(self.name, args, tuple(options.items()))

    def marker(self) -> str:
        try:
            return _marker(self)
        except TypeError:  # an unhashable argument (a list from a template): not cached
            return _marker.__wrapped__(self)

    @classmethod
    def from_marker(cls, payload: str) -> Directive:
        return _from_marker(payload)


# A ticket repeats a few directives hundreds of times: each is encoded and decoded once.
@functools.lru_cache(maxsize=256)
def _marker(directive: Directive) -> str:
    # json.dumps escapes control characters, so the payload never holds the closing \x1f.
    return "\x1e" + json.dumps([directive.name, directive.args, dict(directive.options)], default=str) + "\x1f"


@functools.lru_cache(maxsize=256)
def _from_marker(payload: str) -> Directive:
    name, args, options = json.loads(payload)
    return Directive(name, tuple(args), tuple(options.items()))


# A line or paragraph break in a value, in any of the forms tills write them.
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x85\u2028\u2029]")
_BREAK_MARKER = Directive("br").marker()
# The lines of its own a value keeps (a note's, as the till sent them); the rest goes on the last, joined by
# LINES_JOINED: paper is bounded by a note's characters, not its breaks ("a\n" x 250 was 250 lines a dish).
MAX_VALUE_LINES = 8
LINES_JOINED = " / "


def finalize(value: Any) -> str:
    """Every ``{{ value }}`` passes here: directives become markers, everything else loses its control characters; a
    line break in a value (the lines of a note, as the till sent them) becomes ``br``, an empty line none, and the
    lines from the MAX_VALUE_LINES-th on go on one line."""
    if isinstance(value, Directive):
        return value.marker()
    if value is None:
        return ""
    text = str(value)
    if not _LINE_BREAK.search(text):  # nearly every value (a ticket has dozens): one part, no split to join
        return CONTROL.sub(" ", text)
    parts = [part for part in (CONTROL.sub(" ", part) for part in _LINE_BREAK.split(text)) if _shows(part)]
    if len(parts) > MAX_VALUE_LINES:
        parts[MAX_VALUE_LINES - 1 :] = [LINES_JOINED.join(part.strip() for part in parts[MAX_VALUE_LINES - 1 :])]
    return _BREAK_MARKER.join(parts)


def _shows(line: str) -> bool:
    """Something of ``line`` is seen on paper: not only spaces and marks that show nothing."""
    return bool(INVISIBLE.sub("", line).strip())


class Layout:
    """Lays template output out in lines of ``width`` columns and writes it, styled, as ESC/POS commands."""

    def __init__(self, width: int, options: PrintOptions) -> None:
        self.width = width
        self.options = options
        self.commands = Commands(profile(options.profile))
        self.codec, number = self.commands.profile.codepage(options.codepage)
        # ESC @ puts a clone back in its power-on Chinese mode: FS . must follow it, before any text.
        self.commands.raw(b"\x1b@" + (_CANCEL_KANJI if options.cancel_kanji else b"") + b"\x1bt" + bytes([number]))
        self.style = PLAIN
        self.align = "left"
        self.printed_style = PLAIN  # what ESC @ left the printer in
        self.printed_align = "left"
        self.lines_printed = 0
        self.shown = True  # False: the rest of an if_long line on a short job
        self._start_line()

    def _start_line(self) -> None:
        self.left: list[Char] = []
        self.left_cells = 0
        self.right: list[Char] | None = None
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
        return self.commands.output

    def _line(self, line: str) -> None:
        for index, part in enumerate(_MARKER.split(line)):
            if index % 2:
                self.had_directive = True
                directive = Directive.from_marker(part)
                run = DIRECTIVES.get(directive.name)
                if run is None:
                    raise ValueError(f"unknown layout directive {directive.name!r}")
                run(self, directive.args, dict(directive.options))
            elif part:
                chars = styled(printable(part, self.codec), self.style)
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
            self.print_line([])  # an empty line in the template is an empty line on paper
        self._start_line()
        self.shown = True

    def flush(self) -> None:
        """Print pending text before a block (rule, QR, cut) that must start on its own line."""
        if self._has_text():
            self._print_wrapped()
        self._start_line()
        self.had_directive = True

    def _print_wrapped(self) -> None:
        if not self.shown:
            return
        lines = wrap(self.left, self.width, min(self.hang, self.width // 2), self.left_cells)
        right = rstrip(list(itertools.dropwhile(lambda c: c.text == " ", self.right or ())))
        if right:
            needed, used = columns(right), columns(lines[-1])
            if needed > self.width:
                lines += wrap(right, self.width, 0)
            elif used + 1 + needed <= self.width:
                pad = filler((lines[-1] or right)[-1 if lines[-1] else 0].style)
                lines[-1] = lines[-1] + [Char(" ", pad)] * (self.width - used - needed) + right
            else:
                lines.append([Char(" ", filler(right[0].style))] * (self.width - needed) + right)
        for line in lines:
            self.print_line(line)

    def sync_align(self) -> None:
        # ESC a only takes effect at the start of a line, which is where every caller is.
        if self.align != self.printed_align:
            self.commands.raw(ALIGN[self.align])
            self.printed_align = self.align

    def _set_style(self, style: Style) -> None:
        """Send only what changed; a size change goes out as ESC !, which also clears bold and underline."""
        was = self.printed_style
        resized = style.size != was.size
        command = SIZE[style.size] if resized else b""
        if resized or style.bold != was.bold:
            command += BOLD[style.bold]
        if resized or style.underline != was.underline:
            command += UNDERLINE[style.underline]
        if style.invert != was.invert:
            command += INVERT[style.invert]
        self.commands.raw(command)
        self.printed_style = style

    def print_line(self, chars: list[Char]) -> None:
        self.sync_align()
        for style, group in itertools.groupby(chars, key=STYLE_OF):
            if style != self.printed_style:
                self._set_style(style)
            self.commands.raw("".join(map(TEXT_OF, group)).replace(NO_BREAK, " ").encode(self.codec))
        self.commands.raw(b"\n")
        self.lines_printed += 1

    def image_arguments(self) -> dict[str, Any]:
        impl = "bitImageRaster" if self.options.qr in ("auto", "native") else self.options.qr
        return {"impl": impl, "fragment_height": self.options.qr_fragment_height, "center": False}


# The directives, one function each: what a template writes (the docstring) and what the layout does with it.
Args = tuple[Any, ...]  # positional arguments as the template wrote them
Options = dict[str, Any]  # keyword arguments as the template wrote them


def _style(job: Layout, args: Args, options: Options) -> None:
    """style(bold=true, invert=true, underline=true, size="1x|2h|2w|2x"): change only what is named."""
    unknown = set(options) - {"bold", "invert", "underline", "size"}
    if unknown:
        raise ValueError(f"style() does not know {', '.join(sorted(unknown))}")
    if options.get("size", "1x") not in SIZES:
        raise ValueError(f"style(size=...) takes one of {', '.join(SIZES)}, got {options['size']!r}")
    changes: dict[str, Any] = {k: v if k == "size" else bool(v) for k, v in options.items()}
    job.style = dataclasses.replace(job.style, **changes)


def _plain(job: Layout, args: Args, options: Options) -> None:
    """plain: back to normal text, no bold, inverse or underline, normal size."""
    job.style = PLAIN


def _align(job: Layout, args: Args, options: Options) -> None:
    """align("left|center|right"): from the next printed line on."""
    if not args or args[0] not in _ALIGNS:
        raise ValueError(f"align() takes one of {', '.join(_ALIGNS)}, got {args!r}")
    job.align = args[0]


def _hang(job: Layout, args: Args, options: Options) -> None:
    """hang: the lines this one wraps into are indented to here."""
    job.hang = columns(job.left)


def _br(job: Layout, args: Args, options: Options) -> None:
    """br: what came before prints, and the rest goes on in a new line at the hanging indent (a line break in a
    value: an allergy the till put on a line of its own stays on one, not run into the note before it)."""
    hang = min(job.hang, job.width // 2)
    if job._has_text():
        job._print_wrapped()
    job._start_line()
    job.left, job.left_cells, job.hang = [Char(" ", PLAIN)] * hang, hang, hang
    job.had_directive = True


def _to_right(job: Layout, args: Args, options: Options) -> None:
    """to_right: the rest of the line is flush right (prices)."""
    job.right = []


def _if_long(job: Layout, args: Args, options: Options) -> None:
    """if_long: the rest of the line prints only if the job has printed more than LONG_JOB_LINES lines so far (a long
    ticket's closing line: its number at the head is out of sight at the far end of the strip)."""
    job.shown = job.lines_printed > LONG_JOB_LINES


def _rule(job: Layout, args: Args, options: Options) -> None:
    """rule or rule("="): a full-width line."""
    job.flush()
    char = printable(str(args[0]), job.codec)[:1] if args else "-"
    job.print_line([Char(char or "-", job.style)] * (job.width // job.style.cells))


def _qr(job: Layout, args: Args, options: Options) -> None:
    """qr(data): a QR code, drawn by the printer itself or sent as an image (the printer's qr setting)."""
    job.flush()
    job.sync_align()
    data = CONTROL.sub(" ", str(args[0])) if args else ""
    size = 6 if job.width >= 42 else 4
    if draws_qr(job.options):
        job.commands.qr(data, size=size)
    else:
        job.commands.qr_image(data, size=size, image_arguments=job.image_arguments())


def _logo(job: Layout, args: Args, options: Options) -> None:
    """logo: the printer's logo image, if it has one configured."""
    if job.options.logo is not None:
        job.flush()
        job.sync_align()
        dots = job.width * FONT_A_DOTS
        if (head := job.commands.profile.width_dots) is not None:
            dots = min(dots, head)  # a TM-T88V's 512 on paper 48 characters wide
        job.commands.image(_logo_image(job.options.logo, dots), job.image_arguments())


def draws_qr(options: PrintOptions) -> bool:
    """Whether the printer draws QR codes itself (else they are sent as images). KeyError: an unknown profile."""
    return options.qr == "native" or (options.qr == "auto" and profile(options.profile).supports("qrCode"))


def prints_images(options: PrintOptions) -> bool:
    """Whether a printer with these options is sent images (its logo, or QR codes it cannot draw itself): only those
    need python-escpos and Pillow. KeyError: an unknown profile."""
    return options.logo is not None or not draws_qr(options)


def _cut(job: Layout, args: Args, options: Options) -> None:
    """cut: feed to the cutter and cut (or only feed past the tear bar, if the printer's cut is "none")."""
    job.flush()
    job.commands.end_strip(job.options.cut)


# The names templates use for layout; see the built-in templates for examples.
DIRECTIVES: dict[str, Callable[[Layout, Args, Options], None]] = {
    "style": _style,
    "plain": _plain,
    "align": _align,
    "hang": _hang,
    "br": _br,
    "to_right": _to_right,
    "if_long": _if_long,
    "rule": _rule,
    "qr": _qr,
    "logo": _logo,
    "cut": _cut,
}


def template_globals() -> dict[str, Directive]:
    """Each directive by its name, for a template to write as ``{{ name }}`` or ``{{ name(args) }}``."""
    return {name: Directive(name) for name in DIRECTIVES}


@functools.lru_cache(maxsize=8)
def _logo_image(path: Path, max_dots: int) -> Image.Image:
    """The logo file, read once, shrunk to fit the paper (a wider image would wrap into garbage)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        logo = image.convert("RGB")
    if logo.width > max_dots:
        logo = logo.resize((max_dots, max(1, logo.height * max_dots // logo.width)))
    return logo
