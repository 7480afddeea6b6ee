"""Text as a printer can print it: no control characters, every character in the job's code page, which is chosen
from the printer's profile."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping

from edge.chars import CONTROL

# CP858 is CP850 (Latin-1 letters, umlauts, ß) with € at 0xD5; ESC t 19 selects it on Epson-compatible printers.
# We encode every byte of text ourselves, so the printer never sees a code page switch mid-job.
# "auto" takes the first of these the printer's profile has (its number differs by maker: Star calls CP858 4).
CODEPAGES = ("cp858", "cp1252", "cp437")  # cp437 has no €: it prints as EUR

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
_LATIN = _GREEK | _CYRILLIC
# Serbian and Macedonian are written in Latin letters of their own (Gaj's alphabet): with any letter only they have in
# a text, its shared letters follow them too ("Ћевапчићи" is Ćevapčići, not "Chevapchichi"); accents the code page
# lacks then go as for any Latin letter (Cevapcici on CP858).
_SOUTH_SLAVIC_ONLY = "ђћџљњјѓќѕ"
_SOUTH_SLAVIC = _LATIN | dict(zip(_SOUTH_SLAVIC_ONLY, ["dj", "ć", "dž", "lj", "nj", "j", "ǵ", "ḱ", "dz"], strict=True))
_SOUTH_SLAVIC |= {"ж": "ž", "х": "h", "ц": "c", "ч": "č", "ш": "š"}
# Greek mu written for micro in a quantity ("100μg", "5 μl"): the micro sign the code pages have, never "100mg"
_MICRO = re.compile(r"(?<=\d)( ?)\u03bc(?=[glms]?(?![^\W\d_]))")
# Transliterated whole (see _converted): the Unicode blocks of their letters, whose names begin GREEK or CYRILLIC
# (Greek and Coptic, Cyrillic and its Supplement, Extended-C, -B, -A, Greek Extended).
_BLOCKS = (
    ("GREEK", 0x0370, 0x03E1),  # U+03E2-03EF: Coptic letters
    ("GREEK", 0x03F0, 0x03FF),
    ("CYRILLIC", 0x0400, 0x052F),
    ("CYRILLIC", 0x1C80, 0x1C8F),
    ("CYRILLIC", 0x2DE0, 0x2DFF),
    ("CYRILLIC", 0xA640, 0xA69F),
    ("GREEK", 0x1F00, 0x1FFF),
)
# Before these, Greek αυ, ευ, ηυ are "af", "ef", "if" (ELOT 743); elsewhere "av", "ev", "iv".
_VOICELESS = frozenset("θκξπσςτφχψ")

_TRANSLITERATION = str.maketrans(
    {
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
    return text if encodes(text, codec) else _converted(text, codec)


# What quoted() names: the characters a ticket prints as a space or as nothing.
_HIDDEN = re.compile(f"{CONTROL.pattern}|{INVISIBLE.pattern}")


# What a note the code page cannot show is told as: a note is the guest's own text, new with each order (one mail each
# would flood the manager) and maybe personal; the menu's names are what a person can change. A code, not words: the
# mail names it in its own language (edge/alerts/render.py); all ASCII, so no name the printer cannot show is this.
UNPRINTABLE_NOTE = "<note>"


def quoted(text: str) -> str:
    """The text as a mail or a page quotes it: each control character and mark that shows nothing named by its code
    point (``<U+000A>``, ``<U+202E>``), so a name stays on one line, reads in its order (a direction override in a
    mail turns the rest of the paragraph around) and still tells what was sent."""
    return _HIDDEN.sub(lambda found: f"<U+{ord(found[0]):04X}>", text)


def read_as(text: str, codec: str) -> str:
    """``text`` as a person reads it off paper printed in ``codec``: what prints (see printable), line by line, its
    blanks (a no-break space, a run of spaces, one at either end) as one space or none. Two texts alike in this show
    the same: a number typed from a ticket is matched by it, and two revisions' dishes are compared by it."""
    lines = (" ".join(printable(line, codec).split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


@functools.lru_cache(maxsize=4096)
def on_paper(text: str) -> tuple[str, ...]:
    """``text`` as read on each code page the agent prints in (see read_as): two texts equal in this look the same on
    any printer, so a revision that changes only what no paper shows changes nothing for the cook. Every line and
    key of a change is compared so, on the writer: plain ASCII (nearly every text) reads alike on every code page,
    and an order's texts repeat (a 300-line change took 172 ms without both, 7 ms with)."""
    if text.isascii() and text.isprintable():
        return (" ".join(text.split()),) * len(CODEPAGES)
    return tuple(read_as(text, codec) for codec in CODEPAGES)


def printed_number(number: str, order_id: str, codec: str) -> str:
    """An order's number as its ticket's head prints it: one with no letter or digit the code page shows ("🍕" as "?")
    has the order's id beside it, there being nothing else for the cook to call out."""
    shown = printable(number, codec)
    if not any(char.isalnum() for char in shown):
        shown += by_id(order_id)
    return shown


def by_id(order_id: str) -> str:
    return f" ({order_id})"


def typed_forms(typed: str) -> frozenset[str]:
    """``typed`` as given and as it reads on paper: the numbers as sent that can be it (most are plain ASCII)."""
    return frozenset((typed, *on_paper(typed)))


def names_number(typed: str, number: str, order_id: str) -> bool:
    """Whether ``typed`` (typed, or read off a ticket) is the number of the order ``order_id``: as sent, or as its
    ticket shows it on a code page the agent prints in ("B-10\u200b43" prints "B-1043", "Щ-1047" "Shch-1047")."""
    return typed == number or any(
        read_as(typed, codec) == read_as(printed_number(number, order_id, codec), codec) for codec in CODEPAGES
    )


def encodes(text: str, codec: str) -> bool:
    """Every character of ``text`` in the code page as it is."""
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def _converted(text: str, codec: str) -> str:
    # A cook reads one script per text: CP437 has Σ, α, π and a few more Greek letters for maths, and "Σουβλάκι"
    # letter by letter was "Σoyvlαki". A script the code page lacks any letter of in the text is all transliterated;
    # one it has every letter of stays as written ("π-Pizza" on CP437).
    if encodes("\u00b5", codec):
        text = _MICRO.sub("\\1\u00b5", text)
    foreign = {script for char in text if (script := _script(char)) and not encodes(char, codec)}
    table = _SOUTH_SLAVIC if any(char in _SOUTH_SLAVIC_ONLY for char in text.lower()) else _LATIN
    out = []
    index = 0
    while index < len(text):
        if _script(text[index]) in foreign:
            latin, used = _transliterated(text, index, table)
            if not latin.isascii():
                latin = "".join(_in_codepage(char, codec) for char in latin)
        else:
            latin, used = _in_codepage(text[index], codec), 1
        out.append(latin)
        index += used
    return "".join(out)


def _script(char: str) -> str | None:
    """GREEK or CYRILLIC for a letter of one of them (not µ, the micro sign Latin-1 has; not a Greek accent alone).
    By the Unicode blocks, not unicodedata.name(): the start-up check's labels ("→", "–") come through here, and the
    names' table, read once, stayed resident: 0.25 MB of the idle agent's 50 MB budget."""
    if not char.isalpha():
        return None
    point = ord(char)
    for script, first, last in _BLOCKS:
        if first <= point <= last:
            return script
    return None


def _transliterated(text: str, index: int, table: Mapping[str, str]) -> tuple[str, int]:
    """The Latin letters for the Greek or Cyrillic letter at ``index`` (two letters for a Greek diphthong written
    with υ), and how many letters of ``text`` they stand for."""
    letters = text[index : index + 2].lower()
    # υ or ύ after α, ε, η, ο without an accent is one sound with it; ϋ, or the accent on the first, says two ("άυλος")
    if letters[0] in "αεηο" and _decomposed(letters[1:]) in ("υ", "υ\u0301"):
        after = _bare(text[index + 2 : index + 3].lower())
        latin, used = ("ou" if letters[0] == "ο" else _LATIN[letters[0]] + ("f" if after in _VOICELESS else "v")), 2
    else:
        latin, used = table.get(letters[0], table.get(_bare(letters[0]), "?")), 1
    chunk = text[index : index + used]
    if not chunk[0].isupper():
        return latin, used
    # A capital that is two Latin letters (Θ, Ш, ΟΥ) is two capitals in a word in capitals: "PSARI", not "PsARI".
    neighbour = chunk[1] if used == 2 else _neighbour(text, index)
    return (latin.upper() if neighbour.isupper() else latin.capitalize()), used


def _neighbour(text: str, index: int) -> str:
    """The letter after ``index`` in its word, or the one before if it is the word's last; "" for a letter alone."""
    for near in (text[index + 1 : index + 2], text[max(index - 1, 0) : index]):
        if near.isalpha():
            return near
    return ""


def _decomposed(char: str) -> str:
    return unicodedata.normalize("NFKD", char)


def _bare(char: str) -> str:
    """``char`` without its accents."""
    return "".join(c for c in _decomposed(char) if not unicodedata.combining(c))


def _in_codepage(char: str, codec: str) -> str:
    bare = _bare(char)
    for candidate in (char, char.translate(_TRANSLITERATION), bare, bare.translate(_TRANSLITERATION)):
        try:
            candidate.encode(codec)
        except UnicodeEncodeError:
            continue
        return candidate
    # A digit of another script (Arabic-Indic ٤, Devanagari ४, Thai ๔) by its value: a number or a table the cook
    # calls out prints as one, not "??" (the http78 probe, F1)
    digit = unicodedata.decimal(char, None)
    return "?" if digit is None else str(digit)


def codepage(table: Mapping[str, str], policy: str) -> tuple[str, int]:
    """The Python codec and the printer's ESC t number for ``policy``, from the profile's code page table."""
    numbers = {name.lower(): int(number) for number, name in table.items() if name.lower() in CODEPAGES}
    for codec in CODEPAGES if policy == "auto" else (policy,):
        if codec in numbers:
            return codec, numbers[codec]
    wanted = "any of CP858, CP1252, CP437" if policy == "auto" else policy.upper()
    raise ValueError(f"the printer's profile has no code page {wanted}; choose another profile or codepage")
