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
# Keys typing nothing on their own there (dead keys, AltGr) are left out: such a line is noise.
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
_SHIFT = {ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT}
# Keys that type nothing on their own; scanners send some of them around a code.
_SILENT = {
    ecodes.KEY_LEFTCTRL,
    ecodes.KEY_RIGHTCTRL,
    ecodes.KEY_LEFTALT,
    ecodes.KEY_RIGHTALT,
    ecodes.KEY_LEFTMETA,
    ecodes.KEY_RIGHTMETA,
    ecodes.KEY_CAPSLOCK,
    ecodes.KEY_NUMLOCK,
}
# ASCII SUB ("substitute"): a key with no character; it makes its line noise, rejected like any control byte.
_NO_CHARACTER = "\x1a"
_DOWN, _UP = 1, 0  # 2 is auto-repeat, which a scanner never means


class KeyDecoder:
    """Turns key events into text bytes, tracking shift; Enter becomes CR so the usual line splitting applies."""

    def __init__(self, layout: str = "us") -> None:
        self._keymap = KEYMAPS[layout]
        self._shift = False

    def feed(self, events: Iterable[evdev.InputEvent]) -> bytes:
        typed = []
        for event in events:
            if event.type != ecodes.EV_KEY:
                continue
            if event.code in _SHIFT:
                self._shift = event.value != _UP
            elif event.value == _DOWN and event.code not in _SILENT:
                keys = self._keymap.get(event.code)
                typed.append(keys[self._shift] if keys else _NO_CHARACTER)
        return "".join(typed).encode("utf-8")


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
        ready, _, _ = select.select([self._device.fd], [], [], READ_WAKE_S)
        if not ready:
            return b""
        try:
            return self._keys.feed(self._device.read())
        except BlockingIOError:
            return b""
        except OSError as err:  # ENODEV once unplugged
            raise DeviceWriteError(self._settings.name, self.label, f"connection lost: {_reason(err)}") from err

    def close(self) -> None:
        try:
            self._device.ungrab()
        except OSError:
            pass  # already gone with the device
        self._device.close()


def _reason(err: OSError) -> str:
    return err.strerror or str(err)
