"""The one place errors become HTTP answers: a JSON body naming what is wrong, never a 500 for bad input."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from edge.errors import (
    AmbiguousError,
    InvalidOrderError,
    MalformedOrderError,
    NotFoundError,
    OrderConflictError,
    StoreError,
    StoreUnavailableError,
    WrongStateError,
    intake_error_body,
    too_large_body,
)
from edge.log import Summarised
from edge.orders.model import read_order

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_INT = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() also takes '²', which int() refuses


class InvalidQueryError(Exception):
    """A query parameter is wrong; answered 422 naming it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def path_id(request: web.Request, name: str, what: str) -> int:
    """A numeric id from the path; anything else names a thing that does not exist (404)."""
    raw = request.match_info[name]
    if not _INT.fullmatch(raw):
        raise NotFoundError(f"{what} {raw[:20]!r} does not exist")
    return int(raw)


def query_limit(request: web.Request, *, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not _INT.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise InvalidQueryError("limit", f"must be an integer between 1 and {maximum}")
    return int(raw)


class BadRequestError(Exception):
    """The request itself is unreadable (not JSON, not UTF-8, nested too deep)."""


class UndecodableBodyError(BadRequestError):
    """A body its Content-Encoding cannot decode (plain JSON labelled gzip by a till or a proxy, a damaged gzip):
    logged (api_bad_request, summarised), since the sender's every order fails alike."""


class BrokenBodyError(UndecodableBodyError):
    """aiohttp's parser could not read the body's stream (a broken chunked framing): the connection cannot carry
    another request, and the answer says so (Connection: close), or a keep-alive sender's next request meets a reset."""


class UnknownTransferCodingError(Exception):
    """A transfer coding other than chunked (`Transfer-Encoding: gzip, chunked`): not undone here, answered 501 (RFC
    9112 6.1) and the connection closed; Content-Encoding is the header for a compressed order."""

    def __init__(self, header: str) -> None:
        super().__init__(
            f"the request's Transfer-Encoding ({header}) is not one the box undoes: send the body chunked or with a"
            " Content-Length, compressed under Content-Encoding (gzip or deflate) if at all"
        )


class RequestTimeoutError(Exception):
    """The body did not arrive within api.body_timeout_s; answered 408 and the connection is closed."""


class ClientGoneError(Exception):
    """The client's connection went away before its body was read (a till's Wi-Fi dropped): nobody to answer, and no
    bug of ours."""


BODY_TIMEOUT_S = web.AppKey("body_timeout_s", float)
# A sender that asked `Expect: 100-continue` holds its body back until it is told to go on (RFC 9110 10.1.1): it is
# told so when the body is read, after the checks of the head (token, size, coding), not before them as aiohttp does.
_CONTINUE_OWED = web.RequestKey("continue_owed", bool)
# A body that keeps coming gets a second more for each this many bytes (Apache's mod_reqtimeout: body=20,MinRate=500),
# its deadline moved this often while it comes.
_BODY_MIN_RATE = 500
_BODY_RATE_CHECK_S = 0.25
# A client that goes away is one summarised warning, not a traceback each: a reconnecting flood of them wrote 38 MB of
# log in 21 s to the SD card.
_GONE = Summarised("api_client_gone")
_UNDECODABLE = Summarised("api_bad_request")
# Each order refused on a full or read-only card is a line written to that same card: a sender's steady stream
# wrote 987 of them in 15 s (the disk-fault probe). Said once, then once a minute with how many were left out.
_UNWRITABLE = Summarised("store_unavailable", every_s=60.0, level="error")
# Orders refused for a field (422): the technician's one trace of "the kitchen never got it", once a minute per field
# (a sender's bug repeats it for every order), the app's own so that each agent counts its own.
ORDER_REFUSALS = web.AppKey("order_refusals", Summarised)


def _unwritable(err: StoreUnavailableError) -> str:
    """Why the store refuses, in the words a sender's operator acts on."""
    text = str(err).lower()
    if (held := text.find("another program holds")) >= 0:  # a technician's sqlite3: the card is fine
        return str(err)[held:].split(";")[0]
    if "replaced while the agent ran" in text:
        return "the box's database was replaced while the agent ran: stop the agent and use `edge restore`"
    if "full" in text:
        return "the box's storage card is full"
    if "readonly" in text or "read-only" in text:
        return "the box's storage card is read-only"
    return "the box's storage card does not finish its writes"


class UnsupportedEncodingError(Exception):
    """A Content-Encoding the box cannot undo: 415 with Accept-Encoding, so a sender can send it plain (RFC 7694)."""

    def __init__(self, coding: str) -> None:
        super().__init__(
            f"the body's Content-Encoding ({coding}) is not one the box decodes; send it gzip, deflate or uncompressed"
        )


ACCEPTED_CODINGS = "gzip, deflate, identity"
# Content codings registered with IANA that compress or encrypt: a body in one of these cannot be read here. Any other
# word names no coding at all ("UTF-8": a charset put in the wrong header), and plain JSON under it is taken as it is.
_NOT_DECODED = frozenset({"br", "zstd", "compress", "x-compress", "pack200-gzip", "exi", "aes128gcm", "dcb", "dcz"})
_PLAIN_JSON = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*[{\[]")
# wbits for zlib: gzip's header and trailer, or deflate's zlib wrapper (RFC 9110 8.4.1); x-gzip is gzip (8.4.1.3)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "identity": 0}


def _codings_to_undo(header: str) -> tuple[str, ...] | None:
    """The codings read_body undoes, last applied first; None for a word that names no coding. All of them here, a
    lone gzip too (the server does not let aiohttp decode: it took the first of several gzip members and dropped the
    connection unanswered at the second, and let a body cut short before its checksum through)."""
    value = header.strip().lower() if header.isascii() else header
    if value in ("", "identity"):
        return ()
    codings = [c.strip() for c in value.split(",") if c.strip()]
    for coding in codings:
        if coding in _NOT_DECODED:
            raise UnsupportedEncodingError(coding)
        if coding not in _WBITS:
            return None
    return tuple(c for c in reversed(codings) if c != "identity")


def _undo(body: bytes, codings: tuple[str, ...], header: str, limit: int) -> bytes:
    """Decoded to at most ``limit`` bytes: a small body that unpacks to gigabytes stops there, as a 413."""
    for coding in codings:
        body = _unpack(body, coding, header, limit)
    return body


def _unpack(body: bytes, coding: str, header: str, limit: int) -> bytes:
    wbits = _WBITS[coding]
    if coding == "deflate" and body[:1] and body[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate without zlib's wrapper, as some senders write it
    out, rest, whole = b"", body, False
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            out += decoder.decompress(rest, limit + 1 - len(out))
        except zlib.error:
            whole = False
            break
        if len(out) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(out))
        whole, rest = decoder.eof, decoder.unused_data  # not eof: cut short before its end (a gzip's checksum)
        # gzip is a series of members (RFC 1952 2.2: `cat a.gz b.gz`, pigz --independent, a streaming writer)
        if not whole or not rest or _WBITS[coding] != _WBITS["gzip"]:
            break
    if not whole or rest:
        raise UndecodableBodyError(f"the request body is unreadable: its Content-Encoding ({header}) cannot decode it")
    return out


async def continue_when_read(request: web.Request) -> web.Response | None:
    """The routes' ``expect_handler``: what aiohttp's default does, except that the interim answer waits for
    :func:`read_body`, so a request refused for its head is answered with its final status, not with `100` first.
    Its answer (417 to an expectation it does not know) goes out as it is, before any middleware: in our JSON."""
    expect = request.headers.get("Expect", "")
    if request.version < (1, 1):
        return None  # HTTP/1.0 has no interim answers; such a sender does not wait for one
    if expect.lower() != "100-continue":
        response = error_response(417, "expectation_failed", f"unknown Expect: {expect} (only 100-continue is)")
        response.force_close()  # its body, if it sends it after all, is not a request
        return response
    request[_CONTINUE_OWED] = True
    return None


def add_post(app: web.Application, path: str, handler: Handler) -> None:
    app.router.add_post(path, handler, expect_handler=continue_when_read)


async def _continue(request: web.Request) -> None:
    if request.get(_CONTINUE_OWED):
        request[_CONTINUE_OWED] = False
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not the answer's start (as aiohttp's own handler)


async def _read_while_it_comes(request: web.Request, timeout_s: float | None) -> bytes:
    """``request.read()`` within ``timeout_s``, and a second more for every _BODY_MIN_RATE bytes that came: a big
    order on a slow but steady line gets in; a trickle slower than that is still cut off (TimeoutError)."""
    if timeout_s is None:
        return await request.read()
    loop = asyncio.get_running_loop()
    reading = asyncio.ensure_future(request.read())
    start = last = loop.time()
    came = request.content.total_bytes
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            while True:
                if request.content.total_bytes != came:
                    came, last = request.content.total_bytes, loop.time()
                # ...and no longer than timeout_s of silence (nginx's client_body_timeout): a burst then nothing does
                # not hold the connection for the seconds its bytes earned
                deadline.reschedule(min(start + timeout_s + came / _BODY_MIN_RATE, last + timeout_s))
                done, _ = await asyncio.wait({reading}, timeout=_BODY_RATE_CHECK_S)
                if done:
                    return reading.result()
    finally:
        reading.cancel()  # given up on (or the handler was): not left reading


async def read_body(request: web.Request) -> bytes:
    """The whole body, decoded, within the app's body timeout: a client that trickles it holds no connection for
    long. aiohttp keeps what it read: the signature check and the handler both ask for it."""
    if (declared := request.content_length) is not None and declared > request.client_max_size:
        # Its head says so: refused now, not after the upload (or the body timeout); aiohttp reads and drops what
        # still comes for a while (its lingering close), so a sender writing its whole body first still reads this.
        raise web.HTTPRequestEntityTooLarge(max_size=request.client_max_size, actual_size=declared)
    transfer = ", ".join(request.headers.getall("Transfer-Encoding", ()))
    if any(c.strip().lower() not in ("chunked", "identity", "") for c in transfer.split(",")):
        raise UnknownTransferCodingError(transfer)
    header = ", ".join(request.headers.getall("Content-Encoding", ()))  # two lines are one list (RFC 9110 5.3)
    codings = _codings_to_undo(header)
    await _continue(request)
    try:
        if request.content.is_eof():  # all here already (most orders come in the head's packet): nothing to wait for
            body = await request.read()
        else:
            body = await _read_while_it_comes(request, request.app.get(BODY_TIMEOUT_S))
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {request.app[BODY_TIMEOUT_S]:g} s and a second more for every"
            f" {_BODY_MIN_RATE} bytes that came, or stopped coming for {request.app[BODY_TIMEOUT_S]:g} s"
        ) from None
    except ConnectionError as err:  # a reset, or aiohttp's "Connection lost" for a connection closed mid-body
        raise ClientGoneError(str(err) or type(err).__name__) from None
    except RuntimeError as err:
        if request.transport is not None:
            raise
        raise ClientGoneError(str(err)) from None  # aiohttp's "Connection closed.": lost before the read began
    except web.RequestPayloadError as err:
        # A body its Content-Encoding cannot decode (plain JSON labelled gzip by a till or a proxy, a damaged gzip):
        # the sender's fault, which a retry repeats, so not a 5xx it would retry for ever.
        what = f"its Content-Encoding ({header}) cannot decode it" if header else "it could not be read"
        raise BrokenBodyError(f"the request body is unreadable: {what}") from err
    if codings is None:
        if not _PLAIN_JSON.match(body):
            raise UnsupportedEncodingError(header)
        return body
    return _undo(body, codings, header, request.client_max_size) if codings else body


# The status page holds a token box and Reprint, Release all and Discard: no other site may lay it under a decoy in a
# frame and take the clicks (X-Frame-Options for older browsers, frame-ancestors for the rest), and no browser is to
# read an answer as another type than it says (a JSON reason shown as HTML).
NO_FRAMING = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


async def forbid_framing(request: web.Request, response: web.StreamResponse) -> None:
    """The app's ``on_response_prepare``: every answer it sends, a static file, a 404 and a raised error too (a
    middleware sees only those its handlers return)."""
    response.headers.update(NO_FRAMING)


def error_response(status: int, error: str, reason: str, **extra: object) -> web.Response:
    headers = {"Retry-After": "5"} if status == 503 else None
    return web.json_response({"error": error, "reason": reason, **extra}, status=status, headers=headers)


def unsupported_encoding_response(reason: str) -> web.Response:
    response = error_response(415, "unsupported_content_encoding", reason)
    response.headers["Accept-Encoding"] = ACCEPTED_CODINGS
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _answer(request, handler)
    if request.get(_CONTINUE_OWED):
        # Answered without the body, which its sender still holds back: whether it sends it now or not, the
        # connection cannot tell the next request from it, so it ends with this answer (RFC 9110 10.1.1).
        response.force_close()
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidOrderError as err:
        if (refusals := request.app.get(ORDER_REFUSALS)) is not None:
            refusals.note(err.field, field=err.field, reason=err.reason, path=request.path, remote=request.remote)
        return web.json_response(intake_error_body(err), status=422)
    except InvalidQueryError as err:
        return error_response(422, "invalid_request", err.reason, field=err.field)
    except BadRequestError as err:
        response = error_response(400, "malformed_request", str(err))
        if isinstance(err, UndecodableBodyError):
            _UNDECODABLE.note("undecodable_body", path=request.path, error=str(err))
        if isinstance(err, BrokenBodyError):
            response.force_close()
        return response
    except UnsupportedEncodingError as err:
        return unsupported_encoding_response(str(err))
    except UnknownTransferCodingError as err:
        response = error_response(501, "not_implemented", str(err))
        response.force_close()  # its body's framing is not known: nothing after it can be told apart
        return response
    except ClientGoneError as err:
        _GONE.note("mid_body", path=request.path, error=str(err))
        response = error_response(400, "client_gone", "the connection closed before the body arrived")
        response.force_close()
        return response
    except RequestTimeoutError as err:
        response = error_response(408, "request_timeout", str(err))
        response.force_close()
        return response
    except OrderConflictError as err:
        return web.json_response(intake_error_body(err), status=409)
    except NotFoundError as err:
        return error_response(404, "not_found", str(err))
    except WrongStateError as err:
        return error_response(409, "wrong_state", str(err))
    except AmbiguousError as err:
        return error_response(409, "ambiguous", str(err), field=err.field)
    except StoreUnavailableError as err:
        why = _unwritable(err)
        _UNWRITABLE.note(why, error=str(err))
        return error_response(503, "unavailable", f"the order store cannot take writes right now: {why}; retry later")
    except web.HTTPRequestEntityTooLarge:  # aiohttp's client_max_size, which is api.max_body_bytes
        return web.json_response(too_large_body(request.client_max_size), status=413)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        slug = err.reason.lower().replace(" ", "_") if err.reason else "error"
        response = error_response(
            err.status, slug, err.text if err.text and not err.text.startswith(f"{err.status}:") else err.reason
        )
        for name in ("Allow", "WWW-Authenticate"):
            if name in err.headers:
                response.headers[name] = err.headers[name]
        return response
    except StoreError as err:
        log.error("store_error", error=str(err))
        return error_response(503, "unavailable", "the order store failed; retry later")
    except Exception:  # a bug: log it with the traceback, answer without one
        log.exception("request_failed", path=request.path, method=request.method)
        return error_response(500, "internal", "internal error; see the agent log")


async def read_json(request: web.Request) -> object:
    """The body as JSON, or a BadRequestError saying why not. 413 comes from aiohttp's client_max_size."""
    body = await read_body(request)
    try:
        return await read_order(body)
    except MalformedOrderError as err:
        raise BadRequestError(err.reason) from None
