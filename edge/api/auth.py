"""Who may call /api/: a bearer token and/or Standard Webhooks signatures; health, readiness and metrics stay open."""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from aiohttp import web
from multidict import CIMultiDictProxy

from edge.api.errors import BadRequestError, Handler, error_response, read_body
from edge.api.retries import RequestMemory, fingerprint, is_order_push, is_retry_safe, replayed_response
from edge.api.signing import sign
from edge.clock import SYSTEM_CLOCK, Clock, RemoteClock
from edge.config import ApiSettings, signing_key
from edge.events import EventBus, PushAuthChanged
from edge.log import Summarised
from edge.store.webhooks import WebhookStore

log = structlog.get_logger()

SIGNATURE_TOLERANCE_S = 300  # Standard Webhooks: ±5 minutes, checked both ways
# Refusals that every push of the sender meets until a person acts (a replay is one request gone wrong).
_SENDER_DIFFERS = frozenset({"missing_token", "wrong_token", "missing_signature", "bad_signature", "stale_signature"})
_MAX_ID_LEN = 256  # bounds the memory per remembered id
# Wrong tokens an address may send before its requests wait: a person's typos. Then 1 s, doubled after each wrong
# token, at most 60 s: a till mistyped is fixed in a minute, a 4-digit token takes days instead of 1.5 s.
_FREE_GUESSES = 5
_FIRST_WAIT_S = 1.0
_LONGEST_WAIT_S = 60.0
_FORGET_S = 900.0  # an address with no wrong token for this long starts afresh
_MAX_ADDRESSES = 1024  # addresses remembered at once, the longest quiet forgotten first
# Distinct wrong tokens remembered per address in a spell, as short keyed hashes (never the token): the same one sent
# again (a status page refreshing with a refused token, a till retrying with its old one) is no new guess.
_KEPT_WRONG = 8
_DIGEST_BYTES = 8


@dataclass(frozen=True)
class _Guesses:
    wrong: int  # distinct wrong tokens in this spell
    last: float  # monotonic time of the last one
    until: float  # its token is not looked at before this
    seen: tuple[bytes, ...]  # keyed hashes of its latest distinct wrong tokens, at most _KEPT_WRONG


class GuessBrake:
    """Distinct wrong tokens counted per client address: after a few, that address's requests are refused without
    their token being looked at, for a while that grows with each new wrong one; others' are not (the till on its own
    address, the box's own `edge` commands on loopback). A wrong token sent again is answered 401 but no guess: a
    page refreshing with it every 5 s kept a PC that was also the till braked with nobody typing (the verify81
    probe, F1)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._key = os.urandom(16)  # the hashes kept say nothing of a token outside this process
        self._by_address: collections.OrderedDict[str, _Guesses] = collections.OrderedDict()  # longest quiet first

    def wait_s(self, address: str) -> float:
        """How long ``address`` still waits before its token is looked at; 0 when it need not."""
        guesses = self._by_address.get(address)
        return 0.0 if guesses is None else max(0.0, guesses.until - self._clock())

    def wrong(self, address: str, token: bytes) -> int | None:
        """Notes a wrong ``token`` from ``address``; how many distinct ones its spell has had (``_FREE_GUESSES``: its
        waits begin), None for one it sent already in this spell (nothing changes)."""
        now = self._clock()
        digest = hmac.new(self._key, token, hashlib.sha256).digest()[:_DIGEST_BYTES]
        before = self._by_address.get(address)
        fresh = before is None or now - before.last >= _FORGET_S
        if before is not None and not fresh and digest in before.seen:
            return None
        self._by_address.pop(address, None)
        wrong = 1 if before is None or fresh else before.wrong + 1
        seen = (digest,) if before is None or fresh else (*before.seen[-(_KEPT_WRONG - 1) :], digest)
        wait = min(_LONGEST_WAIT_S, _FIRST_WAIT_S * 2 ** min(wrong - _FREE_GUESSES, 8)) if wrong >= _FREE_GUESSES else 0
        self._by_address[address] = _Guesses(wrong, now, now + wait, seen)
        while self._by_address:  # bounded whatever comes: the quiet ones go first
            oldest = next(iter(self._by_address.values()))
            if len(self._by_address) <= _MAX_ADDRESSES and now - oldest.last < _FORGET_S:
                break
            self._by_address.popitem(last=False)
        return wrong

    def right(self, address: str) -> None:
        """A right token: the spell is over (a person fixed the typo)."""
        self._by_address.pop(address, None)


class Authenticator:
    """Checks each /api/ request; counts rejections by reason in ``rejected`` for the metrics.

    A signed request's webhook-id is remembered only once it was answered 2xx (edge/api/retries.py): a sender's
    retry of it is answered, another request under the same id is refused as a replay.
    """

    def __init__(
        self,
        settings: ApiSettings,
        *,
        store: WebhookStore | None = None,
        clock: Clock = SYSTEM_CLOCK,
        central: RemoteClock | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self._bearer = settings.token.get().encode() if settings.token else None
        self._keys = [signing_key(s) for s in settings.signing_secrets]
        self._require_signature = settings.require_signature
        self._clock = clock
        # Central signs its pushes on its own clock; once its answers have dated it, a box clock that is off (no
        # battery, NTP blocked by the shop's firewall) must not refuse every push as stale.
        self._central = central
        # An id must be known at least as long as a request carrying it could pass the timestamp check.
        self.memory = RequestMemory(store, clock=clock, keep_s=2 * SIGNATURE_TOLERANCE_S)
        self.rejected: collections.Counter[str] = collections.Counter()  # all of them, for /metrics
        self._rejections = Summarised("api_request_rejected", clock=clock.mono)
        self._brake = GuessBrake(clock.mono)
        self._bus = bus
        self._pushes_refused: bool | None = None  # what the bus was last told; None: nothing since the start

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        remote = request.remote or ""
        if self._bearer is not None and (wait_s := self._brake.wait_s(remote)):
            return self._too_many(remote, wait_s)  # its token is not looked at: else guessing goes on
        problem = self._check_token(request.headers)
        if self._bearer is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            self._brake_guesses(remote, problem, given)
        # Required signatures prove that an order came from central. A person's request (the status page, whose
        # browser must not hold the secret; an `edge` command) is let in by the token where there is one: before,
        # the status page could release nothing behind a proxy set up as the docs advise (the docs probe, D2).
        required = self._require_signature and (self._bearer is None or is_order_push(request))
        if problem is None and (required or "webhook-signature" in request.headers):
            # What the head alone can refuse is refused before the body is asked for (a sender waiting for 100).
            problem = self._check_signature_head(request.headers)
            body = await read_body(request) if problem is None else b""
            problem = problem or self._check_signature(request.headers, body)
            if problem is None:
                self._let_in(request)
                return await self._once(request, request.headers["webhook-id"], body, handler)
        if problem is not None:
            return self._refuse(request, *problem)
        self._let_in(request)
        return await handler(request)

    async def _once(self, request: web.Request, msg_id: str, body: bytes, handler: Handler) -> web.StreamResponse:
        """Runs a signed request unless its id already succeeded: a retry is answered, another request refused."""
        fp = fingerprint(request, body)
        async with self.memory.hold(msg_id):
            known = await self.memory.recall(msg_id)
            if known is not None and known.fingerprint != fp:
                return self._refuse(
                    request, "replayed", f"webhook-id {msg_id[:64]!r} was already used for another request"
                )
            if known is not None and known.answer is not None:
                log.info(
                    "webhook_retry_answered", webhook_id=msg_id[:64], path=request.path, status=known.answer.status
                )
                return replayed_response(known.answer)
            response = await handler(request)
            if known is None and 200 <= response.status < 300:
                await self.memory.remember(msg_id, fp, response, keep_answer=not is_retry_safe(request))
            return response

    def _refuse(self, request: web.Request, reason: str, text: str) -> web.Response:
        self.rejected[reason] += 1
        self._rejections.note(reason, reason=reason, path=request.path, remote=request.remote)
        if not self._pushes_refused and reason in _SENDER_DIFFERS and is_order_push(request):
            self._tell_pushes(refused=True, reason=reason, remote=request.remote or "")
        response = error_response(401, "unauthorized", text)
        response.headers["WWW-Authenticate"] = 'Bearer realm="edge-agent"'
        return response

    def _brake_guesses(self, remote: str, problem: tuple[str, str] | None, given: bytes) -> None:
        if problem is None:
            self._brake.right(remote)
        elif problem[0] == "wrong_token" and self._brake.wrong(remote, given) == _FREE_GUESSES:
            log.warning(  # once a spell: its 429s are counted in the metrics, not logged
                "api_token_guesses_braked",
                remote=remote,
                wrong_tokens=_FREE_GUESSES,
                hint="a client sends wrong API tokens: a till or browser set up wrong, or someone guessing",
            )

    def _too_many(self, remote: str, wait_s: float) -> web.Response:
        reason = "too_many_wrong_tokens"
        self.rejected[reason] += 1
        wait = math.ceil(wait_s)
        response = error_response(
            429,
            reason,
            f"too many wrong API tokens from {remote}: none from it is looked at for {wait} s more; check api.token",
        )
        response.headers["Retry-After"] = str(wait)
        return response

    def _let_in(self, request: web.Request) -> None:
        if self._pushes_refused is not False and is_order_push(request):
            self._tell_pushes(refused=False)

    def _tell_pushes(self, *, refused: bool, reason: str = "", remote: str = "") -> None:
        """Orders stop coming in without anyone in the store knowing: the alerts hear of it (and of its end)."""
        self._pushes_refused = refused
        if self._bus is not None:
            self._bus.publish(PushAuthChanged(refused=refused, reason=reason, remote=remote))

    def _check_token(self, headers: CIMultiDictProxy[str]) -> tuple[str, str] | None:
        if self._bearer is None:
            return None
        if len(headers.getall("Authorization", ())) > 1:  # which one counts is no one's guess: the first won before
            raise BadRequestError("the Authorization header is given more than once; send it once")
        given = headers.get("Authorization", "")
        if not given:
            return "missing_token", "missing Authorization: Bearer <token> header"
        # The scheme is case-insensitive and may be followed by several spaces (RFC 9110 11.1, 11.4).
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer":
            return "wrong_token", "wrong token"
        # Constant-time: a wrong token must not leak how much of it was right. aiohttp hands non-UTF-8
        # header bytes over as surrogates; surrogateescape turns them back instead of raising.
        if not hmac.compare_digest(token.lstrip(" ").encode("utf-8", "surrogateescape"), self._bearer):
            return "wrong_token", "wrong token"
        return None

    def _check_signature_head(self, headers: Mapping[str, str]) -> tuple[str, str] | None:
        """The signature headers: there, well-formed, and timed within the tolerance."""
        msg_id, stamp, signatures = (
            headers.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        )
        if not (msg_id and stamp and signatures):
            return "missing_signature", "missing webhook-id, webhook-timestamp or webhook-signature header"
        if len(msg_id) > _MAX_ID_LEN or not msg_id.isascii() or not signatures.isascii():
            return (
                "bad_signature",
                f"webhook-id and webhook-signature must be ASCII, the id at most {_MAX_ID_LEN} characters",
            )
        if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
            return "bad_signature", "webhook-timestamp must be whole seconds since 1970"
        central_now = self._central.wall() if self._central is not None else None
        now, whose = (self._clock.wall(), "the agent's") if central_now is None else (central_now, "central's")
        if abs(now - int(stamp)) > SIGNATURE_TOLERANCE_S:
            return (
                "stale_signature",
                f"webhook-timestamp is more than {SIGNATURE_TOLERANCE_S // 60} minutes away from {whose} clock",
            )
        return None

    def _check_signature(self, headers: Mapping[str, str], body: bytes) -> tuple[str, str] | None:
        """Whether a signature matches ``body`` under a configured secret; the head passed _check_signature_head."""
        msg_id, stamp, signatures = headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
        given = [s.encode() for s in signatures.split()]
        # Every key against every signature, no early exit: rotation sends one signature per key.
        matched = False
        for key in self._keys:
            expected = sign(key, msg_id, int(stamp), body).encode()
            for candidate in given:
                matched |= hmac.compare_digest(candidate, expected)
        if not matched:
            return "bad_signature", "no webhook-signature matches a configured signing secret"
        return None
