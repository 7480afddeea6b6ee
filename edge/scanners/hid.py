"""Keyboard-wedge (USB HID) scanners through Linux evdev: key presses turned back into the bytes a serial one sends."""

from __future__ import annotations

import select
import string
from collections.abc import Iterable

import evdev
from evdev import ecodes

from edge.config import ScannerSettings
from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.scanners.ports import READ_WAKE_S

# Key → (plain, with shift), in the layout the scanner is set to (scanners.NAME.layout): US, which most default to,
# or German, which many sold in Germany type (y and z swapped, ':' on shift+'.', '-' and '_' on the US slash key).
# Keys typing nothing on their own there (dead keys) are left out: such a line is noise. AltGr: see ALTGR.
_DIGITS = "1234567890"
_US_DIGITS_SHIFTED = "!@#$%^&*()"
_DE_DIGITS_SHIFTED = '!"§$%&/()='
_US_PUNCTUATION = {
    "MINUS": "-_",
    "EQUAL": "=+",
    "LEFTBRACE": "[{",
    "RIGHTBRACE": "]}",
    "SEMICOLON": ";:",
    "APOSTROPHE": "'\"",
    "GRAVE": "`~",
    "BACKSLASH": "\\|",
    "COMMA": ",<",
    "DOT": ".>",
    "SLASH": "/?",
}
_DE_PUNCTUATION = {
    "MINUS": "ß?",
    "LEFTBRACE": "üÜ",
    "RIGHTBRACE": "+*",
    "SEMICOLON": "öÖ",
    "APOSTROPHE": "äÄ",
    "BACKSLASH": "#'",
    "COMMA": ",;",
    "DOT": ".:",
    "SLASH": "-_",
    "102ND": "<>",
}
_COMMON: dict[int, tuple[str, str]] = {
    **{getattr(ecodes, f"KEY_KP{d}"): (d, d) for d in _DIGITS},
    ecodes.KEY_KPMINUS: ("-", "-"),
    ecodes.KEY_KPPLUS: ("+", "+"),
    ecodes.KEY_KPDOT: (".", "."),
    ecodes.KEY_KPSLASH: ("/", "/"),
    ecodes.KEY_KPASTERISK: ("*", "*"),
    ecodes.KEY_SPACE: (" ", " "),
    ecodes.KEY_TAB: ("\r", "\r"),  # the other usual wedge suffix: ends a code like Enter
    ecodes.KEY_ENTER: ("\r", "\r"),
    ecodes.KEY_KPENTER: ("\r", "\r"),
}


def _keymap(letters: dict[str, str], digits_shifted: str, punctuation: dict[str, str]) -> dict[int, tuple[str, str]]:
    """``letters``: key name → the letter it types (the German layout swaps Y and Z)."""
    return {
        **{getattr(ecodes, f"KEY_{k}"): (c, c.upper()) for k, c in letters.items()},
        **{getattr(ecodes, f"KEY_{d}"): (d, shifted) for d, shifted in zip(_DIGITS, digits_shifted, strict=True)},
        **{getattr(ecodes, f"KEY_{name}"): (pair[0], pair[1]) for name, pair in punctuation.items()},
        **_COMMON,
    }


_LETTERS = {c.upper(): c for c in string.ascii_lowercase}
KEYMAPS: dict[str, dict[int, tuple[str, str]]] = {
    "us": _keymap(_LETTERS, _US_DIGITS_SHIFTED, _US_PUNCTUATION),
    "de": _keymap({**_LETTERS, "Y": "z", "Z": "y"}, _DE_DIGITS_SHIFTED, _DE_PUNCTUATION),
}
# AltGr (right Alt) + key: the layout's third level. The German one (DIN 2137 T1) has the brackets, braces, @ and the
# rest a code may hold there; the US layout has none. AltGr with shift has nothing a code holds: noise, as any
# combination missing here (never the key's plain character: "]Q1" is AltGr+9, and "9Q1" would be a wrong code).
ALTGR: dict[str, dict[int, str]] = {
    "us": {},
    "de": {
        ecodes.KEY_Q: "@",
        ecodes.KEY_E: "€",
        ecodes.KEY_M: "µ",
        ecodes.KEY_2: "²",
        ecodes.KEY_3: "³",
        ecodes.KEY_7: "{",
        ecodes.KEY_8: "[",
        ecodes.KEY_9: "]",
        ecodes.KEY_0: "}",
        ecodes.KEY_MINUS: "\\",
        ecodes.KEY_RIGHTBRACE: "~",
        ecodes.KEY_102ND: "|",
    },
}
_SHIFT = {ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT}
_CTRL = {ecodes.KEY_LEFTCTRL, ecodes.KEY_RIGHTCTRL}
# Keys that type nothing on their own; scanners send some of them around a code.
_SILENT = {
    ecodes.KEY_LEFTMETA,
    ecodes.KEY_RIGHTMETA,
    ecodes.KEY_CAPSLOCK,
    ecodes.KEY_NUMLOCK,
}
# Ctrl with these types the control character 0x00-0x1f (Ctrl+M: CR, which some scanners end a code with).
_CONTROL_BASE = "@abcdefghijklmnopqrstuvwxyz[\\]^_"
# "ALT mode" (Honeywell, Zebra: any character as Alt + its code on the keypad, whatever the layout): as Windows reads
# it, a code with a leading 0 in Windows-1252, else in the OEM page 437.
_KEYPAD_DIGITS = {getattr(ecodes, f"KEY_KP{d}"): d for d in _DIGITS}
# ASCII SUB ("substitute"): a key with no character; it makes its line noise, rejected like any control byte.
_NO_CHARACTER = "\x1a"
# An AltGr combination the layout lacks: SUB, then the key as a private-use character (U+F0000 + key code; not
# printable either), so the port can say which key it was when the line is rejected (HidPort.explain).
_ALTGR_MARK = 0xF0000
_DOWN, _UP = 1, 0  # 2 is auto-repeat, which a scanner never means
LAYOUTS = tuple(KEYMAPS)


class KeyDecoder:
    """Turns key events into text bytes, tracking shift and AltGr; Enter becomes CR so the usual line splitting
    applies."""

    def __init__(self, layout: str = "us") -> None:
        self._keymap = KEYMAPS[layout]
        self._altgr_map = ALTGR[layout]
        self._shift = False
        self._altgr = False
        self._ctrl = False
        self._alt: str | None = None  # Alt held: the keypad digits typed with it

    def feed(self, events: Iterable[evdev.InputEvent]) -> bytes:
        typed = []
        for event in events:
            if event.type != ecodes.EV_KEY:
                continue
            if event.code in _SHIFT:
                self._shift = event.value != _UP
            elif event.code == ecodes.KEY_RIGHTALT:
                self._altgr = event.value != _UP
            elif event.code in _CTRL:
                self._ctrl = event.value != _UP
            elif event.code == ecodes.KEY_LEFTALT:
                if event.value == _UP and self._alt:
                    typed.append(_alt_code(self._alt))
                self._alt = None if event.value == _UP else (self._alt or "")
            elif event.value == _DOWN and event.code not in _SILENT:
                typed.append(self._char(event.code))
        return "".join(typed).encode("utf-8")

    def _char(self, code: int) -> str:
        if self._alt is not None:  # a keypad digit of a code, or a key that types nothing with Alt
            if (digit := _KEYPAD_DIGITS.get(code)) is not None:
                self._alt += digit
                return ""
            return _NO_CHARACTER
        if self._ctrl:
            keys = self._keymap.get(code)
            at = _CONTROL_BASE.find(keys[0]) if keys else -1
            return chr(at) if at >= 0 else _NO_CHARACTER
        if self._altgr:
            char = None if self._shift else self._altgr_map.get(code)
            return char or _NO_CHARACTER + chr(_ALTGR_MARK + code)
        keys = self._keymap.get(code)
        return keys[self._shift] if keys else _NO_CHARACTER


def _alt_code(digits: str) -> str:
    """The character typed as Alt + ``digits`` on the keypad (a byte Windows-1252 leaves undefined: none)."""
    byte = bytes([int(digits) % 256])
    try:
        return byte.decode("cp1252" if digits.startswith("0") else "cp437")
    except UnicodeDecodeError:
        return _NO_CHARACTER


def _reverse(layout: str) -> dict[str, tuple[int, int]]:
    """Character → (key, level: 0 plain, 1 shift, 2 AltGr) in ``layout``; the main keyboard's key before the
    keypad's (the keypad comes last in a keymap)."""
    out: dict[str, tuple[int, int]] = {}
    for code, char in ALTGR[layout].items():
        out.setdefault(char, (code, 2))
    for code, (plain, shifted) in KEYMAPS[layout].items():
        out.setdefault(plain, (code, 0))
        out.setdefault(shifted, (code, 1))
    return out


_REVERSE = {layout: _reverse(layout) for layout in LAYOUTS}


def _key_in(layout: str, code: int, level: int) -> str | None:
    if level == 2:
        return ALTGR[layout].get(code)
    keys = KEYMAPS[layout].get(code)
    return keys[level] if keys else None


def reread(text: str, layout: str, other: str) -> str | None:
    """``text`` as decoded in ``layout``, read again as the same keys typed in ``other`` (an AltGr combination
    ``layout`` lacks, marked by the decoder, included); None if a key types nothing there."""
    out = []
    chars = iter(text)
    for char in chars:
        if char == _NO_CHARACTER:
            mark = next(chars, "")
            if not mark or ord(mark) < _ALTGR_MARK:
                return None
            key: tuple[int, int] | None = (ord(mark) - _ALTGR_MARK, 2)
        else:
            key = _REVERSE[layout].get(char)
        typed = _key_in(other, *key) if key else None
        if typed is None:
            return None
        out.append(typed)
    return "".join(out)


def layout_hint(scanner: str, layout: str, text: str) -> str | None:
    """When ``text`` (a line the scanner set to ``layout`` sent, rejected or naming no order) is a ticket code read
    in the other layout: which layout to set."""
    from edge.scanners.codes import NoiseError, OrderRef, decode_line, parse_code

    for other in LAYOUTS:
        if other == layout or (again := reread(text, layout, other)) is None:
            continue
        try:
            code = parse_code(decode_line(again.encode("utf-8")))  # without a symbology identifier in front
        except NoiseError:
            continue
        if isinstance(code, OrderRef) and code.station is not None:
            return f'scanner layout is {layout}, the code reads as {other}: set scanners.{scanner}.layout = "{other}"'
    return None


def _key_name(code: int) -> str:
    name = ecodes.KEY.get(code, str(code))
    name = name[0] if isinstance(name, list) else name
    return str(name).removeprefix("KEY_")


class HidPort:
    """A scanner that types: its input device is grabbed, so codes never reach a console or another program."""

    def __init__(self, settings: ScannerSettings) -> None:
        self._settings = settings
        self.label = f"hid {settings.port}"
        self._keys = KeyDecoder(settings.layout)
        try:
            self._device = evdev.InputDevice(settings.port)
        except OSError as err:
            raise DeviceUnreachableError(settings.name, self.label, f"cannot open: {_reason(err)}") from err
        try:
            self._device.grab()
        except OSError as err:
            self._device.close()
            raise DeviceUnreachableError(
                settings.name, self.label, f"cannot grab (another program holds it?): {_reason(err)}"
            ) from err

    def read(self) -> bytes:
        return self._read(READ_WAKE_S)

    def read_waiting(self) -> bytes:
        try:
            return self._read(0)
        except DeviceWriteError:
            return b""

    def _read(self, wait_s: float) -> bytes:
        ready, _, _ = select.select([self._device.fd], [], [], wait_s)
        if not ready:
            return b""
        try:
            return self._keys.feed(self._device.read())
        except BlockingIOError:
            return b""
        except OSError as err:  # ENODEV once unplugged
            raise DeviceWriteError(self._settings.name, self.label, f"connection lost: {_reason(err)}") from err

    def explain(self, line: bytes) -> str | None:
        """Why a rejected line is noise, when the decoder knows better than its bytes: an AltGr combination the
        layout lacks (and which layout reads the line as a ticket code). None: the bytes say it."""
        text = line.decode("utf-8", "replace")
        at = text.find(_NO_CHARACTER)
        if at < 0 or at + 1 >= len(text) or ord(text[at + 1]) < _ALTGR_MARK:
            return None
        layout = self._settings.layout
        reason = f"AltGr+{_key_name(ord(text[at + 1]) - _ALTGR_MARK)} types nothing in keyboard layout {layout}"
        hint = layout_hint(self._settings.name, layout, text)
        return f"{reason}: {hint}" if hint else reason

    def close(self) -> None:
        try:
            self._device.ungrab()
        except OSError:
            pass  # already gone with the device
        self._device.close()


def _reason(err: OSError) -> str:
    return err.strerror or str(err)
