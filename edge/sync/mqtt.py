"""The store's link to central over an MQTT broker: orders in (acknowledged only after commit), events and presence out.

Imported only when ``[mqtt] url`` is set (edge/app.py): an agent without MQTT never loads paho-mqtt.

Threads: paho's network loop runs in its own thread (``loop_start``); each callback hands its facts to the asyncio loop
with ``call_soon_threadsafe`` and returns. Everything the loop asks of paho (PUBACK, PUBLISH) goes through one worker
thread, in order, because paho's calls take locks and write to a socket pair, which the loop must not wait on.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import random
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.clock import SYSTEM_CLOCK, Clock, wait_set
from edge.config import MqttSettings, Settings, shown_url
from edge.dns import unresolved
from edge.errors import (
    InvalidOrderError,
    OrderConflictError,
    StoreError,
    WrongStateError,
    intake_error_body,
    too_large_body,
)
from edge.events import (
    EventBus,
    JobDead,
    JobPrinted,
    MqttConnectionChanged,
    MqttDelivery,
    MqttEventsRefused,
    MqttOrderRejected,
    MqttSessionLost,
    OrdersRecovered,
    OrderStored,
    RecoveryCompleted,
    ScanRecorded,
)
from edge.log import SaidOnce
from edge.orders.intake import OrderIntake
from edge.orders.model import MalformedOrderError, order_id_in, read_order, storable_text
from edge.states import InsertOutcome, MqttState, OrderSource, RunTrigger
from edge.store.db import Database
from edge.store.mqtt import MqttStore
from edge.store.outbox import REJECTED_KEY
from edge.sync.tunnel import Proxy, ProxyRefusedError
from edge.tls import clock_hint, verifying_context

log = structlog.get_logger()

QOS = 1
# Orders the broker may have in flight to us at once (MQTT 5 Receive Maximum), and the most the agent takes at once
# whatever a broker sends (see _take_next): enough to fill a group commit, few enough that a store that cannot write
# tries only this many again and again.
RECEIVE_MAXIMUM = 64
# The largest packet we take, as a multiple of api.max_body_bytes (MQTT 5 Maximum Packet Size). A bigger one the broker
# discards unsent (MQTT 5.0, 3.1.2.11.4): paho reads a packet whole into memory, and the broker's own limit is 256 MB
# (a payload that size took the agent to 476 MB). Up to this, an order over the body limit still comes and is reported
# with the same body as a POST's 413; beyond, only the broker's log tells of it.
PACKET_LIMIT_FACTOR = 4
_PUBLISH_BATCH = 100  # rejected messages per commit of their marks
# QoS 1 messages paho has on the line at once (its default, set so): more wait in its queue, their PUBACK timers
# running. The outbox goes a window at a time, so each waits for its PUBACK from about when it was sent: a batch of 100
# on a line with a 2 s round trip timed out at its end, was sent whole again and again, and nothing after it went.
_IN_FLIGHT = 20
_PUBACK_TIMEOUT_S = 10.0
_IDLE_S = 5.0  # look at the outbox this often even without a wake-up
_STORE_RETRY_MAX_S = 5.0  # an order that could not be stored is tried again this often, at most
_STOP_WAIT_S = 5.0  # orders being stored at stop get this long to commit and be acknowledged
_LOOP_STOP_S = 2.0  # paho's thread gets this long to end at stop (it checks every second)
# Kept rejects a message sent again is judged anew for: the agent's own failure, and another config's topic.
_JUDGED_AGAIN = frozenset({"internal_error", "other_topic"})
_LOOP_RETRY_S = 1.0  # paho's loop, after an exception ended it, goes on after this pause (below _LOOP_STOP_S)
# CONNACK reasons a retry will not fix: a person must change the login, the client id or the broker's ACL.
_REFUSALS = {0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C}
# MQTT 5's "Session taken over": another client connected under this client id, so this store's id is in use twice.
_TAKEN_OVER = 0x8E
# A broker that says nothing (Mosquitto 2.0 closes the old connection without that reason) shows it as connections it
# closes this soon after accepting them, this many times in a row, while it keeps listening.
_SHORT_LIVED_S, _SHORT_LIVED_TIMES = 5.0, 3
_KEEPALIVE_TIMEOUT = 0x8D  # paho's reason when nothing came back within keepalive_s (a CONNACK or a PINGRESP)
# An order that recovery brings is one the subscribed link should have had when the link was subscribed from this long
# before central created it until this long after (the backend publishes an order as it takes it, a broker delivers
# in milliseconds; a minute also covers a store busy storing and an order's created_at a little off central's clock,
# against which its age is taken). Only then is a broker that grants the subscription and delivers nothing on it (a
# read ACL missing: Mosquitto checks it at delivery) the likely cause; otherwise the order was published in a gap the
# session covers or was not yet due. Even then it is only a suspicion, judged at a later run at least this long after
# the store: created_at says nothing of when the backend publishes (one that stamps it at checkout start lists and
# publishes at payment, minutes on, and its listing may show the order a moment before the publish goes out).
_DELIVERY_GRACE_S = 60.0
# Runs that list orders the link should have had: not the catch-up at a start or a link's return, which lists what
# was published while the link was not there.
_LIVE_RUNS = (RunTrigger.SCHEDULE, RunTrigger.MANUAL)


@dataclasses.dataclass(frozen=True, slots=True)
class _Arrival:
    """A message as paho handed it over, with the connection (generation) it came on."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    generation: int
    dup: bool  # the broker's DUP flag: sent before on a connection that ended before our PUBACK (MQTT 3.1.1 3.3.1.1)


class PahoClient(paho.Client):
    """paho's client, keeping why the last connection attempt failed (paho only tells on_connect_fail that it did), and
    dialling through the store's proxy when there is one."""

    last_error: BaseException | None = None
    proxy: Proxy | None = None
    loop_failed: Callable[[BaseException], None] | None = None  # told of an exception out of paho's network loop

    def _create_socket_connection(self) -> socket.socket:
        """paho's dial (paho-mqtt 2.x), through a CONNECT tunnel when the store network's only way out is its proxy."""
        if self.proxy is None:
            return super()._create_socket_connection()
        return self.proxy.open(self._host, self._port, self._connect_timeout)

    def loop_forever(self, timeout: float = 1.0, retry_first_connection: bool = False) -> MQTTErrorCode:
        """paho's, kept going: an exception out of it (a failing system call, a bug in a callback) ended paho's
        network thread, and nothing connected again until a restart while orders waited at the broker (the dual82
        probe). Told, then the loop goes on after a pause; it reconnects where the connection is gone."""
        while True:
            try:
                return super().loop_forever(timeout, retry_first_connection)
            except Exception as err:
                if self._thread_terminate:  # stopping: loop_stop waits for this thread's end
                    raise
                if self.loop_failed is not None:
                    self.loop_failed(err)
                threading.Event().wait(_LOOP_RETRY_S)  # not time.sleep: it may be what failed
                retry_first_connection = True

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as err:
            self.last_error = err
            raise

    def listening(self) -> bool:
        """Whether a broker answers a connect now: a CONNECT of its own, dialled as paho's (through the proxy and TLS
        if there are), and any CONNACK, accepting or refusing. Its session is a fresh one under an id the broker
        assigns, so no session is touched. A bare dial said yes for a relay in front of the broker (a cloud broker's
        load balancer, stunnel, socat) with no broker behind it. Blocking."""
        try:
            with contextlib.closing(self._create_socket()) as sock:
                assert isinstance(sock, socket.socket)  # TCP, or TLS over it: the link speaks no websockets
                sock.settimeout(self._connect_timeout)
                sock.sendall(_connect_packet(self._username, self._password))
                answered = sock.recv(1) == _CONNACK
                with contextlib.suppress(OSError):  # a refusing broker has closed the connection already
                    sock.sendall(_DISCONNECT)
                return answered
        except (OSError, ValueError):  # ValueError: paho's, for a certificate that does not match the host
            return False

    def loop_stop(self) -> MQTTErrorCode:
        """paho's, without its race: the network thread, ending after a disconnect, clears the client's handle to it
        as its last step, and loop_stop() can see the handle at its check and None at its join (AttributeError).
        The thread is done then, which is all a stop waits for."""
        try:
            return super().loop_stop()
        except AttributeError:
            return MQTTErrorCode.MQTT_ERR_INVAL  # paho's answer when there is no thread to stop


# MQTT 5.0 (OASIS, 2019): CONNACK's fixed header (3.2.1); a DISCONNECT, normal disconnection (3.14).
_CONNACK, _DISCONNECT = b"\x20", b"\xe0\x00"


def _connect_packet(username: bytes | None, password: bytes | None) -> bytes:
    """An MQTT 5 CONNECT (MQTT 5.0, 3.1): clean start, keep alive 10 s, no properties, an empty client id (the broker
    assigns one: 3.1.3.1), and the login if there is one."""

    def text(data: bytes) -> bytes:  # a length-prefixed string (1.5.4)
        return len(data).to_bytes(2, "big") + data

    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = text(b"MQTT") + bytes([5, flags]) + (10).to_bytes(2, "big") + b"\x00" + text(b"")
    body += b"".join(text(part) for part in (username, password) if part is not None)
    length = bytearray()  # a variable byte integer (1.5.5)
    left = len(body)
    while True:
        left, digit = divmod(left, 128)
        length.append(digit | (0x80 if left else 0))
        if not left:
            return b"\x10" + bytes(length) + body


def describe(err: BaseException, *, tls: bool = False, host: str = "") -> str:
    if isinstance(err, ProxyRefusedError):
        if err.status == 407:
            return f"{err}: it wants a login (central.proxy_user, EDGE_CENTRAL_PROXY_PASSWORD)"
        return f"{err} (many proxies let tunnels through only to port 443: ask for the broker's port)"
    if tls and isinstance(err, ConnectionResetError | BrokenPipeError | ssl.SSLEOFError):
        # TLS 1.3 tells a refused client certificate only after the handshake, by closing the connection.
        return f"the broker closed the TLS connection ({err}): it may want a client certificate (mqtt.cert_file)"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {err.verify_message}{clock_hint(err)}"
    if isinstance(err, ssl.SSLError):
        return f"TLS failed: {err.reason or err}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (no broker listening)"
    if host and (hint := unresolved(err, host)):
        return hint
    return f"{type(err).__name__}: {err}"


def build_client(cfg: MqttSettings, client_id: str, *, manual_ack: bool, proxy: Proxy | None = None) -> PahoClient:
    """A paho client with the login and TLS of ``cfg``, dialling through ``proxy`` if given; blocking (the TLS context
    reads the system's CA files)."""
    c = PahoClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    c.proxy = proxy
    c.max_inflight_messages_set(_IN_FLIGHT)
    if cfg.username:
        c.username_pw_set(cfg.username, cfg.password.get() or None)
    if cfg.tls:
        ctx = verifying_context(cfg.ca_file, "mqtt.ca_file")
        if cfg.cert_file and cfg.key_file:
            ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
        c.tls_set_context(ctx)
    return c


def store_proxy(settings: Settings) -> Proxy | None:
    """The store network's proxy (central.proxy, with its login), which the broker is reached through too."""
    c = settings.central
    return Proxy(c.proxy, c.proxy_user, c.proxy_password.get()) if c.proxy else None


def probe(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """Log in to the broker once, as edge doctor does: None if it accepts us, else why not. Blocking. Under its own
    client id with a session that ends with it: the agent's own id would throw the running agent off its session."""
    cfg = settings.mqtt
    answered = threading.Event()
    problem: list[str | None] = [f"no answer from the broker within {timeout_s:g} s"]

    def on_connect(_c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        problem[0] = f"broker refused the connection: {reason}" if reason.is_failure else None
        answered.set()

    client = build_client(cfg, f"{settings.mqtt_client_id}-doctor", manual_ack=False, proxy=store_proxy(settings))
    client.on_connect = on_connect
    try:
        client.connect(cfg.host, cfg.port, keepalive=10, clean_start=True)
    except (OSError, ValueError) as err:
        return describe(err, tls=cfg.tls, host=cfg.host)
    client.loop_start()
    try:
        answered.wait(timeout_s)
        return problem[0]
    finally:
        client.disconnect()
        client.loop_stop()


class PublishRefusedError(ConnectionError):
    """The broker answered a PUBLISH with a refusal (a PUBACK reason >= 0x80): the message was not taken."""


class MqttLink:
    """Subscribes to ``<prefix>/orders`` (QoS 1, persistent session), hands each payload to the same intake as HTTP
    push and acknowledges it only after the commit; publishes the status outbox and rejected messages on
    ``<prefix>/events`` and a retained ``online``/``offline`` on ``<prefix>/status``."""

    def __init__(
        self,
        settings: Settings,
        *,
        intake: OrderIntake,
        db: Database,
        bus: EventBus,
        catch_up: Callable[[RunTrigger], Awaitable[object]] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._cfg = settings.mqtt
        self._broker = shown_url(settings.mqtt.url)  # as messages show it
        self._proxy = store_proxy(settings)
        self._max_payload = settings.api.max_body_bytes  # the same limit as a POST body
        self.client_id = settings.mqtt_client_id
        self.prefix = settings.mqtt_prefix
        self.topics = {name: f"{self.prefix}/{name}" for name in ("orders", "events", "status")}
        self._intake = intake
        self._store = MqttStore(db)
        self._bus = bus
        self._catch_up = catch_up  # recovery (pull), when the broker lost our session
        self._clock = clock
        self.state = MqttState.CONNECTING
        self.detail = ""
        self._told: tuple[bool, str, bool] | None = None  # (connected, detail, refused) as the bus last heard it
        self._failure: tuple[bool, str] | None = None  # (refused, why) of the failure logged last, until one holds
        self._since = clock.mono()  # the last change of state; shown as a wall time (since)
        self._generation = 0  # +1 per connection: an ack from an older one must not reach a reused packet id
        self._attempt = 0
        self._socket_error = ""  # paho's last logged socket error (its thread only)
        self._up_at: float | None = None  # monotonic time the broker accepted the connection (paho's thread only)
        self._short_lived = 0  # connections in a row the broker closed within _SHORT_LIVED_S (paho's thread only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: PahoClient | None = None
        self._calls = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-calls")
        self._handlers: set[asyncio.Task[None]] = set()
        self._acks: dict[int, asyncio.Future[str | None]] = {}  # our PUBLISHes waiting for their PUBACK, by packet id
        # PUBACKs that came before we had registered the packet id, with the broker's refusal if it said no
        self._early: dict[int, str | None] = {}
        self.events_refused = ""  # the broker's no to our events (its ACL); "" while it takes them
        self._subscribed: float | None = None  # monotonic time the broker granted this connection's subscription
        self._delivered: float | None = None  # monotonic time the last message came on the orders topic
        # Why orders come by recovery though the link is subscribed ("" while it delivers, or nothing tells otherwise),
        # kept in the database while it stands (see start); what the bus last heard of it (None: nothing yet in this
        # run, so a first delivery ends an earlier run's alarm)
        self.not_delivering = ""
        self._delivery_told: bool | None = None
        # Orders a live run stored that this link should have had, by id: (that run, monotonic time of the store).
        # Any message on the orders topic clears them; a later run's end judges those still here (see _judge). Not kept
        # over a restart: that is a drop of the link, which clears them too (_set_state); the alarm comes a round later.
        self._suspects: dict[str, tuple[int, float]] = {}
        self._loop_failure_told = False  # an exception out of paho's loop logged, until the link connects again
        # Every order in the window meets a full card at each try: one line (the storage alert tells the manager)
        self._not_stored = SaidOnce("mqtt_order_not_stored", acked=False, note="the broker keeps it; tried again")
        # This connection's orders in the order they arrived, by packet id: (QoS, handled). PUBACKs leave in that
        # order (MQTT 5.0 section 4.6, [MQTT-4.6.0-2]), whichever order the commits finish in.
        self._arrived: dict[int, tuple[int, bool]] = {}
        # Messages past the RECEIVE_MAXIMUM being taken at once, as they came (see _take_next); how many are being taken
        self._waiting: collections.deque[_Arrival] = collections.deque()
        self._taking = 0
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._stopping = False
        # What became of each message: the intake's outcomes (stored, duplicate, updated, cancelled, stale, ...),
        # rejected (acked, kept for a person), other_topic (rejected: an earlier config's topic), store_failed (not
        # acked, tried again), failed (not even kept as rejected: acked, logged) and events published.
        counted = [*InsertOutcome, "rejected", "other_topic", "store_failed", "failed", "events_published"]
        self.counts = dict.fromkeys(counted, 0)
        self._unsubscribe = [
            bus.subscribe(lambda _: self._wake.set(), t) for t in (OrderStored, JobPrinted, JobDead, ScanRecorded)
        ]
        self._unsubscribe.append(bus.subscribe(self._recovered, OrdersRecovered))
        self._unsubscribe.append(bus.subscribe(self._judge, RecoveryCompleted))
        self._schedule_s = settings.central.schedule_interval_s

    # ---- life cycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Returns at once: the connection is made (and remade) in paho's thread; a broker that is down or refuses
        us never holds up the agent."""
        self._loop = asyncio.get_running_loop()
        # An earlier run's alarm stands until a message comes on the orders topic: its reason is still the reason.
        self.not_delivering = await self._store.not_delivering()
        if self.not_delivering:
            self._delivery_told = False
        self._client = await asyncio.to_thread(self._make_client)  # TLS context: reads the system's CA files
        await asyncio.to_thread(self._connect)
        self._publisher = asyncio.create_task(self._publish_loop(), name="mqtt-publisher")
        log.info("mqtt_started", broker=self._broker, client_id=self.client_id, prefix=self.prefix)

    def _make_client(self) -> PahoClient:
        # PUBACK only after the commit (ack())
        c = build_client(self._cfg, self.client_id, manual_ack=True, proxy=self._proxy)
        c.will_set(self.topics["status"], b"offline", qos=QOS, retain=True)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_pre_connect = self._on_pre_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_log = self._on_log
        c.loop_failed = self._on_loop_failed
        self._next_delay(c)
        return c

    def _connect(self) -> None:
        assert self._client is not None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._cfg.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        props.MaximumPacketSize = PACKET_LIMIT_FACTOR * self._max_payload
        # clean_start False, always: the broker keeps our subscription and the orders published while we were away.
        self._client.connect_async(
            self._cfg.host, self._cfg.port, keepalive=self._cfg.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    async def stop(self) -> None:
        """Orders being stored finish and are acknowledged (within a few seconds); then ``offline`` is published and
        the connection closed. An order not acknowledged by then is sent again by the broker at the next start."""
        self._stopping = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self._publisher is not None:
            self._wake.set()  # the loop sees _stopping, even if a library it awaits swallowed the cancel
            self._publisher.cancel()
            await asyncio.gather(self._publisher, return_exceptions=True)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=_STOP_WAIT_S)
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._client is not None:
            if self.state == MqttState.CONNECTED:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await self._publish(self.topics["status"], b"offline", retain=True)
            await self._call(self._client.disconnect)
            # loop_stop joins paho's thread, which may be in a connect's name lookup that a DNS server without
            # internet does not answer for 10-30 s: not worth holding the stop for (the thread is a daemon).
            stopping = asyncio.ensure_future(asyncio.to_thread(self._client.loop_stop))
            if not (await asyncio.wait([stopping], timeout=_LOOP_STOP_S))[0]:
                note = "paho's thread is still connecting (a name lookup the DNS server does not answer?)"
                log.warning("mqtt_stop_not_waiting", broker=self._broker, seconds=_LOOP_STOP_S, note=note)
        for fut in self._acks.values():
            fut.cancel()
        self._calls.shutdown(wait=False)
        log.info("mqtt_stopped")

    def _run(self, work: Awaitable[None]) -> None:
        """In the background, and finished (or cancelled) by stop."""
        task = asyncio.ensure_future(work)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    # ---- paho's thread: hand everything to the loop -----------------------------------------------------------

    def _to_loop(self, fn: Callable[..., object], *args: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the agent is gone
                self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: paho.Client, _u: object, flags: Any, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            refused = reason.value in _REFUSALS
            self._to_loop(self._refused_or_failed, f"broker refused the connection: {reason}", refused)
            self._next_delay(client)
            return
        self._up_at = time.monotonic()
        # Subscribing again is harmless with a kept session and needed when the broker lost it. No retained message:
        # the broker would hand one (a publisher's mistake: an order is news, not state) to every subscription made,
        # so it would be taken again at every connect; an order never got live comes with recovery.
        options = SubscribeOptions(qos=QOS, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
        client.subscribe(self.topics["orders"], options=options)
        self._to_loop(self._connected, bool(flags.session_present))

    def _on_subscribe(self, _c: paho.Client, _u: object, _mid: int, reasons: list[ReasonCode], _p: object) -> None:
        if any(r.is_failure for r in reasons):
            detail = f"subscription to {self.topics['orders']} refused: {reasons[0]}"
            self._to_loop(self._refused_or_failed, detail, True)
        else:  # granted is no proof of delivery: Mosquitto 2.0 grants a topic its ACL denies (see _recovered)
            self._to_loop(self._granted)

    def _on_pre_connect(self, _c: paho.Client, _u: object) -> None:
        self._socket_error = ""  # what paho logged after the last connection ended is not why the next one does

    def _on_connect_fail(self, client: paho.Client, _u: object) -> None:
        self._short_lived = 0  # nothing listened: the broker was down, which another box's takeover never makes it
        err = getattr(client, "last_error", None)
        refused = isinstance(err, ssl.SSLError)  # a certificate will not change by itself
        detail = describe(err, tls=self._cfg.tls, host=self._cfg.host) if err else "connection failed"
        self._to_loop(self._refused_or_failed, detail, refused)
        self._next_delay(client)

    def _on_loop_failed(self, err: BaseException) -> None:
        self._to_loop(self._loop_failed, err)

    def _loop_failed(self, err: BaseException) -> None:
        """Once until the link connects again: a failure that repeats would fill the log every second."""
        if not self._loop_failure_told:
            self._loop_failure_told = True
            log.error(
                "mqtt_network_loop_failed", broker=self._broker, error=f"{type(err).__name__}: {err}", exc_info=err
            )

    def _on_log(self, _c: paho.Client, _u: object, level: int, message: str) -> None:
        if level == paho.MQTT_LOG_ERR:  # paho tells a socket's failure only here (e.g. a TLS alert after the handshake)
            self._socket_error = message

    def _on_disconnect(
        self, client: paho.Client, _u: object, flags: paho.DisconnectFlags, reason: ReasonCode, _p: object
    ) -> None:
        if not self._stopping:
            why, self._socket_error = self._socket_error, ""
            up_at, self._up_at = self._up_at, None
            told = flags.is_disconnect_packet_from_server
            # Another box taking the session shows as a broker closing us in good order soon after accepting us, saying
            # nothing, and still listening; a broker going away (a restart, a crash) says why, breaks the connection
            # or has stopped listening by the time its close reaches us.
            self._short_lived = (
                self._short_lived + 1
                if up_at is not None
                and time.monotonic() - up_at < _SHORT_LIVED_S
                and not told
                and not why
                and self._client is not None
                and self._client.listening()
                else 0
            )
            if reason.value == _TAKEN_OVER or self._short_lived >= _SHORT_LIVED_TIMES:
                # Taking the session back at once would hand the store's orders to each box in turn: ask again only
                # after the longest backoff, and say who is likely to blame.
                self._attempt = 30
                self._to_loop(self._refused_or_failed, self._taken_over(reason.value == _TAKEN_OVER), True)
            elif "ALERT" in why:  # the broker's TLS refused our certificate (or its absence): retrying will not help
                self._to_loop(self._refused_or_failed, f"TLS refused by the broker: {why} (mqtt.cert_file?)", True)
            elif up_at is None and not told and reason.value == _KEEPALIVE_TIMEOUT:
                # paho tells an unanswered CONNECT here, not in on_connect_fail: a failed attempt, logged once
                detail = (
                    f"the broker accepted the connection but did not answer CONNECT within {self._cfg.keepalive_s} s "
                    "(a hung broker, or a port that is not MQTT)"
                )
                self._to_loop(self._refused_or_failed, detail, False)
            else:
                self._to_loop(self._disconnected, self._lost(reason, told=told, why=why))
        self._next_delay(client)

    def _lost(self, reason: ReasonCode, *, told: bool, why: str) -> str:
        """Why the connection ended, in words (its state, disconnected, is said apart: /ready prefixes it)."""
        if told:
            return f"the broker ended the connection: {reason}"
        if why:
            return f"connection lost: {why}"
        if reason.value == _KEEPALIVE_TIMEOUT:
            return f"no answer from the broker within {self._cfg.keepalive_s} s (keepalive_s)"
        return "the broker closed the connection"

    def _taken_over(self, said: bool) -> str:
        who = (
            f"another client with client id {self.client_id} (a second box set up with the same store_id or "
            "mqtt.client_id: a copied SD card?)"
        )
        if said:
            return f"the broker gave this store's session to {who}"
        # No count in it: the same words at each retry are one log line and one alarm, not one per retry.
        return (
            f"the broker closed the connection within {_SHORT_LIVED_S:g} s of accepting it, {_SHORT_LIVED_TIMES} times "
            f"in a row or more: {who}, the broker refusing this client, or the network dropping it"
        )

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        self._to_loop(self._received, msg.mid, msg.qos, msg.topic, bytes(msg.payload), bool(msg.dup))

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        # A PUBACK can say no (MQTT 5 reason >= 0x80: "Not authorized", the broker's ACL): not an acknowledgement.
        self._to_loop(self._published, mid, str(reason) if reason.is_failure else None)

    def _next_delay(self, client: paho.Client) -> None:
        """Capped exponential backoff with jitter for paho's next reconnect: a fleet that lost its broker does not
        come back in one wave."""
        ceiling = min(self._cfg.reconnect_max_s, 0.5 * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        delay = max(0.1, random.uniform(ceiling / 2, ceiling))
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]  # paho takes seconds

    # ---- the loop: connection state ---------------------------------------------------------------------------

    @property
    def since(self) -> float:
        """When the state last changed, as the wall clock tells it now (a step of NTP since moves it too)."""
        return self._clock.wall_at(self._since)

    def _set_state(self, state: MqttState, detail: str, *, tell: bool = True) -> None:
        if (state, detail) != (self.state, self.detail):
            self._since = self._clock.mono()
        if state != MqttState.CONNECTED:
            self._subscribed = None  # the next connection's SUBACK starts it again
            # Subscribed throughout, or no judging: what was published meanwhile comes with the session or the catch-up
            self._suspects.clear()
        self.state, self.detail = state, detail
        if tell:
            self._tell()

    def _tell(self) -> None:
        """The state to the bus (alerts, metrics) when it differs from what the bus last heard."""
        said = (self.state == MqttState.CONNECTED, self.detail, self.state == MqttState.REFUSED)
        if said != self._told:
            self._told = said
            if said[0]:
                self._failure = None  # a connection that holds: the next failure is news again
            self._bus.publish(MqttConnectionChanged(connected=said[0], detail=said[1], refused=said[2]))

    def _connected(self, session_present: bool) -> None:
        self._generation += 1
        self._loop_failure_told = False
        self._forget_arrivals()
        self._attempt = 0
        # After a refusal (another box with this client id, most often) the session is ours for a moment: that box
        # takes it back within _SHORT_LIVED_S. Only a connection that lasts is told (logged, the alarm ended).
        on_trial = self.state == MqttState.REFUSED
        (log.debug if on_trial else log.info)(
            "mqtt_connected", broker=self._broker, client_id=self.client_id, session_present=session_present
        )
        self._set_state(MqttState.CONNECTED, "", tell=not on_trial)
        if on_trial and self._loop is not None:
            self._loop.call_later(_SHORT_LIVED_S, self._lasted, self._generation)
        self._wake.set()
        self._run(self._announce(session_present, on_trial=on_trial))

    async def _announce(self, session_present: bool, *, on_trial: bool = False) -> None:
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await self._publish(self.topics["status"], b"online", retain=True)
        await self._session_news(session_present, on_trial=on_trial)
        # Recovery pulls what the broker did not keep for us: at every reconnect (a session lost, or kept by a broker
        # that crashed and came back from its last save, Mosquitto's every autosave_interval, without the orders
        # queued since: session present cannot tell), and at a run's first session when it is new. That first session
        # is part of start-up: it shares (or starts) the run central's first answer also asks for, under one name.
        if self._catch_up is not None and (self._generation > 1 or not session_present):
            await self._catch_up(RunTrigger.LINK_BACK if self._generation > 1 else RunTrigger.STARTUP)

    async def _session_news(self, session_present: bool, *, on_trial: bool = False) -> None:
        """A new session (session present false) on a box a broker held one for before: the broker lost it (restarted
        without persistence, expired it, or another broker), and what central published meanwhile was never queued
        for us. Recovery fetches it; without a [central] link nothing can, and the manager is told. A box's first
        session is no news; nor one a second box with this client id keeps taking (``on_trial``): its alarm,
        mqtt_refused, says what to do."""
        try:
            held = await self._store.session_held()
            if not held:
                await self._store.note_session()
        except StoreError:  # a full card: judged by this run alone
            held = self._generation > 1
        if session_present:
            return
        if not held and self._generation == 1:
            log.info("mqtt_session_new", note="the first session of this store on this broker")
        elif self._catch_up is not None or on_trial:
            note = "a second box takes it" if on_trial else "orders central published meanwhile are fetched by recovery"
            log.warning("mqtt_session_lost", note=note)
        else:  # told once the connection lasts: a second box taking the session is mqtt_refused's, not this
            asyncio.get_running_loop().call_later(_SHORT_LIVED_S, self._session_lost, self._generation)

    def _session_lost(self, generation: int) -> None:
        if generation == self._generation and self.state == MqttState.CONNECTED:
            log.error(
                "mqtt_session_lost",
                broker=self._broker,
                note="orders central published meanwhile were never queued for this store, and no recovery can fetch"
                " them: no [central] link is set up",
            )
            self._bus.publish(MqttSessionLost())

    def _lasted(self, generation: int) -> None:
        if generation == self._generation and self.state == MqttState.CONNECTED:
            log.info("mqtt_connected", broker=self._broker, client_id=self.client_id, after_refusal=True)
            self._tell()

    def _granted(self) -> None:
        if self.state == MqttState.CONNECTED and self._subscribed is None:
            self._subscribed = self._clock.mono()

    def _recovered(self, event: OrdersRecovered) -> None:
        """A recovery run stored orders new to the box. Those central created while this link was subscribed, at
        least _DELIVERY_GRACE_S after the subscription and before the store, and after the last message the link got,
        the broker should have delivered. Not judged now: the backend may still publish them (see _judge)."""
        if event.trigger not in _LIVE_RUNS or self._subscribed is None or self.state != MqttState.CONNECTED:
            return
        now = self._clock.mono()
        subscribed_s = now - self._subscribed
        delivered_s = now - self._delivered if self._delivered is not None else math.inf
        missed = [
            order_id
            for order_id, age in event.ages_s
            if _DELIVERY_GRACE_S <= age <= subscribed_s - _DELIVERY_GRACE_S and age < delivered_s
        ]
        if missed and not self.not_delivering:
            log.info("mqtt_orders_only_by_recovery", run_id=event.run_id, orders=missed[:5], missed=len(missed))
            for order_id in missed:
                self._suspects.setdefault(order_id, (event.run_id, now))

    def _judge(self, event: RecoveryCompleted) -> None:
        """A later run ended, at least _DELIVERY_GRACE_S after an earlier one stored orders the link should have had,
        and nothing came on the orders topic since (not even those orders, as duplicates): the broker grants the
        subscription and delivers nothing (its ACL does not let this user read the topic), or the backend does not
        publish there. Said once until a message comes again."""
        now = self._clock.mono()
        missed = [
            order_id
            for order_id, (run_id, stored) in self._suspects.items()
            if run_id != event.run_id and now - stored >= _DELIVERY_GRACE_S
        ]
        if not missed or self.not_delivering or self.state != MqttState.CONNECTED:
            return
        self._suspects.clear()
        topic = self.topics["orders"]
        late = (
            f"up to {self._schedule_s:g} s late (central.schedule_interval_s)"
            if self._schedule_s
            else "only when a recovery run is started (central.schedule_interval_s = 0)"
        )
        detail = (
            f"orders came only by recovery across two runs, nothing over MQTT, though the link was subscribed to"
            f" {topic} all the while: the broker delivers nothing on it. Its ACL must let user"
            f" {self._cfg.username or '(none)'} read {topic} (a granted subscription proves nothing: Mosquitto checks"
            f" read access only when it delivers), and the backend must publish there; meanwhile orders come by"
            f" recovery, {late}"
        )
        log.error("mqtt_not_delivering", topic=topic, run_id=event.run_id, orders=missed[:5], missed=len(missed))
        self._delivery(False, detail)

    def _delivery(self, delivering: bool, detail: str) -> None:
        """The bus hears when the link stops or starts delivering again (the first delivery of a run, too: an earlier
        run's alarm may stand)."""
        if detail != self.not_delivering:  # not at each order: only when the reason comes or goes
            self._run(self._keep_delivery(detail))
        self.not_delivering = detail
        if self._delivery_told is not delivering:
            if delivering and self._delivery_told is False:
                log.info("mqtt_delivering", topic=self.topics["orders"])
            self._delivery_told = delivering
            self._bus.publish(MqttDelivery(delivering=delivering, detail=detail))

    async def _keep_delivery(self, detail: str) -> None:
        try:
            await self._store.set_not_delivering(detail)
        except StoreError as err:  # a full card: this run says it right all the same; a restart may say it as it was
            log.warning("mqtt_delivery_not_kept", error=str(err), not_delivering=bool(detail))

    def _refused_or_failed(self, detail: str, refused: bool) -> None:
        if self._failure != (refused, detail):
            # Once per new reason, not once per retry: the log and the alert say it, the backoff keeps trying.
            (log.error if refused else log.warning)("mqtt_connect_failed", broker=self._broker, error=detail)
        self._failure = (refused, detail)
        self._set_state(MqttState.REFUSED if refused else MqttState.DISCONNECTED, detail)

    def _disconnected(self, detail: str) -> None:
        if self.state == MqttState.CONNECTED:
            log.warning("mqtt_disconnected", broker=self._broker, detail=detail)
        if self.state != MqttState.REFUSED:
            self._set_state(MqttState.DISCONNECTED, detail)
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(ConnectionError(detail))
        self._acks.clear()
        self._early.clear()
        self._forget_arrivals()

    # ---- the loop: orders in ----------------------------------------------------------------------------------

    def _received(self, mid: int, qos: int, topic: str, payload: bytes, dup: bool) -> None:
        if self._stopping:  # left unacknowledged: the broker sends it again at the next start (see stop)
            return
        if topic == self.topics["orders"]:  # the broker lets us read it: suspected orders were only published late
            self._delivered = self._clock.mono()
            self._suspects.clear()
            self._delivery(True, "")
        self._arrived[mid] = (qos, False)
        self._waiting.append(_Arrival(mid, qos, topic, payload, self._generation, dup))
        self._take_next()

    def _take_next(self) -> None:
        """Starts waiting messages, oldest first, while fewer than RECEIVE_MAXIMUM are being taken. A broker may send
        past the window we asked for (Mosquitto 2.0.11 sends a window more for each PUBACK when it resumes a session:
        985 of a 1,000-order backlog at once): the rest wait here as they came, not all parsed and stored at once, nor
        all retrying on a full card."""
        while self._waiting and self._taking < RECEIVE_MAXIMUM and not self._stopping:
            self._taking += 1
            self._run(self._handle(self._waiting.popleft()))

    def _forget_arrivals(self) -> None:
        """A new or lost connection: the broker sends again what this one has not acknowledged (packet ids start
        over), so what waits from it is dropped; messages being taken finish but are not acknowledged."""
        self._arrived.clear()
        self._waiting.clear()

    async def _handle(self, msg: _Arrival) -> None:
        """Store, then acknowledge; then the next waiting message gets the slot."""
        try:
            if await self._stored(msg) and msg.generation == self._generation:
                await self._ack_in_order(msg.mid, msg.qos)
        finally:
            self._taking -= 1
            self._take_next()

    async def _stored(self, msg: _Arrival) -> bool:
        """True once taken and committed (or failed on a bug: logged), to be acknowledged. A store that cannot write
        gets the order again (from memory) until it can; the PUBACK waits, so a crash meanwhile leaves the order with
        the broker, which sends it again. False once the connection it came on is gone: the broker sends it again."""
        delay = 0.1
        while True:
            try:
                outcome = await self._take(msg.topic, msg.payload, dup=msg.dup)
            except StoreError as err:
                self.counts["store_failed"] += 1
                self._not_stored.failed(str(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, _STORE_RETRY_MAX_S)
                if msg.generation != self._generation or self._stopping:
                    return False
                continue
            except Exception:  # not even kept as rejected (a bug): acknowledged all the same, or every later order
                # would wait behind it for good (acknowledgements go in arrival order); the log has it
                log.exception("mqtt_order_lost", mid=msg.mid, topic=msg.topic, size=len(msg.payload))
                self.counts["failed"] += 1
                return True
            self._not_stored.passed()
            self.counts[outcome] += 1
            if outcome == "duplicate":  # a redelivery (no PUBACK reached the broker) or the backend sent it again
                log.info("mqtt_order_duplicate", mid=msg.mid, topic=msg.topic)
            return True

    async def _ack_in_order(self, mid: int, qos: int) -> None:
        """Mark this message handled and acknowledge every handled one at the head of the arrival order. The calls
        go to paho through one thread, in the order they are made here."""
        self._arrived[mid] = (qos, True)
        ready = []
        for head, (head_qos, handled) in list(self._arrived.items()):
            if not handled:
                break
            del self._arrived[head]
            ready.append((head, head_qos))
        if ready and self.state == MqttState.CONNECTED and self._client is not None:
            client = self._client
            await self._call(lambda: [client.ack(m, q) for m, q in ready])

    async def _take(self, topic: str, payload: bytes, *, dup: bool) -> str:
        """The intake's outcome (stored, duplicate, updated, cancelled, stale), rejected or other_topic, once
        committed."""
        order_id: str | None = None
        if topic != self.topics["orders"]:
            await self._other_topic(topic, payload, dup=dup)
            return "other_topic"
        try:
            if len(payload) > self._max_payload:  # the same limit and the same body as a POST's 413
                # Kept: what a person needs to know whose it is, not megabytes on the SD card each time it is sent; the
                # report names the order when the part kept shows its id (central's only word that it never printed).
                kept = payload[: self._max_payload]
                await self._reject(topic, kept, order_id_in(kept), too_large_body(self._max_payload), dup=dup)
                return "rejected"
            # Only what the broker sends again is looked up: every other message would read through the kept rejects.
            if dup and await self._judged_before(topic, payload):
                return "rejected"
            order = await read_order(payload)
            if isinstance(order, dict) and isinstance(order.get("id"), str):
                order_id = order["id"][:200]
            result = await self._intake.accept(order, source=OrderSource.MQTT)
        except (MalformedOrderError, InvalidOrderError, OrderConflictError, WrongStateError) as err:
            await self._reject(topic, payload, order_id, intake_error_body(err), dup=dup)
            return "rejected"
        except StoreError:
            raise  # not the message's fault: taken again from memory until the store can write
        except Exception as err:  # a bug: left unacked, the broker would send it for ever and hold an in-flight slot
            log.exception("mqtt_order_failed", order_id=order_id, topic=topic)
            error = {"error": "internal_error", "reason": f"the agent failed on this message: {type(err).__name__}"}
            await self._reject(topic, payload[: self._max_payload], order_id, error, dup=dup)
            return "rejected"
        return str(result.outcome)

    async def _judged_before(self, topic: str, payload: bytes) -> bool:
        """Whether this message was refused and kept before (sent again by the broker after a crash before
        its PUBACK): answered from that record. Taken again, the intake would warn, alert and count a second
        refusal of the one message (the dual82 probe, F1). Not one the agent failed on (a fixed agent may take it), nor
        one kept as another config's (other_topic): set back, this config reads that topic (the verify82b probe, F1)."""
        kept = await self._store.kept_reject(topic, payload)
        if kept is None or kept.error.get("error") in _JUDGED_AGAIN:
            return False
        log.info("mqtt_order_rejected_again", reject_id=kept.id, order_id=kept.order_id, error=kept.error["error"])
        # The intake's alarm of a conflict too: a crash between the reject's commit and the alert rules' fold lost it
        await self._intake.refused_again(payload, kept.error, source=OrderSource.MQTT)
        self._rejected(kept.id, kept.order_id, kept.error, again=True)
        return True

    async def _other_topic(self, topic: str, payload: bytes, *, dup: bool) -> None:
        """A message on a topic this config does not subscribe to: the broker kept an earlier config's subscription in
        the session (mqtt.topic_prefix changed, same client id). Not this store's order as configured: kept as a
        rejected message a person sees (and the alert), not printed, and the old subscription dropped."""
        reason = (
            f"came on {topic}, not on this config's orders topic {self.topics['orders']}: a subscription of an earlier"
            " config the broker kept (mqtt.topic_prefix changed); not taken"
        )
        error = {"error": "other_topic", "reason": reason}
        await self._reject(topic, payload[: self._max_payload], None, error, dup=dup)
        if self.state == MqttState.CONNECTED and self._client is not None:
            client = self._client
            await self._call(client.unsubscribe, topic)

    async def _reject(
        self, topic: str, payload: bytes, order_id: str | None, error: dict[str, Any], *, dup: bool
    ) -> None:
        """Keeps the refused message for a person and central's report; ``dup``: the broker's redelivery, whose
        alarm is raised again if it was kept before (a crash may have lost the alarm, see _judged_before)."""
        # An id with a lone surrogate (JSON's "\ud800") is kept, and reported, escaped: SQLite takes UTF-8 only.
        order_id = None if order_id is None else storable_text(order_id)
        reject_id, new = await self._store.add_reject(
            topic=topic, payload=payload, order_id=order_id, error=error, now=self._clock.wall()
        )
        if not new:  # the same message again: kept, reported and alerted already
            log.info("mqtt_order_rejected_again", reject_id=reject_id, order_id=order_id, error=error["error"])
            if dup:
                self._rejected(reject_id, order_id, error, again=True)
            return
        # A conflict's body names the order itself: one order_id field, not two (a TypeError here left it unacked).
        log.error("mqtt_order_rejected", reject_id=reject_id, **({"order_id": order_id} | error))
        self._rejected(reject_id, order_id, error, again=False)
        self._wake.set()

    def _rejected(self, reject_id: int, order_id: str | None, error: dict[str, Any], *, again: bool) -> None:
        self._bus.publish(
            MqttOrderRejected(
                reject_id=reject_id,
                order_id=order_id,
                error=str(error["error"]),
                reason=str(error["reason"]),
                again=again,
            )
        )

    # ---- the loop: events out ---------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._calls, lambda: fn(*args, **kwargs))

    def _published(self, mid: int, refusal: str | None) -> None:
        fut = self._acks.pop(mid, None)
        if fut is None:
            self._early[mid] = refusal
        elif not fut.done():
            fut.set_result(refusal)

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """PUBLISH at QoS 1 and wait for the broker's PUBACK; PublishRefusedError when it says no."""
        assert self._client is not None
        info = await self._call(self._client.publish, topic, payload, qos=QOS, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic}: {paho.error_string(info.rc)}")
        if info.mid in self._early:
            refusal = self._early.pop(info.mid)
        else:
            fut = self._acks[info.mid] = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(_PUBACK_TIMEOUT_S):
                refusal = await fut
        if refusal is not None:
            raise PublishRefusedError(
                f"the broker refuses this client's messages on {topic}: {refusal} (its ACL must let user"
                f" {self._cfg.username or '(none)'} write {self.topics['events']} and {self.topics['status']})"
            )

    async def _publish_loop(self) -> None:
        cursor = await self._store.outbox_cursor()
        retry_at = 0.0  # monotonic: while the broker refuses the events, they are offered again from then on
        while not self._stopping:
            await wait_set(self._wake, _IDLE_S if not self.events_refused else max(0.0, retry_at - time.monotonic()))
            self._wake.clear()
            if self.state != MqttState.CONNECTED or self._stopping:
                continue
            if self.events_refused and time.monotonic() < retry_at:
                continue  # each new order would offer them all again, each refused again
            try:
                cursor = await self._publish_outbox(cursor)
                await self._publish_rejects()
            except PublishRefusedError as err:  # the rows stay: a person changes the broker's ACL
                retry_at = time.monotonic() + self._cfg.reconnect_max_s
                self._events_refused(str(err))
            except (ConnectionError, TimeoutError) as err:  # the rows stay; sent again (same keys) when connected
                log.warning("mqtt_events_not_published", error=str(err) or type(err).__name__)
            except StoreError as err:
                log.warning("mqtt_events_not_published", error=str(err))
            else:
                if self.events_refused:
                    log.info("mqtt_events_taken", broker=self._broker)
                    self._events_refused("")

    def _events_refused(self, detail: str) -> None:
        if detail == self.events_refused:
            return
        if detail:  # once per reason, not once per try
            log.error("mqtt_events_refused", broker=self._broker, error=detail)
        self.events_refused = detail
        self._bus.publish(MqttEventsRefused(refused=bool(detail), detail=detail))

    async def _publish_outbox(self, cursor: int) -> int:
        """Each outbox row after the cursor as one message, a window of them at a time; the cursor moves over what the
        broker has acknowledged, also when a later one of the window failed (it and those after it go again). QoS 1 and
        a crash before the cursor commit both mean central may get an event twice: the key tells."""
        while items := await self._store.outbox_after(cursor, _IN_FLIGHT):
            sends = []
            for item in items:
                body = json.loads(item.payload)
                body.pop(REJECTED_KEY, None)  # what central's HTTP door refused is our business, not the event's
                body["idempotency_key"] = item.idempotency_key
                sends.append(self._publish(self.topics["events"], json.dumps(body, sort_keys=True).encode()))
            results = await asyncio.gather(*sends, return_exceptions=True)  # each settles: none left behind
            failed = [(n, r) for n, r in enumerate(results) if isinstance(r, BaseException)]
            acked = failed[0][0] if failed else len(items)
            if acked:
                cursor = items[acked - 1].id
                await self._store.set_outbox_cursor(cursor)
                self.counts["events_published"] += acked
            if failed:
                raise failed[0][1]
        return cursor

    async def _publish_rejects(self) -> None:
        while rejects := await self._store.unpublished_rejects(_PUBLISH_BATCH):
            for r in rejects:
                body = {
                    "event": "rejected",
                    "idempotency_key": f"{self.client_id}:mqtt_rejected:{r.id}",
                    "order_id": r.order_id,
                    "at": r.received_at,
                    **r.error,
                }
                await self._publish(self.topics["events"], json.dumps(body, sort_keys=True).encode())
            await self._store.rejects_published([r.id for r in rejects], self._clock.wall())

    # ---- what a person sees -----------------------------------------------------------------------------------

    @property
    def unacknowledged(self) -> int:
        """Messages of this connection not acknowledged yet: waiting, being taken, or taken and waiting for an earlier
        one (acknowledgements go in arrival order)."""
        return len(self._arrived)

    @property
    def in_progress(self) -> int:
        """Messages being taken (read, validated, stored) now: at most RECEIVE_MAXIMUM."""
        return self._taking

    async def status(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "broker": self._broker,
            "client_id": self.client_id,
            "topic_prefix": self.prefix,
            "state": self.state,
            "detail": self.detail,
            "since": self.since,
            "counts": dict(self.counts),
            "rejected_total": await self._store.reject_count(),
            "rejected": [
                {"id": r.id, "received_at": r.received_at, "order_id": r.order_id, "error": r.error}
                for r in await self._store.rejects(10)
            ],
            "events_unpublished": await self._store.outbox_unpublished(await self._store.outbox_cursor()),
            "events_refused": self.events_refused,
            "not_delivering": self.not_delivering,
        }
