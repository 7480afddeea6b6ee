"""Word wrap (edge/printing/lines.py wrap) as a pure function: where a line with spaced dashes breaks, on the probe's
examples and on generated menu texts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.printing.lines import Style, columns, styled, wrap

_DASH_WORDS = ("-", "–", "—", "--", "––", "——")
_WORDS = ("Pizza", "Käse", "ohne", "Zwiebeln", "extra", "Rucola", "glutenfrei", "Margherita", "à", "la", "X")
_LONG_WORDS = ("Schweinefleischbratwürstchen", "Rinderhackfleischbällchenpfanne")
# A wrapped line that starts with a run of dashes and a space (or nothing after): it reads as "removed"
_DASH_FIRST = re.compile(r"^\s*[-–—]+(\s|$)")


def _unsplittable_dash_run(text: str, width: int, hang: int, cells: int) -> bool:
    """Whether a run of spaced dashes with the last letter of the word before it ("n – — –") is wider than a wrapped
    line: then no break keeps every line within the paper and off a dash, and the paper wins."""
    words = text.split()
    unit = 0
    for index, word in enumerate(words):
        if index and set(word) <= set("-–—"):
            unit += 1 + len(word)
        else:
            unit = len(word) if set(word) <= set("-–—") else 1
        if unit * cells > width - hang:
            return True
    return False


def _check(text: str, width: int, hang: int, size: str) -> list[str]:
    """The lines ``text`` wraps into, after checking what any wrap must keep to."""
    lines = wrap(styled(text, Style(size=size)), width, hang)
    printed = ["".join(c.text for c in line) for line in lines]
    assert all(columns(line) <= width for line in lines), f"wider than {width} columns: {printed}"
    assert all(line.strip() for line in printed), f"an empty line: {printed}"
    assert "".join("".join(printed).split()) == "".join(text.split()), f"letters lost or moved: {printed}"
    if not _unsplittable_dash_run(text, width, hang, Style(size=size).cells):
        assert not [line for line in printed[1:] if _DASH_FIRST.match(line)], f"a line starts with a dash: {printed}"
    return printed


@pytest.mark.parametrize(
    ("text", "width", "hang", "size"),
    [
        # verify73 probe, 3a: before, lines of 27 and 35 columns and empty lines
        ("X Zwiebeln – — – —— — à la — extra - - -", 24, 3, "2x"),
        ("– à X - - -- –– —— –", 32, 3, "2x"),
        ("extra –– ohne - glutenfrei - glutenfrei X glutenfrei – — – –– glutenfrei", 24, 5, "2x"),
        ("X Zwiebeln – — extra", 24, 3, "2x"),  # "n – —" fits a line: carried with the dash, not left behind
    ],
)
def test_runs_of_spaced_dashes_in_double_width_stay_within_the_paper(
    text: str, width: int, hang: int, size: str
) -> None:
    """A dash carried to the next line with the last letter of its word goes there only if they fit a line: else the
    run breaks where the paper ends, and the lines before it keep what they had."""
    _check(text, width, hang, size)


@pytest.mark.parametrize(("width", "hang"), [(32, 3), (42, 3), (48, 3), (32, 4)])
def test_a_word_that_fits_a_fresh_line_moves_there_and_takes_only_its_last_letter_to_its_dash(
    width: int, hang: int
) -> None:
    """A word that fits a fresh line alone, but not with its " –", moves to the fresh line as a word without a dash
    does, rather than being cut wherever the line it started on ended; on that line its dash does not fit, so its
    last letter goes with the dash (a line starting "– " would read as removed). Before (verify73 probe, 3b), at 32
    columns: `1x Pizza Schweinefleischbratwürs` / `   tchen – extra Käse`."""
    word = ("Schweinefleischbratwürstchen" * 2)[: width - hang - 1]
    printed = _check(f"1x Pizza {word} – extra Käse", width, hang, "1x")
    assert printed == ["1x Pizza", " " * hang + word[:-1], " " * hang + word[-1] + " – extra Käse"]


# Words, each followed by none to five spaced dashes; sometimes a dash first
_WORD_AND_DASHES = st.tuples(
    st.sampled_from(_WORDS + _LONG_WORDS), st.lists(st.sampled_from(_DASH_WORDS), max_size=5)
).map(lambda unit: " ".join((unit[0], *unit[1])))
_TEXTS = st.tuples(
    st.lists(st.sampled_from(_DASH_WORDS), max_size=2), st.lists(_WORD_AND_DASHES, min_size=1, max_size=8)
).map(lambda parts: " ".join((*parts[0], *parts[1])))


@settings(max_examples=300, deadline=None)
@given(
    text=_TEXTS,
    width=st.sampled_from([24, 32, 42, 48]),
    hang=st.integers(0, 5),
    size=st.sampled_from(["2x", "2w", "2h", "1x"]),  # double width first: a line holds half as many letters
)
def test_any_menu_text_wraps_within_the_paper_without_empty_lines_or_dash_first_lines(
    text: str, width: int, hang: int, size: str
) -> None:
    """Generated texts of menu words and spaced dashes (as the verify73 probe's fuzz): no line wider than the paper,
    no empty line, no wrapped line starting with a dash unless a run of dashes is wider than a line, every letter in
    its order."""
    _check(text, width, hang, size)
