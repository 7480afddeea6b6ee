"""A real Mosquitto on a free loopback port (tests, fleet bench) with a generated config, and a backend client.

Debian's mosquitto 2.0 (https://mosquitto.org/man/mosquitto-conf-5.html): a password file made with mosquitto_passwd,
persistence on (so a restart keeps sessions and queued QoS 1 messages, as a production broker does), and optionally a
TLS listener whose certificates come from a throwaway CA made with the openssl CLI (the `cryptography` package is not
installed here and the CLI is on every Debian box and in CI).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.sim.ports import free_port
from edge.sync.mqtt import PahoClient

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
# How long a start waits for mosquitto to listen: it starts in tens of milliseconds, seconds on a loaded test machine.
_LISTEN_WAIT_S = 10.0
BACKEND_USER, BACKEND_PASSWORD = "central", "central-secret-1"
AGENT_USER, AGENT_PASSWORD = "store", "store-secret-1"


def available() -> bool:
    return Path(MOSQUITTO).exists() and shutil.which("mosquitto_passwd") is not None


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA the broker's certificate does not come from


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA, a server certificate for DNS name localhost (no IP SAN: connecting to 127.0.0.1 must fail the
    host name check) and a client certificate, all signed by it; plus an unrelated CA."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=test {ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=d,
        )  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d,
        )  # fmt: skip
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key",
                    d / "other-ca.crt")  # fmt: skip


class Broker:
    """``mosquitto -c`` as a child process; ``port`` takes plain MQTT, ``tls_port`` (with ``tls``) MQTT over TLS."""

    def __init__(
        self,
        directory: Path,
        *,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        persistence: bool = True,
        sys_interval: int = 0,
        packets: bool = False,
    ) -> None:
        """``persistence`` False: a restart forgets every session and queued message (a broker without a disk);
        ``sys_interval``: publish $SYS/broker/... (connected clients) this often, in seconds (0: never); ``packets``:
        the log names every packet (mosquitto's ``log_type debug``), read by ``pubacks``."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self._require_certificate = require_certificate
        self._pick_ports()
        self._listened = False  # once it has, the ports are known to clients: a restart keeps them
        self.proc: asyncio.subprocess.Process | None = None
        passwd = self.dir / "passwd"
        passwd.write_text("")
        for user, password in ((BACKEND_USER, BACKEND_PASSWORD), (AGENT_USER, AGENT_PASSWORD)):
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            # Mosquitto's default 1000 drops, silently, what is queued beyond it for a store that is off (as a store's
            # broker must not: docs/mqtt.md, "The broker's settings a store needs")
            "max_queued_messages 20000",
            "max_inflight_messages 64",
            f"log_dest file {self.dir}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            *(["log_type debug"] if packets else []),
            "user root",  # tests run as whoever they run as; mosquitto would otherwise switch to its own user
            "max_connections -1",
            f"sys_interval {sys_interval}",
        ]
        self._settings = lines
        self.config = self.dir / "mosquitto.conf"
        self.acl = self.dir / "acl"
        self._acl_on = False
        self._write_config()

    def _pick_ports(self) -> None:
        self.port = free_port()
        self.tls_port = free_port() if self.tls else None
        self.ipv6_port = free_port()  # the same broker on IPv6 loopback, for a URL like mqtt://[::1]:port

    def _write_config(self) -> None:
        lines = [*self._settings, f"listener {self.port} 127.0.0.1", f"listener {self.ipv6_port} ::1"]
        if self._acl_on:
            lines.append(f"acl_file {self.acl}")
        if self.tls and self.tls_port:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self._require_certificate else 'false'}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def pubacks(self, client_id: str) -> tuple[list[int], list[int]]:
        """(packet ids of the QoS 1 PUBLISHes the broker sent ``client_id``, of the PUBACKs it received from it), each
        in the order of the log (needs ``packets``). Lines as mosquitto 2.0 writes them: "Sending PUBLISH to ID (d0, q1,
        r0, m3, 'topic', ... (N bytes))" and "Received PUBACK from ID (Mid: 3, RC:0)"."""
        sent, acked = [], []
        for line in self._log().read_text(errors="replace").splitlines():
            if f"Sending PUBLISH to {client_id} (" in line and ", q1," in line:
                sent.append(int(line.split(", m", 1)[1].split(",", 1)[0]))
            elif f"Received PUBACK from {client_id} (" in line:
                acked.append(int(line.split("Mid: ", 1)[1].split(",", 1)[0].rstrip(")")))
        return sent, acked

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    async def start(self) -> None:
        """Until it listens. A free port picked at construction can be taken by another process before mosquitto binds
        it (seen with four test workers): the first start then tries other ports, up to three times."""
        for attempt in range(3):
            failed = await self._start_once()
            if failed is None:
                self._listened = True
                return
            assert self.proc is not None
            if self._listened or attempt == 2 or "Address already in use" not in failed:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {failed[-1500:]}")
            self._pick_ports()
            self._write_config()

    def _log(self) -> Path:
        return self.dir / "mosquitto.log"

    def _log_from(self, offset: int) -> str:
        if not self._log().exists():
            return ""
        with self._log().open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    async def _start_once(self) -> str | None:
        """None once every listener answers; if mosquitto exits first, what it logged in this run."""
        logged = await asyncio.to_thread(lambda: self._log().stat().st_size if self._log().exists() else 0)
        self.proc = await asyncio.create_subprocess_exec(
            MOSQUITTO, "-c", str(self.config), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LISTEN_WAIT_S
        while loop.time() < deadline:
            try:
                for port in (self.port, self.tls_port) if self.tls_port else (self.port,):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                return None
            except OSError:
                if self.proc.returncode is not None:
                    return await asyncio.to_thread(self._log_from, logged)
                await asyncio.sleep(0.02)
        raise TimeoutError(f"mosquitto did not listen within {_LISTEN_WAIT_S:g} s")

    async def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and queued messages (persistence) before it exits."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def set_acl(self, agent_may: Iterable[str]) -> None:
        """Topic rules for the agent's user (mosquitto's acl_file lines, e.g. ``topic read edge/s/orders``; the
        backend's user may do anything), taken up at once by a running broker (SIGHUP reloads them)."""
        rules = [f"user {BACKEND_USER}", "topic readwrite #", f"user {AGENT_USER}", *agent_may]
        self.acl.write_text("\n".join(rules) + "\n")
        self._acl_on = True
        self._write_config()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGHUP)


class Backend:
    """The central backend's side: an independent paho client (its own thread) that publishes orders and records
    what arrives on the topics it subscribes to."""

    def __init__(self, broker: Broker, *, subscribe: Iterable[str] = (), client_id: str | None = None) -> None:
        """``client_id``: a persistent session under this name (the broker queues what arrives while we are away, as
        central's consumer would want); without one, a fresh session that ends with the connection."""
        self.received: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self.arrived: dict[bytes, float] = {}  # payload -> time.perf_counter() when it came (the bench's pings)
        self._got = threading.Condition()
        self._subs = list(subscribe)
        self._connected = threading.Event()
        self.client = PahoClient(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"backend-{free_port()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._persistent = client_id is not None
        self.client.username_pw_set(BACKEND_USER, BACKEND_PASSWORD)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self._connected.clear()
        self.client.on_message = self._on_message
        self._port = broker.port

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        for topic in self._subs:
            client.subscribe(topic, qos=1)
        self._connected.set()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._got:
            self.arrived.setdefault(bytes(msg.payload), time.perf_counter())
            self.received.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._got.notify_all()

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if self._persistent else 0
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # seconds; paho annotates int
        self.client.connect("127.0.0.1", self._port, keepalive=30, clean_start=not self._persistent, properties=props)
        self.client.loop_start()
        if not self._connected.wait(5):
            raise TimeoutError("backend client did not connect")

    async def connect(self) -> None:
        await asyncio.to_thread(self._connect)
        await asyncio.sleep(0.05)  # the SUBACK: subscriptions in place before anything is published

    def _publish(self, topic: str, payloads: list[bytes], retain: bool) -> None:
        # After a broker restart paho reconnects by itself within reconnect_delay: a backend publishes once it has
        # (paho refuses a publish while it is away: "The client is not currently connected").
        if not self._connected.wait(10):
            raise TimeoutError("backend client not connected to publish")
        infos = [self.client.publish(topic, p, qos=1, retain=retain) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)

    async def publish(self, topic: str, *payloads: bytes | dict[str, Any], retain: bool = False) -> None:
        """QoS 1, each acknowledged by the broker before this returns."""
        raw = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in payloads]
        await asyncio.to_thread(self._publish, topic, raw, retain)

    def on(self, topic: str) -> list[bytes]:
        with self._got:
            return [p for t, p, _ in self.received if t == topic]

    def events(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.on(topic)]

    def _close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    async def close(self) -> None:
        await asyncio.to_thread(self._close)
