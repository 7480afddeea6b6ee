"""HTTP client for the central API: timeouts, bearer auth, a request-rate ceiling, retries with jitter, Retry-After."""

from __future__ import annotations

import asyncio
import base64
import codecs
import itertools
import json
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import structlog

from edge.clock import RemoteClock
from edge.config import CentralSettings, shown_url
from edge.dns import lookup, unresolved
from edge.errors import CentralApiError
from edge.orders.model import int_or_infinite, pairs_keeping_twice
from edge.tls import clock_hint, verifying_context

log = structlog.get_logger()

# 5xx that say the same request will not work in a moment either (not implemented, a protocol or configuration
# fault, a captive portal's login); every other one is worth another try: the backend is busy or briefly broken, not
# telling us we are wrong. A 5xx this list does not know (Cloudflare's 520-527 while the backend restarts) is a 500
# (RFC 9110 15: an unknown status is the x00 of its class).
_NEVER_IN_A_MOMENT = frozenset({501, 505, 506, 508, 510, 511})
# Answered by a gateway or a backend that did not say it left the request alone (503, 429 do): the request may have
# reached central and still run there, as one that got no answer in time.
_NOT_TAKEN = frozenset({429, 503})
# The contract's limit on one events POST (docs/central-api.md); a bigger configured batch is sent in parts.
MAX_EVENTS_PER_POST = 500
# The contract's refusals that mean "this event, never" (422 with one of these as "error"); nothing else may reject.
PERMANENT_EVENT_ERRORS = frozenset({"invalid_event", "unknown_order", "idempotency_key_reused"})
# A request that got no answer in time may still be processed at central this long: past any gateway's own limit
# (nginx's proxy_read_timeout and an AWS load balancer's idle timeout are 60 s) twice over. A 409 to its keys later
# is central's refusal, not its work in progress.
_MAY_STILL_RUN_S = 120.0
# A 409's own word that central is still processing these keys (the simulated central's, Stripe's code): in progress
# also when this process does not know it sent them (restarted meanwhile).
_IN_PROGRESS_ERRORS = frozenset({"request_in_progress", "in_progress", "idempotency_key_in_use"})


class CentralUnreachableError(CentralApiError):
    """No HTTP answer at all: connection refused, reset, or timed out. The line may be down, unless ``reached``:
    central's host took the connection (then reset it, closed it, or never answered) or refused it itself, so the
    store's line works and central's service is the trouble."""

    reached = False


class CentralTimeoutError(CentralUnreachableError):
    """No (whole) answer within the timeouts: a slow backend or a dead line; other calls' answers tell which."""


class CentralSlowAnswerError(CentralTimeoutError):
    """Connected, but the whole answer did not arrive in time: too big for the line, or too slow to make. A smaller
    request may fit where the same one again will not."""


class CentralLaterError(CentralApiError):
    """429 or a 5xx that may pass: retried; ``retry_after_s`` is the answer's Retry-After, if it had one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CentralInProgressError(CentralLaterError):
    """409 to a request holding an idempotency key of an earlier one that got no answer in time, or whose body says so
    (_IN_PROGRESS_ERRORS): central is still processing that one (the IETF draft "The Idempotency-Key HTTP Header
    Field", section 2.7; Stripe answers so).
    Retried, each time after at least the time the earlier one was given to answer."""


class CentralBusyError(CentralLaterError):
    """429: the backend is alive and asks for patience (Retry-After); retried, and proof the line is up."""


class CentralGarbledError(CentralApiError):
    """A 200 that is not the contract's answer: not JSON (cut off on the way, or another program's page: a captive
    portal, a proxy's error page) or not its shape. Asked again like an answer cut off mid-body; a recovery run it
    still fails is tried again soon, not at the schedule."""


class CentralRejectedError(CentralApiError):
    """The backend answered but refused the request (a 4xx other than 429): retrying the same request will not help."""

    def __init__(self, message: str, status: int, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body  # the answer's text (first 500 characters): the backend's reason
        self.error = _error_code(body)  # the contract's {"error": code}, None when the answer is not the contract's

    @property
    def permanent_for_event(self) -> bool:
        """The contract's answer that the (single) event in the batch will never be taken: mark it rejected."""
        return self.status == 422 and self.error in PERMANENT_EVENT_ERRORS


def body_sizes(events: Sequence[dict[str, Any]]) -> list[int]:
    """The bytes of the events POST's body holding the first 1, 2, ... of ``events``, as ``post_events`` writes it
    (aiohttp's ``json=``: json.dumps, ASCII, ``{"events": [e1, e2]}``): what a gateway's body limit counts."""
    opening = len('{"events": []}') - 2  # the closing "]}" counted as the ", " every event but the last is given
    return list(itertools.accumulate((len(json.dumps(e)) + 2 for e in events), initial=opening))[1:]


def refused_setting(status: int) -> str | None:
    """The setting a person checks when central answers health but refuses the box's calls with ``status``: the box
    itself is refused, not one request (None for any other answer)."""
    return {401: "central.token", 403: "central.token", 404: "agent.store_id and central.url"}.get(status)


def _error_code(body: str) -> str | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), str) else None


class RateLimiter:
    """At most ``rate`` acquisitions per second, evenly spaced, first come first served."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._next - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = max(loop.time(), self._next) + self._interval


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Full jitter: anywhere between 0 and the exponential ceiling, so a fleet of stores spreads out."""
    return random.uniform(0, min(cap, base * 2**attempt))


def _read(text: str) -> Any:
    """An answer's JSON. What one order of a page may hold that no JSON reader agrees on (a key twice, an integer too
    long to read) is marked in that order, which its check refuses, and the rest of the page is read: the contract's
    "one bad order must not block every later run" (central-api.md)."""
    return json.loads(text, object_pairs_hook=pairs_keeping_twice, parse_int=int_or_infinite)


def retry_after_s(value: str | None, date: str | None = None) -> float | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable. A date is on the server's clock: the
    wait is measured against the answer's own ``date`` (its Date header), the box's clock only without one, so a
    clock off by an hour on either side does not turn a wait into none (or into an hour)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        now = time.time()
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _worth_retrying(status: int) -> bool:
    return status == 429 or (500 <= status <= 599 and status not in _NEVER_IN_A_MOMENT)


def _text(body: bytes, charset: str | None) -> str:
    """An answer's text however it came: a gateway's page in Latin-1 labelled UTF-8, or in a charset nobody knows,
    is read with its odd bytes replaced (the reason it names stays readable; JSON, UTF-8 by its RFC, is read as such),
    never an error that ended the caller, the link's monitor among them (fuzzdoors2 C1)."""
    try:
        encoding = codecs.lookup(charset or "utf-8").name
    except LookupError:
        encoding = "utf-8"
    if encoding == "utf-8":
        encoding = "utf-8-sig"  # a byte order mark in front, which some Windows stacks write (RFC 8259 8.1), dropped
    return body.decode(encoding, errors="replace")


@dataclass
class _Connection:
    """What one request learned of the connection it went out on."""

    reused: bool = False


class CentralClient:
    """One ClientSession for every call to the central API; every request waits for the shared rate limiter."""

    def __init__(self, settings: CentralSettings, store_id: str, *, central_time: RemoteClock | None = None) -> None:
        """``central_time`` hears the Date of every answer (central's clock, for the ages of orders)."""
        self._settings = settings
        self._central_time = central_time
        self._store_id = store_id
        self._base = settings.url.rstrip("/")
        self._shown = shown_url(self._base)
        self._limiter = RateLimiter(settings.rate_limit_rps)
        # Until when (the loop's clock) central asked for quiet (Retry-After on a 429 or 503, up to retry_max_s): no
        # call goes out before, whichever part of the agent makes it: a retry, the outbox's next pass, a page.
        self._quiet_until = 0.0
        # Idempotency keys of requests that got no answer in time -> until when (monotonic) central may still be
        # processing them (_MAY_STILL_RUN_S).
        self._unanswered: dict[str, float] = {}
        self._waiting_said = False  # central_still_processing logged, and no answer to events since
        self._session: aiohttp.ClientSession | None = None
        # The store network's way out, if it has one: every call goes through it, central's name resolved there.
        self._proxy = settings.proxy or None
        self._auth = {"Authorization": f"Bearer {settings.token.get()}"}
        login = base64.b64encode(f"{settings.proxy_user}:{settings.proxy_password.get()}".encode()).decode()
        self._proxy_login = {"Proxy-Authorization": f"Basic {login}"} if settings.proxy_user else {}
        # An HTTPS backend is verified against the box's CAs with the agent's own context, made in a thread at the
        # first call (it reads the CA bundle); aiohttp's own default contexts hold no CA (edge/__init__.py).
        self._tls: asyncio.Future[ssl.SSLContext] | None = None
        # Set by the link monitor: an answer proves the line is up (its status and what it said tell whether the box
        # was let in), a dead connection hints it is down.
        self.on_answer: Callable[[int, str], None] = lambda status, said: None
        self.on_unreachable: Callable[[str], None] = lambda detail: None

    async def start(self) -> None:
        s = self._settings
        self._session = aiohttp.ClientSession(
            # The token goes with each request, not as a session default: aiohttp copies session defaults into a
            # proxy's CONNECT, where an Authorization header would reach the proxy (as Proxy-Authorization).
            headers={"User-Agent": f"edge-agent/{self._store_id}"},
            # The same limits for every call, health probes included (docs/central-api.md, "Timeouts"): connect
            # within connect_timeout_s, the whole answer within read_timeout_s more, so a dripping body ends too.
            timeout=aiohttp.ClientTimeout(
                total=s.connect_timeout_s + s.read_timeout_s,
                sock_connect=s.connect_timeout_s,
                sock_read=s.read_timeout_s,
            ),
            trace_configs=[self._tracing()],
        )
        # aiohttp sends a GET whose connection was cut once more at once by itself (RFC 9112 9.3.1.1), below the rate
        # limiter: a struggling backend got each page and probe two or three times within milliseconds. The agent's
        # own retry takes its turn; aiohttp has no public switch, its own TestClient turns the retry off like this.
        self._session._retry_connection = False

    @staticmethod
    def _tracing() -> aiohttp.TraceConfig:
        """Tells each request's ``_Connection`` whether it went out on a kept-alive connection."""

        async def reused(session: object, context: SimpleNamespace, params: object) -> None:
            context.trace_request_ctx.reused = True

        config = aiohttp.TraceConfig()
        config.on_connection_reuseconn.append(reused)
        return config

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _heard_date(self, headers: Mapping[str, str], round_trip_s: float) -> None:
        """Central's time: the answer's Date, plus its Age when a cache in front of central kept it (RFC 9111 5.1)."""
        if self._central_time is None or "Date" not in headers:
            return
        try:
            dated = parsedate_to_datetime(headers["Date"]).timestamp()
            age = int(headers.get("Age", "0"))
        except (TypeError, ValueError):  # no date a server with a clock would send: nothing learned
            return
        self._central_time.heard(dated + max(age, 0), round_trip_s)

    async def _context(self) -> ssl.SSLContext:
        """The one verifying context of every call: made once, shared by calls that wait for it meanwhile (shielded,
        so one caller cancelled does not cancel it for the others)."""
        if self._tls is None:
            self._tls = asyncio.get_running_loop().run_in_executor(None, verifying_context, None)
        return await asyncio.shield(self._tls)

    @property
    def orders_path(self) -> str:
        return f"/v1/stores/{self._store_id}/orders"

    @property
    def events_path(self) -> str:
        return f"/v1/stores/{self._store_id}/events"

    async def health(self, *, look_up_first: bool = False) -> None:
        """One probe, no retries, the same timeouts as every call: the monitor decides how often to ask.
        ``look_up_first`` (a person's check): the name the box connects to is looked up before, within the call's
        whole time, so that a DNS server that does not answer is named as that (aiohttp looks it up inside the call,
        where it ends as "no answer (TimeoutError: )" while the resolver's thread holds the exit for its 10-30 s).
        Through central.proxy that name is the proxy's: central's is the proxy's to look up."""
        if look_up_first:
            await self._look_up("GET", "/v1/health")
        try:
            await self._send("GET", "/v1/health", tells_link=False)
        except _RetryableError as err:
            raise err.cause from None

    async def _look_up(self, method: str, path: str) -> None:
        target = urllib.parse.urlsplit(self._proxy or self._base)
        host, s = target.hostname or "", self._settings
        try:
            port = target.port or (443 if target.scheme == "https" else 80)
            await asyncio.to_thread(lookup, host, port, s.connect_timeout_s + s.read_timeout_s)
        except socket.gaierror as err:
            setting = " (central.proxy)" if self._proxy else ""
            detail = f"central API {method} {self._shown}{path}: {unresolved(err, host)}{setting}"
            raise CentralUnreachableError(detail) from None
        except ValueError:  # a port the URL cannot carry: the call itself says so, as it did
            pass

    async def orders_since(self, cursor: str, limit: int, *, retry_slow: bool = True) -> tuple[list[Any], str, bool]:
        """One page of this store's orders changed after ``cursor``: (orders, next_cursor, has_more).

        ``retry_slow=False``: an answer that does not arrive whole in time is not asked again at the same size, it
        raises CentralSlowAnswerError at once (the caller asks for a smaller page instead)."""
        params = {"since": cursor, "limit": str(limit)}
        body = await self.request("GET", self.orders_path, params=params, retry_slow=retry_slow)
        where = f"central API {self._shown}{self.orders_path}"
        if not isinstance(body, dict) or not isinstance(body.get("orders"), list):
            raise CentralGarbledError(f"{where}: answer is not {{orders: [...], next_cursor: str, has_more: bool}}")
        after = body.get("next_cursor")
        more = body.get("has_more")
        if more is None:
            # APIs that page "until the cursor comes back empty" leave has_more out: a page with orders and a new
            # cursor is then not the last; an empty page or no new cursor is (one request more than the contract's).
            # A full page under the cursor just sent is not: more may wait behind it (ties under a timestamp cursor),
            # and the run names the stuck cursor instead of ending as if it had listed them.
            orders = body["orders"]
            more = bool(orders) and isinstance(after, str) and after != "" and (after != cursor or len(orders) >= limit)
        elif not isinstance(more, bool):
            raise CentralGarbledError(f"{where}: has_more is {more!r}, not true or false")
        # A last page may say "no more" with a null cursor (a common API style): the next run asks from this one.
        after = cursor if not more and after in (None, "") else after
        if not isinstance(after, str):
            raise CentralGarbledError(f"{where}: next_cursor is {after!r}, not a string")
        return body["orders"], after, more

    async def post_events(self, events: list[dict[str, Any]], *, retry_slow: bool = True) -> None:
        """Status events with idempotency keys; returns only once the backend acknowledged the whole batch with the
        contract's one success answer, 200 {"accepted": n, "duplicates": m} where n + m is the number sent.
        ``retry_slow=False``: an answer too slow to arrive in time raises CentralSlowAnswerError at once (the caller
        sends fewer events)."""
        keys = [e["idempotency_key"] for e in events]
        answer = await self.request("POST", self.events_path, body={"events": events}, retry_slow=retry_slow, keys=keys)
        where = f"central API POST {self._shown}{self.events_path}"
        if not isinstance(answer, dict) or not {"accepted", "duplicates"} & answer.keys():
            # Neither count: a gateway's or a half-up backend's 200 ({"status": "error"}, {}), no answer of central's
            # about these events. Read as "0 taken" it set every order of such a spell aside, a mail each.
            raise CentralGarbledError(
                f"{where}: HTTP 200 but the answer holds neither accepted nor duplicates: {json.dumps(answer)[:200]}"
            )
        # A count left out is 0: protojson (grpc-gateway's default) omits zero fields; the sum still has to add up.
        counts = [answer.get(k, 0) for k in ("accepted", "duplicates")]
        numbers = [n for n in map(_count, counts) if n is not None]
        if len(numbers) == 2 and sum(numbers) < len(events):
            # Taken in part, the rest named in the body (a common API style the contract does not use): a refusal of
            # some of the batch's events, split like a 409 until the one refused is alone.
            raise CentralRejectedError(
                f"{where}: HTTP 200 but only {sum(numbers)} of {len(events)} events taken: {json.dumps(answer)[:200]}",
                200,
                json.dumps(answer)[:500],
            )
        if len(numbers) != 2 or sum(numbers) != len(events):
            raise CentralApiError(
                f"{where}: HTTP 200 but the answer does not acknowledge all"
                f" {len(events)} events (expected accepted + duplicates to add up): {json.dumps(answer)[:200]}"
            )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        retry_slow: bool = True,
        keys: Collection[str] = (),
    ) -> Any:
        """Send with retries: connection errors, timeouts, 429 and 5xx back off (Retry-After plus full jitter);
        ``retry_slow=False`` leaves an answer too slow to arrive whole to the caller (CentralSlowAnswerError).
        ``keys``: the idempotency keys the request carries; a 409 while an earlier request holding one of them may
        still be processed at central (it got no answer in time) is retried as CentralInProgressError."""
        s = self._settings
        attempt = 0
        while True:
            try:
                try:
                    answer = await self._send(method, path, params=params, body=body)
                    if keys:  # an answer to the events; a recovery page read meanwhile is none (its own spell)
                        self._waiting_said = False
                    return answer
                except CentralRejectedError as refused:
                    if refused.status != 409 or not keys:
                        raise
                    # In progress: its body says so, or it says nothing of its own (the IETF draft's example has no
                    # code) while a request with these keys may still run; a 409 naming its refusal is one.
                    said = refused.error
                    if said not in _IN_PROGRESS_ERRORS and (said is not None or not self._may_still_run(keys)):
                        raise
                    # Central has not finished the request we gave up waiting for: later, not refused.
                    later = CentralInProgressError(
                        f"{refused}: central is still processing an earlier request with these keys", s.read_timeout_s
                    )
                    raise _RetryableError(later) from None
            except _RetryableError as err:
                if err.may_still_run:
                    self._went_unanswered(keys)
                attempt += 1
                if attempt >= s.max_attempts or (not retry_slow and isinstance(err.cause, CentralSlowAnswerError)):
                    raise err.cause from None
                delay = self.retry_delay(attempt - 1)
                if err.retry_after is not None:
                    # Retry-After is the floor (up to retry_max_s: a longer wait would park the caller, which tries
                    # again at its next cycle); the growing full jitter on top spreads a fleet that was told the
                    # same number, so it does not come back in one burst and meet the same 429 again.
                    delay += min(err.retry_after, s.retry_max_s)
                if not isinstance(err.cause, CentralInProgressError):
                    log.warning(
                        "central_retry",
                        method=method,
                        path=path,
                        attempt=attempt,
                        error=str(err.cause),
                        retry_in_s=round(delay, 2),
                    )
                elif not self._waiting_said:  # central at work, nothing wrong: said once until an answer comes
                    self._waiting_said = True
                    log.info("central_still_processing", method=method, path=path, keys=len(keys), error=str(err.cause))
                await asyncio.sleep(delay)

    def retry_delay(self, attempt: int) -> float:
        """The pause before the ``attempt``-th retry (0: the first) of a call, Retry-After aside."""
        return backoff_delay(attempt, base=self._settings.retry_base_s, cap=self._settings.retry_max_s)

    def _went_unanswered(self, keys: Collection[str]) -> None:
        now = time.monotonic()
        self._unanswered = {k: until for k, until in self._unanswered.items() if until > now}
        self._unanswered.update(dict.fromkeys(keys, now + _MAY_STILL_RUN_S))

    def _may_still_run(self, keys: Collection[str]) -> bool:
        """Whether central may still be processing a request of ours that held one of these keys."""
        now = time.monotonic()
        return any(self._unanswered.get(k, 0.0) > now for k in keys)

    async def _exchange(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None,
        body: Any,
        tls: ssl.SSLContext | None,
        on: _Connection,
    ) -> tuple[int, str, str, float | None]:
        """One request and its whole answer: (status, Location, body text, Retry-After in seconds). Each request sent
        takes its turn at the rate limit, a retry too."""
        assert self._session is not None, "CentralClient.start() first"
        loop = asyncio.get_running_loop()
        if (quiet := self._quiet_until - loop.time()) > 0:
            await asyncio.sleep(quiet)
        await self._limiter.acquire()
        sent = time.monotonic()
        # Redirects are not followed: a redirected POST loses its body and becomes a GET (as browsers do), so the
        # events it carried would never arrive; the answer below names the address central.url should have.
        async with self._session.request(
            method,
            url,
            params=params,
            json=body,
            ssl=tls or True,
            allow_redirects=False,
            # The proxy's login goes to the proxy only: on a tunnel's CONNECT, never inside it to central.
            headers=self._auth if tls else self._auth | self._proxy_login,
            proxy=self._proxy,
            proxy_headers=self._proxy_login if tls else None,
            trace_request_ctx=on,
        ) as response:
            status = response.status
            if status == 407 and self._proxy:  # the proxy's answer to a plain-http request, not central's
                raise self._proxy_refused(method, url, status, "Proxy Authentication Required")
            self._heard_date(response.headers, time.monotonic() - sent)
            text = _text(await response.read(), response.charset)
            retry_after = retry_after_s(response.headers.get("Retry-After"), response.headers.get("Date"))
            if retry_after is not None and _worth_retrying(status):
                until = loop.time() + min(retry_after, self._settings.retry_max_s)
                self._quiet_until = max(self._quiet_until, until)
            return status, response.headers.get("Location", ""), text, retry_after

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        tells_link: bool = True,
    ) -> Any:
        """``tells_link``: an answer tells the link monitor the line is up (on_answer); its own probe decides itself
        whether the answer is one the agent can use."""
        url = f"{self._base}{path}"
        shown = shown_url(url)  # what messages show: never a key in its query
        tls = await self._context() if url.startswith("https:") else None
        try:
            while True:
                on = _Connection()
                try:
                    status, moved_to, text, retry_after = await self._exchange(method, url, params, body, tls, on)
                    break
                except aiohttp.ServerDisconnectedError:
                    # Closed without an answer on a kept-alive connection: most often the backend closed it for
                    # idling as this request went out (Node's keepAliveTimeout is 5 s), and the others kept beside it
                    # idled as long. Every call here may be sent twice (events carry idempotency keys): it goes out
                    # again at once, until it meets a connection made for it; a new one closing counts as a failure.
                    if not on.reused:
                        raise
        except aiohttp.ClientHttpProxyError as err:  # the proxy refused the CONNECT: central was never asked
            raise self._proxy_refused(method, url, err.status, err.message) from None
        except (aiohttp.ClientError, TimeoutError) as err:
            if isinstance(err, aiohttp.ClientProxyConnectionError):
                detail = f"central API {method} {shown}: no answer from the proxy {self._proxy} (central.proxy): {err}"
            elif hint := unresolved(err, urllib.parse.urlsplit(self._settings.url).hostname or ""):
                detail = f"central API {method} {shown}: {hint}"
            elif isinstance(err, aiohttp.ClientPayloadError):
                detail = f"central API {method} {shown}: the answer was cut short or does not decode ({err})"
            else:
                via = f" through the proxy {self._proxy}" if self._proxy else ""
                detail = f"central API {method} {shown}: no answer{via} ({type(err).__name__}: {err}){clock_hint(err)}"
            self.on_unreachable(detail)
            # aiohttp's timeouts subclass TimeoutError; a refused or reset connection is not a slow backend, and one
            # that never connected says nothing about the size of the answer.
            error: CentralUnreachableError = CentralUnreachableError(detail)
            # Connected and sent, then cut off or given up on: central may have the request, and still be at it.
            sent = not isinstance(err, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
            refused = isinstance(err, aiohttp.ClientConnectorError) and isinstance(err.os_error, ConnectionRefusedError)
            if isinstance(err, aiohttp.ConnectionTimeoutError):
                error = CentralTimeoutError(detail)
            elif isinstance(err, TimeoutError | aiohttp.ClientPayloadError):
                # Too slow to arrive whole, or cut short on the way (a gateway's buffer or read timeout): a smaller
                # answer may arrive where this one did not.
                error = CentralSlowAnswerError(detail)
            # Not through a proxy: there, what reached or refused was the proxy, not central.
            error.reached = (sent or refused) and not self._proxy
            raise _RetryableError(error, may_still_run=sent) from None
        message = f"central API {method} {shown}: HTTP {status}: {text[:200]}"
        if setting := refused_setting(status):
            # The box itself refused (its token, its store id): the setting a person checks goes with it everywhere
            # the error is told (the log, the recovery's text and mail, the status, the doctor).
            message += f": check {setting}"
        if (status < 300 or 400 <= status < 500) and tells_link:  # a 5xx or a redirect: not one we can work with
            self.on_answer(status, message)
        if status == 200:  # the contract's only success answer: a 202, 204 or 207 acknowledges nothing
            try:
                # A big page of orders parses in a thread so the spoolers keep printing meanwhile.
                return await asyncio.to_thread(_read, text) if len(text) > 65536 else _read(text or "null")
            except ValueError:
                raise _RetryableError(
                    CentralGarbledError(f"central API {method} {shown}: answer is not JSON")
                ) from None
            except RecursionError:
                raise _RetryableError(
                    CentralGarbledError(f"central API {method} {shown}: answer nested too deep to read")
                ) from None
        if 300 <= status < 400:
            raise CentralApiError(
                f"central API {method} {shown}: HTTP {status}, moved to {moved_to or '(no Location)'}: "
                "set central.url to the address it names (redirects are not followed)"
            )
        if status < 300:
            raise CentralApiError(f"{message} (the contract answers 200)")
        if status == 429:
            raise _RetryableError(CentralBusyError(message, retry_after))
        if _worth_retrying(status):
            raise _RetryableError(CentralLaterError(message, retry_after), may_still_run=status not in _NOT_TAKEN)
        raise CentralRejectedError(message, status, text[:500]) if 400 <= status < 500 else CentralApiError(message)

    def _proxy_refused(self, method: str, url: str, status: int, reason: str) -> Exception:
        """The proxy's no, said as the setting to check: a login refused is not retried (it stays wrong until a
        person changes it); any other refusal (central unreachable from there) is retried like a 5xx."""
        where = f"central API {method} {shown_url(url)}: the proxy {self._proxy}"
        if status == 407:
            error = CentralUnreachableError(
                f"{where} refused the box's login (407): check central.proxy_user and"
                " EDGE_CENTRAL_PROXY_PASSWORD in the secrets file"
            )
            self.on_unreachable(str(error))
            return error
        detail = f"{where} answered {status} {reason}: it cannot reach central, or does not let the box through"
        self.on_unreachable(detail)
        return _RetryableError(CentralUnreachableError(detail))


def _count(value: Any) -> int | None:
    """A count as backends write one: a number, a whole float (a backend that counts in floats: 3.0), or digits in a
    string (protojson writes int64 fields so: "3"). None for anything else (true is no count)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _RetryableError(Exception):
    def __init__(self, cause: CentralApiError, *, may_still_run: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.may_still_run = may_still_run  # the request may have reached central and still run there
        self.retry_after = cause.retry_after_s if isinstance(cause, CentralLaterError) else None
