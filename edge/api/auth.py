"""Who may call /api/: a bearer token and/or Standard Webhooks signatures; health, readiness and metrics stay open."""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping

import structlog
from aiohttp import web

from edge.api.errors import Handler, error_response
from edge.config import ApiSettings, signing_key

log = structlog.get_logger()

SIGNATURE_TOLERANCE_S = 300  # Standard Webhooks: ±5 minutes, checked both ways
_MAX_ID_LEN = 256  # bounds the replay memory per remembered id


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature over ``id.timestamp.body``: what a sender puts in webhook-signature."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Authenticator:
    """Checks each /api/ request; counts rejections by reason in ``rejected`` for the metrics.

    Seen webhook-ids are remembered in memory for the signature window: after a restart a replay of
    a request signed before it would pass, but the order id is the idempotency key, so it is a duplicate.
    """

    def __init__(self, settings: ApiSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._bearer = f"Bearer {settings.token.get()}".encode() if settings.token else None
        self._keys = [signing_key(s) for s in settings.signing_secrets]
        self._require_signature = settings.require_signature
        self._clock = clock
        self._seen: dict[str, float] = {}  # webhook-id -> when it may be forgotten (insertion = expiry order)
        self.rejected: collections.Counter[str] = collections.Counter()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            problem = self._check_token(request.headers)
            if problem is None and (self._require_signature or "webhook-signature" in request.headers):
                problem = self._check_signature(request.headers, await request.read())
            if problem is not None:
                reason, text = problem
                self.rejected[reason] += 1
                log.warning("api_request_rejected", reason=reason, path=request.path, remote=request.remote)
                response = error_response(401, "unauthorized", text)
                response.headers["WWW-Authenticate"] = 'Bearer realm="edge-agent"'
                return response
        return await handler(request)

    def _check_token(self, headers: Mapping[str, str]) -> tuple[str, str] | None:
        if self._bearer is None:
            return None
        given = headers.get("Authorization", "")
        if not given:
            return "missing_token", "missing Authorization: Bearer <token> header"
        # Constant-time: a wrong token must not leak how much of it was right. aiohttp hands non-UTF-8
        # header bytes over as surrogates; surrogateescape turns them back instead of raising.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._bearer):
            return "wrong_token", "wrong token"
        return None

    def _check_signature(self, headers: Mapping[str, str], body: bytes) -> tuple[str, str] | None:
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
        now = self._clock()
        if abs(now - int(stamp)) > SIGNATURE_TOLERANCE_S:
            return (
                "stale_signature",
                f"webhook-timestamp is more than {SIGNATURE_TOLERANCE_S // 60} minutes away from the agent's clock",
            )
        given = [s.encode() for s in signatures.split()]
        # Every key against every signature, no early exit: rotation sends one signature per key.
        matched = False
        for key in self._keys:
            expected = sign(key, msg_id, int(stamp), body).encode()
            for candidate in given:
                matched |= hmac.compare_digest(candidate, expected)
        if not matched:
            return "bad_signature", "no webhook-signature matches a configured signing secret"
        self._forget_expired(now)
        if msg_id in self._seen:
            return "replayed", f"webhook-id {msg_id[:64]!r} was already used"
        self._seen[msg_id] = now + 2 * SIGNATURE_TOLERANCE_S
        return None

    def _forget_expired(self, now: float) -> None:
        # Ids go in with non-decreasing expiry (clock drift aside), so the oldest are first.
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[oldest]
