"""Text as a printer can print it: no control characters, every character in the job's code page, which is chosen
from the printer's profile."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

# CP858 is CP850 (Latin-1 letters, umlauts, ß) with € at 0xD5; ESC t 19 selects it on Epson-compatible printers.
# We encode every byte of text ourselves, so the printer never sees a code page switch mid-job.
# "auto" takes the first of these the printer's profile has (its number differs by maker: Star calls CP858 4).
CODEPAGES = ("cp858", "cp1252", "cp437")  # cp437 has no €: it prints as EUR

# C0 (with \n \r \t), DEL and C1: any of them in order text could start a printer command.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # a line or paragraph separator too: a space
# Marks that show nothing (direction marks and overrides, a soft hyphen, joiners, variation selectors): printed as
# nothing, not as "?" in the middle of a word (CP858 even has the soft hyphen, which prints as a visible mark).
INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufe00-\ufe0f]")

# Letters of other scripts as Latin ones a cook reads: Greek as ISO 843 (ELOT 743) writes it, Cyrillic as Russian
# and Ukrainian are usually written in Latin letters (BGN/PCGN, simplified). Accents go first (see _in_codepage).
_GREEK = dict(
    zip(
        "αβγδεζηθικλμνξοπρσςτυφχψω",
        [
            "a",
            "v",
            "g",
            "d",
            "e",
            "z",
            "i",
            "th",
            "i",
            "k",
            "l",
            "m",
            "n",
            "x",
            "o",
            "p",
            "r",
            "s",
            "s",
            "t",
            "y",
            "f",
            "ch",
            "ps",
            "o",
        ],
        strict=True,
    )
)
_CYRILLIC = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщыэюяєіїґ",
        [
            "a",
            "b",
            "v",
            "g",
            "d",
            "e",
            "yo",
            "zh",
            "z",
            "i",
            "y",
            "k",
            "l",
            "m",
            "n",
            "o",
            "p",
            "r",
            "s",
            "t",
            "u",
            "f",
            "kh",
            "ts",
            "ch",
            "sh",
            "shch",
            "y",
            "e",
            "yu",
            "ya",
            "ye",
            "i",
            "yi",
            "g",
        ],
        strict=True,
    )
) | {"ъ": "", "ь": ""}
_SCRIPTS = {
    **_GREEK,
    **_CYRILLIC,
    **{k.upper(): v.capitalize() for k, v in (_GREEK | _CYRILLIC).items() if k.upper() != k and k != "ς"},
}

_TRANSLITERATION = str.maketrans(
    {
        **_SCRIPTS,
        **dict.fromkeys("‐‑‒–—―−", "-"),
        **dict.fromkeys("“”„‟″", '"'),
        **dict.fromkeys("‘’‚‛′", "'"),
        **dict.fromkeys("\u2002\u2003\u2009\u202f\u2007\u2008", " "),
        "…": "...",
        "→": "->",
        "•": "*",
        "™": "TM",
        "Ł": "L",
        "ł": "l",
        "Đ": "D",
        "đ": "d",
        "Œ": "OE",
        "œ": "oe",
        # Letters of their own, no accent to take off: as the Latin letter a reader takes them for
        "ı": "i",
        "Ħ": "H",
        "ħ": "h",
        "Ŋ": "N",
        "ŋ": "n",
        "Ŧ": "T",
        "ŧ": "t",
        "ĸ": "k",
        "Ø": "O",
        "ø": "o",
        "Ð": "D",
        "ð": "d",
        "Þ": "Th",
        "þ": "th",
        "×": "x",
        "ẞ": "SS",
        "€": "EUR",
    }
)


def printable(text: str, codec: str) -> str:
    """The text as the printer can show it: no control characters, every character in the job's code page."""
    text = unicodedata.normalize("NFC", INVISIBLE.sub("", CONTROL.sub(" ", text)))
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return "".join(_in_codepage(char, codec) for char in text)
    return text


def _in_codepage(char: str, codec: str) -> str:
    bare = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    for candidate in (char, char.translate(_TRANSLITERATION), bare, bare.translate(_TRANSLITERATION)):
        try:
            candidate.encode(codec)
        except UnicodeEncodeError:
            continue
        return candidate
    return "?"


def codepage(table: Mapping[str, str], policy: str) -> tuple[str, int]:
    """The Python codec and the printer's ESC t number for ``policy``, from the profile's code page table."""
    numbers = {name.lower(): int(number) for number, name in table.items() if name.lower() in CODEPAGES}
    for codec in CODEPAGES if policy == "auto" else (policy,):
        if codec in numbers:
            return codec, numbers[codec]
    wanted = "any of CP858, CP1252, CP437" if policy == "auto" else policy.upper()
    raise ValueError(f"the printer's profile has no code page {wanted}; choose another profile or codepage")
