"""Signed requests remembered by webhook-id: a sender's retry of a request that succeeded is answered, never refused.

Standard Webhooks (spec/standard-webhooks.md, "Webhook metadata"): the webhook-id "remains the same no matter how many
times a webhook that has failed is retried" and "is often used as an idempotency key"; every attempt carries a fresh
timestamp (so a fresh signature); and a delivery counts as done only when answered 2xx ("Delivery success and
failure"). So an id is remembered only after a 2xx, together with a fingerprint of what a retry repeats (method, path,
body). The same id with another fingerprint is a replay of the id and is refused; the same fingerprint is a retry:
- a retry-safe route (reads, and order intake, where the order id is the idempotency key) simply runs again, so an
  order's retry is answered 200 duplicate;
- any other route (reprint, release, recovery trigger…) is not run twice: the retry gets the first answer again,
  marked ``Idempotent-Replayed: true`` (Stripe's header for the same idea). Those answers are kept in the database for
  a day, because a sender's retry schedule spans days and the agent may restart in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from edge.api.errors import Handler
from edge.clock import Clock
from edge.errors import StoreError
from edge.store.webhooks import WebhookAnswer, WebhookStore

log = structlog.get_logger()

ANSWER_KEEP_S = 24 * 3600.0  # as long as Stripe keeps idempotency keys; covers a sender's first day of retries
MAX_REMEMBERED = 100_000  # bounds memory under a burst of signed orders (each is kept for the signature window)
_SWEEP_EVERY_S = 1.0

_RETRY_SAFE: set[Handler] = set()


def retry_safe(handler: Handler) -> Handler:
    """Marks a route whose second run is harmless and says so itself (intake answers a known order as duplicate)."""
    _RETRY_SAFE.add(handler)
    return handler


def fingerprint(request: web.Request, body: bytes) -> str:
    """What a retry of the same request repeats; the timestamp and signature change on every attempt."""
    head = f"{request.method} {request.rel_url.raw_path_qs}\n".encode()
    return hashlib.sha256(head + body).hexdigest()


@dataclasses.dataclass(frozen=True)
class Remembered:
    fingerprint: str
    answer: WebhookAnswer | None  # None: a retry-safe request, run again on a retry
    forget_at: float  # monotonic


@dataclasses.dataclass
class _Hold:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0


class RequestMemory:
    """Ids of signed requests answered 2xx; retry-safe ones for ``keep_s``, stored answers for ANSWER_KEEP_S."""

    def __init__(self, store: WebhookStore | None, *, clock: Clock, keep_s: float) -> None:
        self._store = store
        self._clock = clock
        self._keep_s = keep_s
        self._seen: dict[str, Remembered] = {}
        self._holds: dict[str, _Hold] = {}
        self._loaded = store is None
        self._next_sweep = 0.0

    @contextlib.asynccontextmanager
    async def hold(self, msg_id: str) -> AsyncIterator[None]:
        """One request per id at a time: concurrent identical retries wait for the first one's answer."""
        hold = self._holds.setdefault(msg_id, _Hold())
        hold.users += 1
        try:
            async with hold.lock:
                yield
        finally:
            hold.users -= 1
            if not hold.users:
                del self._holds[msg_id]

    async def recall(self, msg_id: str) -> Remembered | None:
        if not self._loaded:
            await self._load()
        self._sweep()
        return self._seen.get(msg_id)

    async def remember(self, msg_id: str, fp: str, response: web.StreamResponse, *, keep_answer: bool) -> None:
        mono = self._clock.mono()
        answer = None
        if keep_answer and isinstance(response, web.Response) and isinstance(response.body, bytes):
            answer = WebhookAnswer(
                webhook_id=msg_id,
                fingerprint=fp,
                status=response.status,
                content_type=response.headers.get("Content-Type", "application/octet-stream"),
                body=response.body,
                expires_at=self._clock.wall() + ANSWER_KEEP_S,
            )
        self._seen[msg_id] = Remembered(fp, answer, mono + (ANSWER_KEEP_S if answer else self._keep_s))
        if answer is not None and self._store is not None:
            try:
                await self._store.put(answer, now=self._clock.wall())
            except StoreError as err:  # the action is done; only a retry after a restart would not know it
                log.warning("webhook_answer_not_stored", webhook_id=msg_id[:64], error=str(err))
        while len(self._seen) > MAX_REMEMBERED:  # oldest first: dicts keep insertion order
            del self._seen[next(iter(self._seen))]

    async def _load(self) -> None:
        assert self._store is not None
        wall, mono = self._clock.wall(), self._clock.mono()
        try:
            answers = await self._store.unexpired(wall)
        except StoreError as err:
            log.warning("webhook_answers_not_loaded", error=str(err))
            return  # tried again on the next signed request
        for answer in answers:
            self._seen.setdefault(
                answer.webhook_id, Remembered(answer.fingerprint, answer, mono + answer.expires_at - wall)
            )
        self._loaded = True

    def _sweep(self) -> None:
        now = self._clock.mono()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY_S
        for msg_id in [k for k, v in self._seen.items() if v.forget_at <= now]:
            del self._seen[msg_id]


def replayed_response(answer: WebhookAnswer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=answer.body,
        headers={"Content-Type": answer.content_type, "Idempotent-Replayed": "true"},
    )


def is_retry_safe(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") or request.match_info.handler in _RETRY_SAFE


def is_order_push(request: web.Request) -> bool:
    """An order, its change or its cancel as a sender pushes them: the routes marked retry_safe, whose order id and
    revision are the idempotency key (a person's reprint is not one)."""
    return request.match_info.handler in _RETRY_SAFE
