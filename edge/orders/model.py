"""The order as the central backend sends it, validated into frozen dataclasses."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, overload

from edge.errors import InvalidOrderError, MalformedOrderError, StoredOrderUnreadableError
from edge.states import OrderStatus

# ':' is the separator inside ticket QR codes (edge:v1:<id>:<station>), so ids and stations never hold it.
# Every pattern is used with fullmatch: '$' would also match before a trailing newline ("abc\n").
# Not dots alone: no URL can name "." or ".." (RFC 3986 removes dot segments), so no Reprint could (api80 F3).
_ID = (
    re.compile(r"(?!\.+\Z)[A-Za-z0-9_.\-]{1,64}"),
    "1-64 letters, digits, '_', '.' or '-', not dots alone (a URL cannot name them)",
)
_STATION = (re.compile(r"[a-z0-9_\-]{1,32}"), "1-32 lowercase letters, digits, '_' or '-'")
_MONEY_RE = re.compile(r"-?[0-9]{1,9}(\.[0-9]{1,4})?")  # [0-9], not \d: \d takes any script's digits
_MONEY_FORMAT = 'must be a decimal string like "9.50"'
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")  # a decimal string all the same: too many digits for money
_CURRENCY = (re.compile(r"[A-Z]{3}"), "a 3-letter currency code like EUR")
# The ticket's head line: a line break in it ("A-1\nSTORNO") printed a second word that reads like a cancellation.
# Nor a text-direction control: paper prints none, a screen shows "\u202eA-1042" as "2401-A", and cooks match the two.
_ONE_LINE = (
    re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+"),
    "one line, without line breaks, control characters or text-direction controls (U+202A-U+202E, U+2066-U+2069)",
)

MAX_ITEMS = 500
_FIRST_YEAR, _LAST_YEAR = 2000, 2100
_LEAP_SECOND = re.compile(r"(T[0-9]{2}:[0-9]{2}):60(\.[0-9]+)?([Z+-])")  # hh:mm:60[.frac] before the zone
_MAX_TABLE = 10**9  # a table number is printed big: nine digits at most
_Pattern = tuple[re.Pattern[str], str]  # (regex, what a valid value looks like), so the error can say it
MAX_MODIFIERS = 50
# An order is about 4 levels deep; unknown fields are kept, but nothing deeper than this is: JSON close to
# Python's recursion limit would fail later, when the payload is hashed or stored.
MAX_DEPTH = 32
# Backends that version a row by its update time send Unix seconds or milliseconds; I-JSON's largest exact integer
# (RFC 7493 2.2) is the bound.
MAX_REVISION = 2**53 - 1
# The guest's words beside the contract (an order's note and allergens, an item's allergens): never refused, so cut to
# the item note's length and to a count no guest's allergies reach, rather than printing metres of paper.
MAX_NOTE = 500
# An allergen is a word or a few (EU law names 14): a list's entries are cut shorter, and the list at a count no
# guest's allergies reach. Before, 50 entries of 500 characters each for the order and each dish: a 1,478-line ticket.
MAX_ALLERGEN = 80
MAX_ALLERGENS = 20
# Fields read since orders were hashed by meaning (migration 015): left out of meaning_hash while at their default, so
# an order stored before them hashes as it did then (a retry is still a duplicate, not a conflict).
_SINCE_MEANING_HASH = {"meaning": "unless default"}


@dataclasses.dataclass(frozen=True)
class Modifier:
    name: str
    price: Decimal | None


@dataclasses.dataclass(frozen=True)
class Item:
    sku: str
    name: str
    qty: int
    unit_price: Decimal
    requires_production: bool
    station: str | None
    modifiers: tuple[Modifier, ...]
    note: str | None
    tax_rate: Decimal | None = None  # percent, included in the price; optional (the contract example has none)
    line_id: str | None = None  # the backend's id of this line, stable across revisions (optional)
    allergens: tuple[str, ...] = dataclasses.field(default=(), metadata=_SINCE_MEANING_HASH)  # off the contract


@dataclasses.dataclass(frozen=True)
class Customer:
    name: str | None
    phone: str | None


@dataclasses.dataclass(frozen=True)
class Fulfilment:
    type: str  # pickup, delivery, dine_in, … any short word; printed, never used for routing
    table: str | None
    due_at: datetime | None


@dataclasses.dataclass(frozen=True)
class TaxLine:
    rate: Decimal
    amount: Decimal


@dataclasses.dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    discount: Decimal
    tax: tuple[TaxLine, ...]
    total: Decimal
    currency: str


@dataclasses.dataclass(frozen=True)
class Payment:
    method: str
    status: str


@dataclasses.dataclass(frozen=True)
class Order:
    id: str
    number: str
    created_at: datetime
    channel: str
    priority: int
    customer: Customer | None
    fulfilment: Fulfilment
    items: tuple[Item, ...]
    totals: Totals
    payment: Payment | None
    print_receipt: bool | None
    revision: int = 1  # a higher revision of the same id changes the order (see edge/orders/changes.py)
    status: OrderStatus = OrderStatus.OPEN
    cancel_reason: str | None = None
    # Off the contract, as POS systems send them: the guest's allergies and a note for the whole order (tickets print
    # them after the head); read leniently, never a reason to refuse the order (see _allergens).
    note: str | None = dataclasses.field(default=None, metadata=_SINCE_MEANING_HASH)
    allergens: tuple[str, ...] = dataclasses.field(default=(), metadata=_SINCE_MEANING_HASH)
    # What of those could not be read ("allergens[2] (array)"): for intake's one log line, no part of the order
    not_understood: tuple[str, ...] = dataclasses.field(default=(), compare=False, metadata={"meaning": "never"})

    @property
    def stations(self) -> list[str]:
        """Stations with production items, in the order they first appear."""
        seen: dict[str, None] = {}
        for item in self.items:
            if item.requires_production and item.station:
                seen.setdefault(item.station, None)
        return list(seen)

    def production_items(self, station: str) -> list[Item]:
        return [i for i in self.items if i.requires_production and i.station == station]


# Body bytes from which an order is decoded in a thread: the largest order's parse takes ~2 ms, a thread hop ~0.1 ms.
_DECODE_IN_THREAD = 64 * 1024


async def read_order(body: bytes) -> object:
    """decode_order for the event loop (an HTTP body, an MQTT payload): a large one in a thread, so the loop serves the
    other senders meanwhile."""
    return await asyncio.to_thread(decode_order, body) if len(body) > _DECODE_IN_THREAD else decode_order(body)


def order_id_in(prefix: bytes) -> str | None:
    """The top-level ``id`` of an order whose bytes were cut short (a payload over the size limit, kept in part), so
    its rejection names whose order it was; None when the part kept does not show it. Member by member, each value
    whole or not at all: an ``id`` inside an item is never taken for it."""
    # Cut short, its last character may be split: replaced, as a byte that is no UTF-8 is, which no id matches (one
    # dropped named another order: "ord_\xffreal" read as "ord_real").
    text = prefix.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    decoder, at = json.JSONDecoder(), text.find("{") + 1
    if at == 0 or text[: at - 1].strip():
        return None
    try:
        while True:
            while text[at : at + 1].isspace() or text[at : at + 1] == ",":
                at += 1
            key, at = decoder.raw_decode(text, at)
            at = text.index(":", at) + 1
            while text[at : at + 1].isspace():
                at += 1
            value, at = decoder.raw_decode(text, at)
            if key == "id":
                return value if isinstance(value, str) and _ID[0].fullmatch(value) else None
    except (ValueError, RecursionError):  # cut short (or not JSON) before an id showed; nested past reading
        return None


def decode_order(body: bytes) -> object:
    """An order's bytes as JSON (HTTP body or MQTT payload), or a MalformedOrderError saying why not."""
    # A UTF-8 byte order mark first (.NET's StreamWriter, PowerShell 5): RFC 8259 8.1 lets a parser ignore it.
    body = body.removeprefix(b"\xef\xbb\xbf")
    if not body:
        raise MalformedOrderError("the request body is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedOrderError(f"the body is not UTF-8 (byte {err.start})") from None
    try:
        # An integer of over 4,300 digits (valid JSON) is infinite, refused naming its field as 1e400 is: Python's own
        # ValueError told the till's developer to call sys.set_int_max_str_digits() and named no field.
        return json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_unique_names, parse_int=int_or_infinite
        )
    except RecursionError:
        raise MalformedOrderError("the JSON is nested too deeply") from None
    except ValueError as err:
        raise MalformedOrderError(f"the body is not valid JSON: {err}") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _named_twice(pairs: list[tuple[str, Any]], found: dict[str, Any]) -> str | None:
    """The first name ``pairs`` says twice (``found``: the dict made of them), or None."""
    if len(found) == len(pairs):
        return None
    names = [name for name, _ in pairs]
    return next(name for name in found if names.count(name) > 1)


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose names are unique (I-JSON, RFC 7493 2.3). A name said twice has no agreed meaning (RFC 8259 4:
    parsers differ) and Python's keeps the last: an order would be acknowledged under another id than its sender's,
    or cooked in another quantity than its till showed."""
    found = dict(pairs)
    if (twice := _named_twice(pairs, found)) is not None:
        raise ValueError(f'the key "{twice}" appears twice in one object; each must appear once')
    return found


class NamedTwice(dict[str, Any]):
    """An object that named a key twice, read from where a whole answer cannot be refused for it (a page of central's
    orders): the order it is in is invalid (parse_order says so), not the page."""

    def __init__(self, pairs: dict[str, Any], twice: str) -> None:
        super().__init__(pairs)
        self.twice = twice


def pairs_keeping_twice(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """object_pairs_hook for a page of orders: a key named twice marks its object (NamedTwice) instead of failing."""
    found = dict(pairs)
    twice = _named_twice(pairs, found)
    return found if twice is None else NamedTwice(found, twice)


def int_or_infinite(digits: str) -> int | float:
    """parse_int for an order's body and a page of orders: an integer too long for Python to read (over 4,300 digits)
    is infinite, which its order's check refuses naming the field, instead of the whole body or page being
    unreadable."""
    try:
        return int(digits)
    except ValueError:
        return -math.inf if digits.startswith("-") else math.inf


def as_sent(payload: Any) -> str:
    """An order as sent, for a person to read, as JSON text SQLite can store and read: a number JSON has no word for
    (NaN, an overflow) as its Python name, text no UTF-8 can carry (a lone surrogate) escaped."""
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
    except ValueError:  # rare: walked only then
        payload = _finite(payload)
        text = json.dumps(payload, ensure_ascii=False)
    return json.dumps(payload) if has_lone_surrogate(text) else text  # ASCII: a lone surrogate as its escape


def _finite(value: Any) -> Any:
    """``value`` with each number JSON has no word for as its Python name ('nan', 'inf')."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (JSON's "\\ud800"): text no UTF-8 can carry, nor SQLite store."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def storable_text(text: str) -> str:
    """``text`` as SQLite can store it: a lone surrogate written as its escape."""
    return text.encode("utf-8", "backslashreplace").decode()


def canonical_json(data: Any) -> str:
    """One spelling per content, so a re-sent order hashes the same however it was formatted. Standard JSON only: a
    number that overflowed to infinity (1e400) raises ValueError instead of being written as Infinity."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def late_after_s(created: float, due: float | None, stale_s: float) -> float:
    """How old an order is (seconds since ``created``) when its ticket is late: its stale age, or, for an order due
    later than that after it was made (a pre-order), its due time: a ticket early is not a ticket late. The stale hold
    (edge/printing/ages.py) and recovery's history line (a new box, a restore) reckon by it."""
    return stale_s if due is None else max(stale_s, due - created)


def revision_hash(data: dict[str, Any]) -> str:
    """The hash of a revision's JSON bytes (the revision number left out, see revision_content): all an order stored
    before meaning_hash has, and what an older version compares after a rollback."""
    return content_hash(canonical_bytes(revision_content(data)))


# A cancel's reason: printed on the STORNO, not what the order is (recovery's conflict details leave it out too)
NOT_CONTENT = "cancel_reason"


def meaning_hash(order: Order) -> str:
    """The content hash of a revision as the order it means, so the same order written by another serialiser is a
    duplicate: text NFC, money as normalised decimals, times as UTC instants, a field left out as its default. The
    revision number is not content (see revision_content); fields the agent does not read are none either, nor a
    cancel's reason: the cancel route's words and central's for one cancel are one cancel (the STORNO keeps the words
    the box got first)."""
    view = meaning(order)
    del view["revision"]
    if NOT_CONTENT in view:  # as an order without one has it: such an order hashes as before
        view[NOT_CONTENT] = None
    return content_hash(canonical_json(view).encode())


def same_cancel(stored_payload: str, sent: Order) -> bool:
    """Whether a stored payload and ``sent`` are the order cancelled at one revision, whatever the reason's words:
    compared by the order they mean now, where a hash a version before stop 76 stored counted the words (the verify76
    probe, V1). A payload this version cannot read even as stored is not the same cancel."""
    if sent.status != OrderStatus.CANCELLED:
        return False
    try:
        stored = parse_order(json.loads(stored_payload), stored=True)
    except InvalidOrderError:
        return False
    return stored.status == OrderStatus.CANCELLED and meaning_hash(stored) == meaning_hash(sent)


def first_difference(stored: Order, sent: Order) -> str | None:
    """The first field in which two orders mean different things, as a path (``created_at``, ``items[0].qty``),
    compared as meaning_hash compares them: an equivalent retry has none. None also where only the JSON bytes differ
    (a row an older version stored, compared by them)."""
    not_content = {"revision": None, NOT_CONTENT: None}
    return _first_difference({**meaning(stored), **not_content}, {**meaning(sent), **not_content}, "")


def _first_difference(old: Any, new: Any, path: str) -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):  # one dataclass's fields, those at their default maybe left out
        for name in old | new:
            found = _first_difference(old.get(name), new.get(name), f"{path}.{name}" if path else name)
            if found is not None:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        for index, (a, b) in enumerate(zip(old, new, strict=False)):
            if (found := _first_difference(a, b, f"{path}[{index}]")) is not None:
                return found
        return f"{path}[{min(len(old), len(new))}]" if len(old) != len(new) else None  # one has a line more
    return None if old == new else path


# The fields of each dataclass an order is made of, each with the value it is left out at (_KEPT: never). Leaves are
# looked at first and fields() is asked once per class: asking is_dataclass() and fields() of every part of every order
# took 40 % of meaning_hash's time, on the loop, for each order taken (96 -> 57 us for an order of the bench).
_FIELDS: dict[type, tuple[tuple[str, object], ...]] = {}
_KEPT = object()


def _meaning_fields(cls: type) -> tuple[tuple[str, object], ...]:
    found = []
    for field in dataclasses.fields(cls):
        if field.metadata.get("meaning") != "never":
            found.append((field.name, field.default if field.metadata.get("meaning") == "unless default" else _KEPT))
    return tuple(found)


def meaning(value: Any) -> Any:
    """A validated order, or a part of it (a cancel's reason too), as JSON with one spelling per meaning."""
    if isinstance(value, str):  # parse_order reads NFC; a reason an older version kept (pending_cancels) may be NFD
        return nfc(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, Decimal):  # "9.50" and "9.5", "0.00", "0" and "-0"
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, datetime):  # "18:04:11Z", "18:04:11.000Z" and "19:04:11+01:00"
        return value.astimezone(UTC).isoformat()
    if isinstance(value, tuple):
        return [meaning(part) for part in value]
    fields = _FIELDS.get(type(value))
    if fields is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            return value
        fields = _FIELDS[type(value)] = _meaning_fields(type(value))
    # Anything is unequal to _KEPT: a field without a default to leave it out at is always there.
    return {name: meaning(part) for name, left_out in fields if (part := getattr(value, name)) != left_out}


def revision_content(data: dict[str, Any]) -> dict[str, Any]:
    """What a revision's content hash covers: the payload without its revision number, and without the status when it
    is the default. So an order stored before revisions existed and the same order sent with ``"revision": 1`` are one
    content (a duplicate), while the same revision sent cancelled is other content (a conflict)."""
    view = {k: v for k, v in data.items() if k != "revision"}
    if view.get("status") == OrderStatus.OPEN:
        del view["status"]
    return view


def nfc(text: str) -> str:
    """``text`` composed (NFC): macOS and iOS write "ä" as "a" and a combining diaeresis (NFD), which compares unequal
    to the "ä" of the same order from another sender. ASCII, nearly every text of an order, is NFC as it is."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


_SURROGATE = re.compile(r"[\ud800-\udfff]")  # a lone surrogate (JSON's "\ud800"): text no UTF-8 can carry
NOT_UNICODE = "holds text that is not valid Unicode (a lone surrogate)"


class _Reader:
    """Reads one JSON object, naming the full path of any field that is wrong. ``lax``: a payload stored here before,
    read without the limits a sender is held to (see parse_order)."""

    def __init__(self, data: Any, path: str, *, lax: bool = False) -> None:
        if not isinstance(data, dict):
            raise InvalidOrderError(path or "body", "must be an object")
        self.data = data
        self.path = path
        self.lax = lax

    def _field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, *, required: bool = True) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise InvalidOrderError(self._field(key), "is required")
            return None
        return self.data[key]

    # A required field is never None: the overloads tell the type checker so.
    @overload
    def text(
        self, key: str, *, required: Literal[True] = ..., max_len: int = ..., pattern: _Pattern | None = ...
    ) -> str: ...
    @overload
    def text(self, key: str, *, required: bool, max_len: int = ..., pattern: _Pattern | None = ...) -> str | None: ...
    def text(
        self, key: str, *, required: bool = True, max_len: int = 200, pattern: _Pattern | None = None
    ) -> str | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidOrderError(self._field(key), f"must be a string, got {_json_type(value)}")
        # Before the blank check: a lone surrogate is a control character to unicodedata ("must not be empty" was
        # the answer), and field by field names the text, where canonical_bytes could name only the top-level key.
        if has_lone_surrogate(value):
            raise InvalidOrderError(self._field(key), NOT_UNICODE)
        # Read NFC, so every consumer (change tickets, scans, the stored number) sees one text for one meaning; the
        # payload is stored as sent. Before the checks: the length is the composed text's.
        value = nfc(value)
        if _blank(value):
            if required:
                raise InvalidOrderError(self._field(key), "must not be empty")
            # An optional text that says nothing is none: no "!" line on paper, and "" one content with null or left
            # out (another serialiser's retry was a conflict: the http78 probe, F3 and F4)
            return None
        if self.lax:
            return value
        if pattern is not None and not pattern[0].fullmatch(value):
            raise InvalidOrderError(self._field(key), f"must be {pattern[1]}, got {value[:40]!r}")
        if len(value) > max_len:
            raise InvalidOrderError(self._field(key), f"must be at most {max_len} characters")
        return value

    def integer(self, key: str, *, required: bool = True, low: int, high: int, default: int = 0) -> int:
        value = self.raw(key, required=required)
        if value is None:
            return default
        if value in (math.inf, -math.inf):  # 1e400, or an integer of more digits than are read (int_or_infinite)
            raise InvalidOrderError(self._field(key), f"must be between {low} and {high}, got a number too large")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidOrderError(self._field(key), f"must be an integer, got {_json_type(value)}")
        if not low <= value <= high and not self.lax:
            raise InvalidOrderError(self._field(key), f"must be between {low} and {high}, got {value}")
        return value

    def boolean(self, key: str, *, required: bool = True) -> bool | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise InvalidOrderError(self._field(key), f"must be true or false, got {_json_type(value)}")
        return value

    @overload
    def money(self, key: str, *, required: Literal[True] = ...) -> Decimal: ...
    @overload
    def money(self, key: str, *, required: bool) -> Decimal | None: ...
    def money(self, key: str, *, required: bool = True) -> Decimal | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            # Floats lose cents; the contract says decimal strings.
            raise InvalidOrderError(self._field(key), f"{_MONEY_FORMAT}, got {_json_type(value)}")
        if not _MONEY_RE.fullmatch(value):
            decimal = _DECIMAL_RE.fullmatch(value)
            why = "must have at most 9 digits before the point and 4 after" if decimal else _MONEY_FORMAT
            raise InvalidOrderError(self._field(key), f"{why}, got {value[:40]!r}")
        try:
            return Decimal(value)
        except InvalidOperation:  # pragma: no cover - the regex already rules this out
            raise InvalidOrderError(self._field(key), "is not a decimal number") from None

    @overload
    def timestamp(self, key: str, *, required: Literal[True] = ...) -> datetime: ...
    @overload
    def timestamp(self, key: str, *, required: bool) -> datetime | None: ...
    def timestamp(self, key: str, *, required: bool = True) -> datetime | None:
        value = self.text(key, required=required, max_len=40)
        if value is None:
            return None
        try:
            # RFC 3339 5.6: "T" and "Z" may be lower case, which Python 3.11's reader refuses; a leap second (:60),
            # which datetime cannot hold, is the last microsecond of its minute
            parsed = datetime.fromisoformat(_LEAP_SECOND.sub(r"\1:59.999999\3", value.upper(), count=1))
        except ValueError:
            raise InvalidOrderError(
                self._field(key), f"must be an ISO 8601 time like 2026-11-22T18:04:11Z, got {value!r}"
            ) from None
        if (offset := parsed.utcoffset()) is None:
            raise InvalidOrderError(self._field(key), "must carry a time zone (e.g. Z or +01:00)")
        if offset % timedelta(minutes=1):
            # ISO 8601 allows it, RFC 3339 and SQLite do not: retention could not date such an order, kept for good
            raise InvalidOrderError(
                self._field(key), f"must have an offset in whole minutes like +05:30 (RFC 3339), got {value!r}"
            )
        # Far-off years overflow when shown in the store's zone (9999-12-31T23:59:59Z in Europe/Berlin); a day's margin
        # within datetime's range is all a stored time needs (an older intake took any year).
        first, last = (datetime.min.year + 1, datetime.max.year - 1) if self.lax else (_FIRST_YEAR, _LAST_YEAR)
        if not first <= parsed.year <= last:
            raise InvalidOrderError(self._field(key), f"must be in the years {first} to {last}, got {value!r}")
        return parsed

    def array(self, key: str, *, required: bool = True, max_len: int) -> list[Any]:
        value = self.raw(key, required=required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidOrderError(self._field(key), f"must be an array, got {_json_type(value)}")
        if len(value) > max_len and not self.lax:
            raise InvalidOrderError(self._field(key), f"must have at most {max_len} entries")
        return value

    @overload
    def child(self, key: str, *, required: Literal[True] = ...) -> _Reader: ...
    @overload
    def child(self, key: str, *, required: bool) -> _Reader | None: ...
    def child(self, key: str, *, required: bool = True) -> _Reader | None:
        value = self.raw(key, required=required)
        if value is None:
            return None
        return _Reader(value, self._field(key), lax=self.lax)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _or_zero(amount: Decimal | None) -> Decimal:
    return Decimal("0") if amount is None else amount


@overload
def _rate(r: _Reader, key: str, *, required: Literal[True] = ...) -> Decimal: ...
@overload
def _rate(r: _Reader, key: str, *, required: bool) -> Decimal | None: ...
def _rate(r: _Reader, key: str, *, required: bool = True) -> Decimal | None:
    """A tax rate in percent, 0 up to (not including) 100."""
    rate = r.money(key, required=required)
    if rate is not None and not 0 <= rate < 100 and not r.lax:
        raise InvalidOrderError(r._field(key), f"must be a percentage from 0 to below 100, got {rate}")
    return rate


def _guest_text(value: Any, path: str, not_understood: list[str], limit: int = MAX_NOTE) -> str | None:
    """A text the guest's words are sent in beside the contract (a note, an allergen): a string, cut to ``limit``
    characters; blank or null is none; anything else is noted in ``not_understood`` (its path and JSON type, never
    its content), never refused."""
    if value is None:
        return None
    if not isinstance(value, str):
        not_understood.append(f"{path} ({_json_type(value)})")
        return None
    if _blank(value):
        return None
    value = nfc(value)  # as _Reader.text reads a text
    if len(value) > limit:
        not_understood.append(f"{path} (over {limit} characters, cut)")
        return value[:limit] + "…"
    return value


def _allergens(value: Any, path: str, not_understood: list[str]) -> tuple[str, ...]:
    """``allergens`` as POS systems send them: a string, an object ({"code": "F", "name": "Erdnüsse"}: its name, else
    its code), or an array of those; read as _guest_text reads a text, entry by entry (an array's entries cut at
    MAX_ALLERGEN characters, one text holding them all at MAX_NOTE), the first MAX_ALLERGENS."""
    entries = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    found: list[str] = []
    for index, entry in entries:
        if len(found) == MAX_ALLERGENS:
            not_understood.append(f"{path} (over {MAX_ALLERGENS} entries, cut)")
            break
        where = path if index is None else f"{path}[{index}]"
        if isinstance(entry, dict):
            words = (entry.get(key) for key in ("name", "code"))
            entry = next((w for w in words if isinstance(w, str) and not _blank(w)), None)
            if entry is None:
                not_understood.append(f"{where} (object)")
                continue
        limit = MAX_NOTE if index is None else MAX_ALLERGEN
        if (text := _guest_text(entry, where, not_understood, limit)) is not None:
            found.append(text)
    return tuple(found)


def _parse_item(data: Any, path: str, *, lax: bool, not_understood: list[str]) -> Item:
    r = _Reader(data, path, lax=lax)
    requires_production = r.boolean("requires_production")
    station = r.text("station", required=bool(requires_production), max_len=32, pattern=_STATION)
    modifiers = []
    for m_index, m_data in enumerate(r.array("modifiers", required=False, max_len=MAX_MODIFIERS)):
        m = _Reader(m_data, f"{path}.modifiers[{m_index}]", lax=lax)
        modifiers.append(Modifier(name=m.text("name"), price=m.money("price", required=False)))
    return Item(
        sku=r.text("sku", max_len=64),
        name=r.text("name"),
        qty=r.integer("qty", low=1, high=9999),
        unit_price=r.money("unit_price"),
        requires_production=bool(requires_production),
        station=station,
        modifiers=tuple(modifiers),
        note=r.text("note", required=False, max_len=500),
        tax_rate=_rate(r, "tax_rate", required=False),
        line_id=r.text("line_id", required=False, max_len=64),
        allergens=_allergens(r.data.get("allergens"), f"{path}.allergens", not_understood),
    )


def check_line_ids(order: Order) -> None:
    """A line_id names one line across revisions (change tickets match lines by it): a sender's order with two lines
    sharing one is refused. Not part of parse_order: orders an earlier version stored so must still print, change and
    cancel (edge/orders/changes.py matches their repeats by position)."""
    first: dict[str, int] = {}
    for index, item in enumerate(order.items):
        if item.line_id is None:
            continue
        if item.line_id in first:
            raise InvalidOrderError(
                f"items[{index}].line_id",
                f"repeats items[{first[item.line_id]}].line_id {item.line_id!r}: each line needs its own line_id",
            )
        first[item.line_id] = index


def _check_depth(data: dict[str, Any]) -> None:
    """Refuse a payload nested deeper than MAX_DEPTH, or one with an object that named a key twice (read from a page
    of central's orders), naming the top-level field; iterative, so depth costs no stack."""
    if isinstance(data, NamedTwice):
        raise InvalidOrderError(data.twice, _TWICE.format(data.twice))
    stack: list[tuple[Any, int, str]] = [(v, 2, key) for key, v in data.items() if isinstance(v, dict | list)]
    while stack:
        value, depth, field = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidOrderError(field, f"is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, NamedTwice):
            raise InvalidOrderError(field, _TWICE.format(value.twice))
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1, field) for child in children if isinstance(child, dict | list))


_TWICE = 'names the key "{}" twice in one object; each must appear once'


def _field_failing(data: dict[str, Any], step: Callable[[Any], object]) -> str:
    """The top-level field on which ``step`` (writing its JSON, or encoding that) raises ValueError."""
    for key, value in data.items():
        try:
            step({key: value})
        except ValueError:
            return key
    return "body"


def canonical_bytes(data: dict[str, Any]) -> bytes:
    """The canonical JSON as UTF-8, what is hashed and stored; refuses text that has no UTF-8 (a lone surrogate) and
    numbers beyond a float (1e400: JSON cannot write the infinity Python reads it as)."""
    try:
        return canonical_json(data).encode()
    except UnicodeEncodeError:
        field = _field_failing(data, lambda part: canonical_json(part).encode())
        raise InvalidOrderError(field, NOT_UNICODE) from None
    except ValueError:
        field = _field_failing(data, canonical_json)
        raise InvalidOrderError(field, "holds a number too large to store (beyond a 64-bit float)") from None


def _blank(text: str) -> bool:
    """Nothing a printer would show: only spaces, control characters, marks that show nothing (a zero-width space, a
    direction mark, a word joiner) and marks that go on a letter (a variation selector, a lone accent)."""
    if text[:1].isalnum():  # nearly every name: decided by its first letter
        return False
    return all(unicodedata.category(c)[0] in "CZM" for c in text)


def parse_order(data: Any, *, stored: bool = False) -> Order:
    """Validate a decoded JSON payload; raises InvalidOrderError naming the first bad field.

    ``stored``: a payload this agent stored before (to print, change or cancel it), read without the limits a sender
    is held to (lengths, counts, ranges, patterns): an older version took it with laxer ones, answered 2xx, and it
    must still print. Types, required fields, times and money are read as ever: they are what printing needs."""
    r = _Reader(data, "", lax=stored)
    _check_depth(r.data)
    order_id = r.text("id", max_len=64, pattern=_ID)
    number = r.text("number", max_len=32, pattern=_ONE_LINE)
    created_at = r.timestamp("created_at")
    channel = r.text("channel", max_len=32)
    priority = r.integer("priority", required=False, low=-1000, high=1000)

    customer = None
    if (c := r.child("customer", required=False)) is not None:
        customer = Customer(
            name=c.text("name", required=False, max_len=100), phone=c.text("phone", required=False, max_len=40)
        )

    f = r.child("fulfilment")
    table = f.raw("table", required=False)
    table = nfc(table) if isinstance(table, str) else table
    if table in (math.inf, -math.inf):  # 1e400, or more digits than are read: a float, but no "got number" for it
        raise InvalidOrderError(
            "fulfilment.table", f"must be a number from 0 to {_MAX_TABLE - 1}, got a number too large"
        )
    if isinstance(table, bool) or (table is not None and not isinstance(table, (str, int))):
        raise InvalidOrderError("fulfilment.table", f"must be a string or a number, got {_json_type(table)}")
    if isinstance(table, str) and len(table) > 32 and not stored:
        raise InvalidOrderError("fulfilment.table", "must be at most 32 characters")
    if isinstance(table, int) and not 0 <= table < _MAX_TABLE and not stored:
        raise InvalidOrderError("fulfilment.table", f"must be a number from 0 to {_MAX_TABLE - 1}, got {table}")
    fulfilment = Fulfilment(
        type=f.text("type", max_len=32),
        table=None if table is None else str(table),
        due_at=f.timestamp("due_at", required=False),
    )

    raw_items = r.array("items", max_len=MAX_ITEMS)
    if not raw_items:
        raise InvalidOrderError("items", "must contain at least one item")
    not_understood: list[str] = []
    allergens = _allergens(r.data.get("allergens"), "allergens", not_understood)
    note = _guest_text(r.data.get("note"), "note", not_understood)
    items = tuple(
        _parse_item(item, f"items[{index}]", lax=stored, not_understood=not_understood)
        for index, item in enumerate(raw_items)
    )

    t = r.child("totals")
    tax = []
    for t_index, t_data in enumerate(t.array("tax", required=False, max_len=20)):
        line = _Reader(t_data, f"totals.tax[{t_index}]", lax=stored)
        tax.append(TaxLine(rate=_rate(line, "rate"), amount=line.money("amount")))
    totals = Totals(
        subtotal=t.money("subtotal"),
        discount=_or_zero(t.money("discount", required=False)),
        tax=tuple(tax),
        total=t.money("total"),
        currency=t.text("currency", max_len=3, pattern=_CURRENCY),
    )

    payment = None
    if (p := r.child("payment", required=False)) is not None:
        payment = Payment(method=p.text("method", max_len=32), status=p.text("status", max_len=32))

    return Order(
        id=order_id,
        number=number,
        created_at=created_at,
        channel=channel,
        priority=priority,
        customer=customer,
        fulfilment=fulfilment,
        items=items,
        totals=totals,
        payment=payment,
        print_receipt=r.boolean("print_receipt", required=False),
        revision=r.integer("revision", required=False, low=1, high=MAX_REVISION, default=1),
        status=_status(r),
        cancel_reason=r.text("cancel_reason", required=False, max_len=200),
        note=note,
        allergens=allergens,
        not_understood=tuple(not_understood),
    )


def parse_stored(data: Any, order_id: str) -> Order:
    """A payload this agent stored (parse_order's ``stored``), to change or cancel it; one this version cannot read even
    so (a type, a time without its zone) raises StoredOrderUnreadableError: the stored field, never the sender's."""
    try:
        return parse_order(data, stored=True)
    except InvalidOrderError as err:
        raise StoredOrderUnreadableError(order_id, err) from err


@dataclasses.dataclass(frozen=True)
class Cancel:
    """A cancel sent on its own (POST /api/v1/orders/{id}/cancel): the revision it is and why."""

    revision: int
    reason: str | None = None


def parse_cancel(data: Any) -> Cancel:
    """Validate a cancel's body with the rules of the order fields it becomes (revision, cancel_reason), naming the
    fields as the sender wrote them."""
    r = _Reader(data, "")
    if "revision" not in r.data:
        raise InvalidOrderError("revision", "is required: the revision this cancellation is (above the current one)")
    found = Cancel(
        revision=r.integer("revision", low=1, high=MAX_REVISION), reason=r.text("reason", required=False, max_len=200)
    )
    canonical_bytes({"reason": found.reason})  # a lone surrogate could never be stored
    return found


def cancelled_payload(payload: dict[str, Any], cancel: Cancel) -> dict[str, Any]:
    """The order ``payload`` sent again as ``cancel``: what the cancel route stands for."""
    out = payload | {"revision": cancel.revision, "status": OrderStatus.CANCELLED.value}
    if cancel.reason is not None:
        out["cancel_reason"] = cancel.reason
    return out


def is_order_id(value: str) -> bool:
    """Whether an order may have this id (parse_order's rule for ``id``)."""
    return _ID[0].fullmatch(value) is not None


def _status(r: _Reader) -> OrderStatus:
    value = r.text("status", required=False, max_len=16)
    if value is None:
        return OrderStatus.OPEN
    try:
        return OrderStatus(value)
    except ValueError:
        raise InvalidOrderError("status", f'must be "open" or "cancelled", got {value!r}') from None
