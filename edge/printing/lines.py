"""Styled characters and greedy word wrap by columns on paper (a double-width character takes two)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from typing import NamedTuple

SIZES = ("1x", "2h", "2w", "2x")


@dataclasses.dataclass(frozen=True)
class Style:
    """How characters look: bold, inverse, underlined; size 1x, 2h (double height), 2w (double width) or 2x (both)."""

    bold: bool = False
    invert: bool = False
    underline: bool = False
    size: str = "1x"

    @functools.cached_property
    def cells(self) -> int:
        """Columns one character takes on paper (asked for every character: computed once per style)."""
        return 2 if self.size in ("2w", "2x") else 1


PLAIN = Style()


def filler(style: Style) -> Style:
    """Style for padding beside ``style``: one column wide and no ink, but the same height and weight, so the printer
    needs no style switch for it."""
    return Style(bold=style.bold, size="2h" if style.size in ("2h", "2x") else "1x")


class Char(NamedTuple):
    """One character and its style; a tuple, since a long ticket makes tens of thousands of them."""

    text: str
    style: Style


STYLE_OF = operator.attrgetter("style")
TEXT_OF = operator.attrgetter("text")
# A space the wrap never breaks at (a phone number's); it goes to the printer as a plain space
NO_BREAK = "\u00a0"


def styled(text: str, style: Style) -> list[Char]:
    """``text`` as characters in ``style``, built by C calls only (a long ticket has tens of thousands)."""
    return list(map(tuple.__new__, itertools.repeat(Char), zip(text, itertools.repeat(style))))


def columns(chars: list[Char]) -> int:
    """Columns ``chars`` take on paper."""
    return sum(c.style.cells for c in chars)


def rstrip(chars: list[Char]) -> list[Char]:
    """Drop trailing spaces that leave no mark; inverse or underlined ones are part of the look (a banner's margin)."""
    end = len(chars)
    while end and chars[end - 1].text == " " and not (chars[end - 1].style.invert or chars[end - 1].style.underline):
        end -= 1
    return chars[:end]


# What a dash can print as: the code page's own en or em dash, or "-" for any of them (text.py)
DASHES = frozenset("-‐‑‒–—―−")


def wrap(chars: list[Char], width: int, hang: int, counted: int | None = None) -> list[list[Char]]:
    """Greedy word wrap by columns on paper; lines after the first start with ``hang`` spaces.

    A spaced dash stays on the line of the word before it: a wrapped line starting "- " reads as a dish or modifier
    taken off, as a change ticket prints those (ticket73 probe, R1).

    ``counted``: the columns ``chars`` take, if the caller counted them already.
    """
    if (columns(chars) if counted is None else counted) <= width:  # most lines fit as they are
        return [rstrip(chars)]
    indent = [Char(" ", PLAIN)] * hang
    lines: list[list[Char]] = [[]]
    used = 0
    start = 0  # columns this line's indent takes
    for is_space, token, keep in _tokens(_no_break_within(chars, width - hang)):
        size = columns(token)
        if used + size <= width:
            lines[-1].extend(token)
            used += size
            continue
        if is_space:
            # The break swallows the spaces it replaces.
            lines.append(list(indent))
            used = start = hang
            continue
        # A word that fits a fresh line moves there whole, also when its spaced dash then does not (below); a word
        # too long for any line is split where it is
        if used > start and columns(token[:keep]) <= width - hang:
            lines.append(list(indent))
            used = start = hang
        for index, char in enumerate(token):  # a word longer than the line is cut where the paper ends
            if used + char.style.cells > width and used > start:
                # Not before its dash: the word's last letter goes to the new line with it, if they fit one (a run of
                # dashes wider than a line, in double width, breaks where the paper ends: never over its edge)
                carried = token[keep - 1 : index] if index >= keep else []
                if hang + columns(carried) + char.style.cells > width:
                    carried = []
                del lines[-1][len(lines[-1]) - len(carried) :]
                lines.append(indent + carried)
                start = hang
                used = hang + columns(carried)
                if char.text == " " and not carried:  # the break swallows the space it replaces
                    continue
            lines[-1].append(char)
            used += char.style.cells
    lines = [rstrip(line) for line in lines]
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    return lines


def _no_break_within(chars: list[Char], room: int) -> list[Char]:
    """The text with the no-break spaces of a run too long for any line made plain spaces: a phone field holding two
    numbers breaks between its groups, not inside one where the paper ends (the verify76 probe, V2)."""
    if not any(c.text == NO_BREAK for c in chars):
        return chars
    out: list[Char] = []
    for is_space, group in itertools.groupby(chars, key=lambda c: c.text == " "):
        run = list(group)
        if not is_space and columns(run) > room:
            run = [c._replace(text=" ") if c.text == NO_BREAK else c for c in run]
        out.extend(run)
    return out


def _tokens(chars: list[Char]) -> list[tuple[bool, list[Char], int]]:
    """The runs of spaces and of other characters, each as (is_space, characters, keep), with a spaced dash (" – ")
    joined to the word before it as one unbreakable token; ``keep``: where that token's spaced dash starts (its
    length if none)."""
    tokens: list[tuple[bool, list[Char], int]] = []
    for is_space, group in itertools.groupby(chars, key=lambda c: c.text == " "):
        token = list(group)
        if not is_space and all(c.text in DASHES for c in token) and len(tokens) > 1 and not tokens[-2][0]:
            _, space, _ = tokens.pop()
            _, word, keep = tokens.pop()
            tokens.append((False, word + space + token, min(keep, len(word))))
        else:
            tokens.append((is_space, token, len(token)))
    return tokens
