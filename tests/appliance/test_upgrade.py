"""scripts/upgrade.sh end to end under a throwaway root with a real system user: the agent runs as that user, started
and stopped by a systemctl simulator, takes orders over HTTP and prints on simulated printers while it is upgraded,
rolled back and interrupted at every step."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.ports import free_port
from edge.sim.printer import SimPrinter
from edge.sim.process import write_config
from edge.store.migrations import latest_version, load_migrations
from tests.appliance.conftest import SystemUser, program_version
from tests.helpers import (
    HID_SCANNER,
    OFFLINE_BUILD,
    TOKEN,
    api_client,
    build_with_evdev,
    db_execute,
    db_rows,
    fill,
    has_evdev,
    killed_writer,
    small_disk,
)

pytestmark = pytest.mark.slow(seconds=8)

REPO = Path(__file__).parents[2]
HERE = Path(__file__).parent
LATEST = latest_version(load_migrations())
STORE = "upgrade-store"
STEPS = ("build", "check", "stop", "backup", "install", "migrate", "start", "health")
SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
READY_FAULT = """
    return web.json_response(
        {"ready": False, "checks": {"fault": {"ok": False, "detail": "injected by the upgrade test"}}}, status=503
    )
"""


def copy_source(target: Path, *, version: str = "", changes: bool = False, ready_fault: bool = False) -> Path:
    """This checkout as a release to install: optionally another version with changes (one more migration, a line more
    in the agent's unit file), and a /ready that never answers 200."""
    for name in ("edge", "migrations", "systemd", "scripts", "docs"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "edge.example.toml"):
        shutil.copy(REPO / name, target / name)
    if version:
        package = target / "edge/__init__.py"
        package.write_text(package.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))
    if changes:
        unit = target / "systemd/edge-agent.service"
        unit.write_text(unit.read_text().replace("[Service]\n", "[Service]\nEnvironment=EDGE_UNIT_OF=upgrade-test\n"))
        (target / "migrations" / f"{LATEST + 1:03d}_upgrade_probe.sql").write_text(
            "-- A table and a column only the new version knows.\n\n"
            "-- migrate:up\nCREATE TABLE upgrade_probe (note TEXT);\n"
            "ALTER TABLE orders ADD COLUMN upgrade_probe TEXT;\n\n"
            "-- migrate:down\nALTER TABLE orders DROP COLUMN upgrade_probe;\nDROP TABLE upgrade_probe;\n"
        )
    if ready_fault:
        routes = target / "edge/api/routes.py"
        head = "async def ready(request: web.Request) -> web.Response:\n"
        assert head in routes.read_text(), "the /ready handler moved: update READY_FAULT's place"
        routes.write_text(routes.read_text().replace(head, head + READY_FAULT))
    return target


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One install of the old version (this checkout) under a root the user can reach, with the new versions' releases
    already built beside it (a rerun reuses a complete release), kept as a snapshot each test starts from."""

    user: SystemUser
    old: Path
    new: Path  # 0.2.0 with one more migration
    faulty: Path  # 0.2.1: the same, and its /ready never answers 200
    root: Path
    snapshot: Path
    bin: Path  # holds the systemctl and journalctl simulators, first on PATH


def copy_root(source: Path, target: Path) -> None:
    """The throwaway root, copied with owners and modes; the releases (venvs nothing writes into in place) as hard
    links, which takes a fraction of a full copy."""
    releases = "opt/edge-agent/releases"
    target.mkdir()
    subprocess.run(
        f"tar -C {source} --exclude=./{releases} -cf - . | tar -C {target} --same-owner -xpf -", shell=True, check=True
    )
    if (source / releases).is_dir():
        subprocess.run(["cp", "-al", str(source / releases), str(target / releases)], check=True)


def end_processes_of(uid: int) -> list[str]:
    """Kills (SIGKILL, by pid) every process of ``uid`` and waits until they are gone; returns their command lines."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[1]) != uid or fields["State"].strip().startswith("Z"):
                continue
            pid = int(status.parent.name)
            found.append((status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            continue  # gone meanwhile
    deadline = time.monotonic() + 10
    while any(_alive_as(uid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _alive_as(uid: int) -> list[int]:
    alive = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[1]) == uid and not fields["State"].strip().startswith("Z"):
            alive.append(int(status.parent.name))
    return alive


def remove_tree(root: Path) -> None:
    """rmtree that accepts a file going away under it (SQLite removes its -shm and -wal files on close)."""

    def gone_already(function: Callable[..., Any], path: str, info: tuple[type, BaseException, Any]) -> None:
        if not isinstance(info[1], FileNotFoundError):
            raise info[1]

    shutil.rmtree(root, onerror=gone_already)


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd="/")


def base_env(prepared: Prepared) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{prepared.bin}:{os.environ['PATH']}",
        "FAKE_SYSTEMD_ROOT": str(prepared.root),
        "FAKE_SYSTEMD_STATE": str(prepared.user.home / "systemd"),
        "FAKE_SYSTEMD_USER": prepared.user.name,
        **OFFLINE_BUILD,
        "EDGE_HEALTH_WAIT_S": "15",
    }
    for name in ("VIRTUAL_ENV", "EDGE_CONFIG", "EDGE_ENV_FILE"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def prepared(module_user: SystemUser) -> Iterator[Prepared]:
    home = module_user.home
    bin_dir = home / "bin"
    bin_dir.mkdir()
    for command in ("systemctl", "journalctl"):
        (bin_dir / command).write_text(f'#!/bin/sh\nexec {sys.executable} {HERE / f"fake_{command}.py"} "$@"\n')
        (bin_dir / command).chmod(0o755)
    prepared = Prepared(
        user=module_user,
        old=copy_source(home / "src-old"),
        new=copy_source(home / "src-new", version="0.2.0", changes=True),
        faulty=copy_source(home / "src-faulty", version="0.2.1", changes=True, ready_fault=True),
        root=home / "root",
        snapshot=home / "snapshot",
        bin=bin_dir,
    )
    env = base_env(prepared)
    python = module_user.python
    installed = run(
        [
            "bash",
            str(prepared.old / "scripts/install.sh"),
            *("--prefix", str(prepared.root), "--python", python, "--user", module_user.name),
        ],
        env,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The two new releases are built side by side: each goes to a directory of its own, and this test holds the
    # throwaway root, so it takes the install lock for both (a box never builds two releases at once).
    builds = [
        subprocess.Popen(
            [
                "bash",
                str(source / "scripts/install.sh"),
                "--build-only",
                *("--prefix", str(prepared.root), "--python", python),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, "EDGE_INSTALL_LOCK_HELD": "1"},
            cwd="/",
        )
        for source in (prepared.new, prepared.faulty)
    ]
    for build in builds:
        out, _ = build.communicate(timeout=240)
        assert build.returncode == 0, out
    copy_root(prepared.root, prepared.snapshot)
    try:
        yield prepared
    finally:
        run([str(bin_dir / "systemctl"), "stop", "edge-agent.service"], env)


@dataclasses.dataclass
class Box:
    """The store's box for one test: the install restored from the snapshot, a config for these printers."""

    prepared: Prepared
    port: int
    printers: dict[str, SimPrinter]
    upgrades: list[asyncio.subprocess.Process] = dataclasses.field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.prepared.root

    @property
    def db(self) -> Path:
        return self.root / "var/lib/edge/edge.db"

    def env(self, **extra: str) -> dict[str, str]:
        return {**base_env(self.prepared), **extra}

    async def command(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env(**env), cwd="/"
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=240)
        assert process.returncode is not None
        return subprocess.CompletedProcess(argv, process.returncode, out.decode(), "")

    async def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await self.command(str(self.prepared.bin / "systemctl"), *args)

    def upgrade_argv(self, source: Path) -> list[str]:
        return [
            "bash",
            str(source / "scripts/upgrade.sh"),
            "--prefix",
            str(self.root),
            "--python",
            self.prepared.user.python,
        ]

    async def upgrade(self, source: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return await self.command(*self.upgrade_argv(source), **env)

    async def set_up(self) -> None:
        """The install restored from the snapshot, this test's config, the old agent started."""
        prepared = self.prepared
        await asyncio.to_thread(remove_tree, prepared.root)
        await asyncio.to_thread(copy_root, prepared.snapshot, prepared.root)
        config = write_config(
            prepared.root / "etc/edge/edge.toml",
            data_dir=prepared.root / "var/lib/edge",
            api_port=self.port,
            token=TOKEN,
            printers={n: p.port for n, p in self.printers.items()},
            store_id=STORE,
        )
        os.chown(config, prepared.user.uid, prepared.user.gid)  # install.sh: the agent's user reads its config
        secrets = prepared.root / "etc/edge/edge.env"  # install.sh wrote a random token; this test's clients use TOKEN
        secrets.write_text(f'EDGE_API_TOKEN="{TOKEN}"\n', encoding="utf-8")
        started = await self.systemctl("start", "edge-agent.service")
        log = prepared.user.home / "systemd/edge-agent.service.log"
        assert started.returncode == 0, started.stdout + log.read_text()

    async def tear_down(self) -> None:
        # SIGTERM reaches only the script: a child of its (a `systemctl start` waiting for READY) may live on and
        # start an agent after this teardown, while the next test replaces the root. The whole session goes first.
        for process in self.upgrades:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        self.upgrades.clear()
        await self.systemctl("stop", "edge-agent.service")
        # Whatever still runs as the agent's user (an agent whose `systemctl start` was killed half way, a command
        # upgrade.sh started) would hold the database while the next test replaces the root: none may be left.
        left = await asyncio.to_thread(end_processes_of, self.prepared.user.uid)
        assert left == [], f"processes of the agent's user still running after the unit stopped: {left}"

    async def start_upgrade(self, source: Path, **env: str) -> asyncio.subprocess.Process:
        """upgrade.sh in a session of its own (a terminal's foreground process group), its output on a pipe. With
        SIGHUP, SIGINT and SIGQUIT as a terminal leaves them: a test run started in the background (``pytest &``, a CI
        runner's job, ``nohup``) ignores them, its children inherit that, and bash cannot trap a signal ignored at its
        start."""
        process = await asyncio.create_subprocess_exec(
            "env",
            "--default-signal=HUP,INT,QUIT",
            *self.upgrade_argv(source),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env(**env),
            cwd="/",
            start_new_session=True,
        )
        self.upgrades.append(process)
        return process

    async def installed_version(self) -> str:
        """The version of the program the agent's unit starts (whatever the layout of the program directory)."""
        unit = (self.root / "etc/systemd/system/edge-agent.service").read_text()
        program = next(line for line in unit.splitlines() if line.startswith("ExecStart=")).split("=", 1)[1].split()[0]
        return await asyncio.to_thread(program_version, (self.root / program.lstrip("/")).parent / "python")

    async def schema(self) -> int:
        return int((await db_rows(self.db, "PRAGMA user_version"))[0][0])

    async def order_ids(self) -> set[str]:
        return {row[0] for row in await db_rows(self.db, "SELECT id FROM orders")}

    async def answers(self, path: str) -> bool:
        """``path`` answers 200 (/health: the agent is alive; /ready: it is ready too)."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                async with session.get(f"http://127.0.0.1:{self.port}{path}") as response:
                    return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def up(self) -> bool:
        return await self.answers("/health")

    async def down(self) -> bool:
        return not await self.answers("/health")

    async def ready(self) -> bool:
        return await self.answers("/ready")

    async def running_version(self) -> str:
        """The version the running agent says it is (/health; the status page, `edge status` and the metrics say it)."""
        async with api_client(self) as api, api.get("/health") as response:
            return str((await response.json())["version"])

    async def push(self, prefix: str, count: int) -> list[str]:
        ids = []
        async with api_client(self) as api:
            for n in range(count):
                order = make_order(n, prefix=prefix, print_receipt=False)
                async with api.post("/api/v1/orders", json=order) as response:
                    assert response.status == 201, await response.text()
                ids.append(order["id"])
        return ids

    def unit(self) -> str:
        return (self.root / "etc/systemd/system/edge-agent.service").read_text()

    def foreign_files(self) -> list[Path]:
        """Whatever in the data directory is not the agent user's (the agent could not write it)."""
        data = self.root / "var/lib/edge"
        found = []
        for p in [data, *data.rglob("*")]:
            try:
                if p.lstat().st_uid != self.prepared.user.uid:
                    found.append(p)
            except FileNotFoundError:  # renamed meanwhile by the running agent (a cache's temporary file)
                continue
        return found

    def kitchen_tickets(self) -> collections.Counter[tuple[str, bool]]:
        """(order id, marked COPY) of every ticket that came out of the kitchen printer."""
        found: collections.Counter[tuple[str, bool]] = collections.Counter()
        for job in self.printers["kitchen"].printed:
            seen = decode(job)
            if seen.qr_codes:
                found[(seen.qr_codes[0].split(":")[2], "COPY" in seen.text)] += 1
        return found


@pytest.fixture
async def box(prepared: Prepared, printers: dict[str, SimPrinter]) -> AsyncIterator[Box]:
    """The old version installed and running as the user, with its config for this test's printers and port."""
    box = Box(prepared=prepared, port=free_port(), printers=printers)
    await box.set_up()
    try:
        yield box
    finally:
        await box.tear_down()


async def wait_until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Polls ``check`` (an HTTP probe of another process: nothing to wait on but the answer)."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{check} still false after {seconds:g}s")


async def test_upgrade_end_to_end_as_the_agents_user(box: Box) -> None:
    """The old version takes orders; upgrade.sh stops it, backs up, switches, migrates and starts the new version,
    which is healthy and takes orders too; every file in the data directory is still the agent user's; a rerun
    finds it installed."""
    before = await box.push("before", 3)
    await box.printers["kitchen"].wait_for_printed(3)
    upgraded = await box.upgrade(box.prepared.new)
    assert upgraded.returncode == 0, upgraded.stdout
    assert "upgraded to edge-agent 0.2.0" in upgraded.stdout
    assert await box.installed_version() == "0.2.0"
    assert await box.ready()
    # One version, the package's: before (the tech77 probe, F3) the agent said 0.1.0, a constant of its own.
    assert await box.running_version() == "0.2.0"
    assert await box.schema() == LATEST + 1
    assert box.unit() == (box.prepared.new / "systemd/edge-agent.service").read_text()
    after = await box.push("after", 1)
    await box.printers["kitchen"].wait_for_printed(4)
    assert set(before + after) <= await box.order_ids()
    assert set(box.kitchen_tickets().values()) == {1}
    assert box.foreign_files() == []
    assert list((box.root / "var/lib/edge/backups").glob("edge-*.db")), "a backup was taken before migrating"
    again = await box.upgrade(box.prepared.new)
    assert again.returncode == 0 and "installed already" in again.stdout, again.stdout


async def test_rollback_keeps_every_order_the_new_version_took(box: Box) -> None:
    """The new version starts and takes orders (two printed, one waiting for the kitchen printer) but never turns
    healthy: the rollback brings the old version back with every one of those orders, the printed ones are not
    printed again, and the waiting one prints once, on the old version."""
    before = await box.push("before", 2)
    await box.printers["kitchen"].wait_for_printed(2)
    process = await box.start_upgrade(box.prepared.faulty, EDGE_HEALTH_WAIT_S="5")
    async with asyncio.timeout(120):
        await wait_until(box.down, seconds=60)  # the old version stopped …
        await wait_until(box.up, seconds=60)  # … and the new one answers, and waits for a health check it fails
        taken = await box.push("new", 2)
        await box.printers["kitchen"].wait_for_printed(4)
        box.printers["kitchen"].set_offline(True)
        waiting = await box.push("waiting", 1)
        out, _ = await process.communicate()
    text = out.decode()
    assert process.returncode == 1, text
    assert "rolled back" in text, text
    assert await box.installed_version() == "0.1.0"
    assert box.unit() == (box.prepared.old / "systemd/edge-agent.service").read_text()
    await wait_until(box.ready)
    assert set(before + taken + waiting) <= await box.order_ids()  # nothing the new version acknowledged is lost
    assert await box.schema() == LATEST
    box.printers["kitchen"].set_offline(False)
    await box.printers["kitchen"].wait_for_printed(5, timeout=20)
    await asyncio.sleep(1.0)  # time for a wrong second print to show
    tickets = box.kitchen_tickets()
    assert {order for order, _ in tickets} == set(before + taken + waiting)
    assert all(count == 1 for count in tickets.values()) and not any(copy for _, copy in tickets), tickets


async def test_a_migration_that_fails_half_way_rolls_back_program_and_database(box: Box) -> None:
    """upgrade.sh backs up, installs the new version and migrates; the migration fails after its first statement (the
    database already has the column it adds, as a hand fix may leave it): the old program comes back and starts, with
    the database as it was: its schema version, its orders, no half-made table."""
    orders = await box.push("before", 2)
    await db_execute(box.db, "ALTER TABLE orders ADD COLUMN upgrade_probe TEXT")
    upgraded = await box.upgrade(box.prepared.new)
    assert upgraded.returncode == 1, upgraded.stdout
    assert "rolling back" in upgraded.stdout and "upgrade_probe" in upgraded.stdout, upgraded.stdout
    assert await box.installed_version() == "0.1.0"
    assert await box.schema() == LATEST
    assert await db_rows(box.db, "SELECT name FROM sqlite_master WHERE name = 'upgrade_probe'") == []
    assert not (box.root / "opt/edge-agent/upgrade").exists()  # no upgrade left half done
    await wait_until(box.ready)
    assert set(orders) <= await box.order_ids()


@contextlib.asynccontextmanager
async def small_card(box: Box, mib: int) -> AsyncIterator[Path]:
    """The box's data directory moved onto a card of ``mib`` MiB (a tmpfs), the old agent started on it and stopped
    before the card goes; the agent keeps 1 MB of it free (alerts.disk_free_min_mb)."""
    data = box.root / "var/lib/edge"
    await box.systemctl("stop", "edge-agent.service")
    kept = data.with_name("edge-off-card")
    await asyncio.to_thread(data.rename, kept)
    config = box.root / "etc/edge/edge.toml"
    config.write_text(config.read_text() + "\n[alerts]\ndisk_free_min_mb = 1\n")
    with contextlib.ExitStack() as mounted:  # mount and umount are processes: off the event loop
        await asyncio.to_thread(mounted.enter_context, small_disk(data, mib))
        try:
            await asyncio.to_thread(subprocess.run, ["cp", "-a", f"{kept}/.", str(data)], check=True)
            os.chown(data, box.prepared.user.uid, box.prepared.user.gid)
            started = await box.systemctl("start", "edge-agent.service")
            assert started.returncode == 0, started.stdout
            yield data
        finally:
            await box.systemctl("stop", "edge-agent.service")
            await asyncio.to_thread(mounted.close)


async def test_an_upgrade_whose_card_fills_after_the_backup_puts_the_old_version_back_and_names_the_full_card(
    box: Box,
) -> None:
    """The card fills right after the backup (a log, the journal): the migration cannot even open the database, so it
    is still whole at the old schema. The rollback finds nothing to migrate back, and the old version comes back and
    starts with every order; the last line names the full card. Before stop 68: the rollback ran the new version's
    `edge migrate --to` anyway, which failed on the full card like the step, then a restore (no room), and ended
    "ROLLBACK NOT POSSIBLE (the database cannot be migrated back to schema 18): edge-agent 0.2.0 stays installed with
    every order it took", starting the new version, which had taken none (technician probe, finding 3)."""
    async with small_card(box, 8) as card:
        orders = await box.push("before", 2)
        process = await box.start_upgrade(box.prepared.new)
        assert process.stdout is not None
        output: list[str] = []
        async with asyncio.timeout(120):
            while line := (await process.stdout.readline()).decode():
                output.append(line)
                if "step: install" in line:
                    filler = await asyncio.to_thread(fill, card)
            await process.wait()
        text = "".join(output)
        assert process.returncode == 1 and "FAILED at step migrate" in text, text
        assert "ROLLBACK NOT POSSIBLE" not in text and "rolled back" in output[-1], text
        assert "card is full" in output[-1], text
        assert await box.installed_version() == "0.1.0"
        assert box.unit() == (box.prepared.old / "systemd/edge-agent.service").read_text()
        assert not (box.root / "opt/edge-agent/upgrade").exists()
        await wait_until(box.up)  # the old agent, on the room it keeps beside its database
        filler.unlink()
        await wait_until(box.ready)
        assert await box.schema() == LATEST
        assert set(orders) <= await box.order_ids()


async def test_an_upgrade_of_a_box_with_secrets_left_in_the_old_dotenv_stops_before_the_agent_stops(box: Box) -> None:
    """Secrets left in /etc/edge/.env (where they were before the one secrets file): the new version's agent, started
    by its unit, refuses that file. upgrade.sh checks the config as the unit will start the new version before it
    stops the old one: it stops there, the last line naming the file and what to do, and the old agent runs on,
    untouched. Before: the checks ran with EDGE_ENV_FILE set, which skips that refusal, so backup and migrate passed;
    the new agent refused under its unit, and the last line said only "rolled back" (the upgrade73 probe)."""
    orders = await box.push("before", 1)
    pid_file = box.prepared.user.home / "systemd/edge-agent.service.pid"
    agent = pid_file.read_text()
    legacy = box.root / "etc/edge/.env"
    legacy.write_text(f'EDGE_API_TOKEN="{TOKEN}"\n', encoding="utf-8")
    upgraded = await box.upgrade(box.prepared.new)
    last = upgraded.stdout.strip().splitlines()[-1]
    assert upgraded.returncode == 1, upgraded.stdout
    assert f"{legacy}: is no longer read: move its lines into {box.root / 'etc/edge/edge.env'}" in last, last
    assert "stopped at step check" in last and "before anything was changed" in last, last
    assert "step: stop" not in upgraded.stdout, upgraded.stdout
    assert pid_file.read_text() == agent, "the old agent was stopped"
    assert not (box.root / "opt/edge-agent/upgrade/journal").exists()
    assert await box.installed_version() == "0.1.0" and await box.ready()
    assert set(orders) <= await box.order_ids()


async def upgrade_with_the_port_taken(box: Box, *, freed_at: str) -> tuple[int, list[str]]:
    """upgrade.sh to the new version while another program listens on the agent's port from its step migrate (the
    old agent stopped) until upgrade.sh prints a line holding ``freed_at`` (never, if none does): the exit status and
    the output's lines."""
    process = await box.start_upgrade(box.prepared.new)
    assert process.stdout is not None
    output: list[str] = []
    taken: asyncio.Server | None = None
    try:
        async with asyncio.timeout(120):
            while line := (await process.stdout.readline()).decode():
                output.append(line)
                if "step: migrate" in line:
                    taken = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", box.port)
                elif freed_at in line and taken is not None:
                    taken.close()
                    await taken.wait_closed()
            status = await process.wait()
    finally:
        if taken is not None:
            taken.close()
            await taken.wait_closed()
    return status, output


async def test_a_new_version_that_does_not_start_is_rolled_back_and_the_last_line_names_its_error(box: Box) -> None:
    """The new version's agent exits at its start (another program took its port): upgrade.sh rolls back, the old
    version starts with every order, and the last line ends with the agent's own line, as the docs promise. Before:
    systemd's "Job for edge-agent.service failed" was all it said, and the last line gave no reason (the upgrade73
    probe)."""
    orders = await box.push("before", 2)
    status, output = await upgrade_with_the_port_taken(box, freed_at="FAILED at step start")
    text = "".join(output)
    assert status == 1 and "FAILED at step start" in text, text
    last = output[-1]
    assert "rolled back: edge-agent 0.1.0 is installed again, with every order" in last, text
    assert "; it failed on: edge: api.port " in last and "is in use by another program" in last, last
    assert await box.installed_version() == "0.1.0"
    await wait_until(box.ready)
    assert set(orders) <= await box.order_ids()


async def test_a_rollback_whose_old_version_does_not_start_either_says_the_box_is_down(box: Box) -> None:
    """The port stays taken: neither the new version nor, after the rollback, the old one starts. The last line says
    the box is down and takes no orders, why, and what to do; exit 1. Once the port is free, the start it names brings
    the old version back with every order. Before: the rollback's start was not checked and the last line said
    "rolled back: edge-agent 0.1.0 is installed again, with every order" over a box that took none (the upgrade73
    probe)."""
    orders = await box.push("before", 2)
    status, output = await upgrade_with_the_port_taken(box, freed_at="(never)")
    last = output[-1]
    assert status == 1, "".join(output)
    assert "rolled back" not in last, last
    assert "THE BOX IS DOWN, it takes no orders: edge-agent 0.1.0 is installed, with every order" in last, last
    assert "does not start: edge: api.port " in last and "stop it, or set another api.port; fix that" in last, last
    assert "systemctl start edge-agent.service" in last, last
    assert not (box.root / "opt/edge-agent/upgrade/journal").exists()
    assert await box.installed_version() == "0.1.0" and await box.down()
    started = await box.systemctl("start", "edge-agent.service", "edge-health-check.timer")
    assert started.returncode == 0, started.stdout
    await wait_until(box.ready)
    assert set(orders) <= await box.order_ids()


async def test_upgrade_reads_the_secrets_file(box: Box) -> None:
    """With the API token only in /etc/edge/edge.env (where the docs put secrets) the edge commands upgrade.sh runs as
    root load the config, and the upgrade completes."""
    config = box.root / "etc/edge/edge.toml"
    config.write_text(config.read_text().replace(f'token = "{TOKEN}"', ""))
    (box.root / "etc/edge/edge.env").write_text(f"EDGE_API_TOKEN={TOKEN}\n")
    upgraded = await box.upgrade(box.prepared.new)
    assert upgraded.returncode == 0, upgraded.stdout
    assert await box.installed_version() == "0.2.0"


async def test_an_upgrade_of_a_box_with_a_hid_scanner_keeps_evdev_and_the_new_version_starts(box: Box) -> None:
    """The store's keyboard-wedge scanner (type = "hid") is read through evdev, which someone put into the program in
    use by hand (pip): the agent runs. Where evdev cannot be compiled (no gcc), upgrade.sh stops at its build before
    anything changed, the old version keeps running, and the last line says what to install. With a compiler, the new
    version is built with evdev too, and it starts and turns healthy. Before, it was built without evdev: the new
    agent refused the config ("hid needs the evdev package") and the upgrade failed and rolled back, at every run."""
    home = box.prepared.user.home
    no_gcc, build = await asyncio.gather(
        asyncio.to_thread(build_with_evdev, home / f"no-gcc-{box.port}", compiles=False),
        asyncio.to_thread(build_with_evdev, home / f"evdev-{box.port}"),
    )
    try:
        await box.systemctl("stop", "edge-agent.service")
        config = box.root / "etc/edge/edge.toml"
        config.write_text(config.read_text() + HID_SCANNER)
        old = (box.root / "opt/edge-agent/current").resolve()
        wheels = Path(build["EDGE_PIP_ARGS"].split()[-1])  # --find-links DIR
        [wheel] = await asyncio.to_thread(lambda: list(wheels.glob("evdev-*.whl")))
        by_hand = await box.command(
            str(old / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel), **build
        )
        assert by_hand.returncode == 0 and await asyncio.to_thread(has_evdev, old), by_hand.stdout
        started = await box.command(str(box.prepared.bin / "systemctl"), "start", "edge-agent.service", **build)
        assert started.returncode == 0, started.stdout
        orders = await box.push("before", 1)

        failed = await box.upgrade(box.prepared.new, **no_gcc)
        last = failed.stdout.strip().splitlines()[-1]
        assert failed.returncode == 1 and "stopped at step build" in last, failed.stdout
        assert "apt install gcc linux-libc-dev python3-dev" in last and "the agent runs as before" in last, last
        assert await box.installed_version() == "0.1.0" and await box.ready()

        upgraded = await box.upgrade(box.prepared.new, **build)
        assert upgraded.returncode == 0, upgraded.stdout
        assert await box.installed_version() == "0.2.0"
        assert await asyncio.to_thread(has_evdev, box.root / "opt/edge-agent/current")
        await wait_until(box.ready)
        assert set(orders) <= await box.order_ids()
    finally:
        for made in (f"no-gcc-{box.port}", f"evdev-{box.port}"):
            await asyncio.to_thread(shutil.rmtree, home / made, True)


async def test_failed_backup_says_so_and_keeps_the_old_version(box: Box) -> None:
    """When the backup cannot be written upgrade.sh says "backup failed", changes nothing and the old agent runs."""
    (box.root / "var/lib/edge/backups").write_text("a file where the backup folder should be")
    upgraded = await box.upgrade(box.prepared.new)
    assert upgraded.returncode == 1, upgraded.stdout
    assert "backup failed" in upgraded.stdout
    last = upgraded.stdout.strip().splitlines()[-1]
    assert "stopped at step backup" in last and "edge-agent 0.1.0 runs as before" in last, last
    assert await box.installed_version() == "0.1.0"
    assert await box.schema() == LATEST
    assert await box.ready()


async def test_an_upgrade_stops_at_its_backup_when_a_killed_agents_log_cannot_be_written_back(box: Box) -> None:
    """The agent on its card took orders and was killed (a power cut) with a big write, 3 MB, in its write-ahead log;
    the card has room for the backup's copy and the 1 MB the agent keeps free, not for that log written back into the
    database as well, which closing the stopped database after the copy does. upgrade.sh stops at its backup step
    before anything changed: "backup failed", the last line names the step, the old version running as before and
    the log's room needed, "nothing written"; no backup file. The old agent is back with every order (it writes the
    log back itself, in the room the backup left). Before: the backup said "backup written" and filled the card to its
    last byte writing the log back; the upgrade went on to install, failed at migrate ("the card is full (0 MB free")
    and rolled back."""
    async with small_card(box, 16) as card:
        orders = await box.push("before", 3)
        assert await asyncio.to_thread(end_processes_of, box.prepared.user.uid), "no agent to kill"
        db, wal = card / "edge.db", card / "edge.db-wal"
        await asyncio.to_thread(killed_writer, db, 3)
        filler = await asyncio.to_thread(fill, card, leave=db.stat().st_size + wal.stat().st_size + 2**20 + 300 * 1024)

        upgraded = await box.upgrade(box.prepared.new)
        last = upgraded.stdout.strip().splitlines()[-1]
        assert upgraded.returncode == 1 and "backup failed" in upgraded.stdout, upgraded.stdout
        assert "stopped at step backup" in last and "edge-agent 0.1.0 runs as before" in last, last
        assert "not enough space for a backup" in last and "edge.db-wal" in last, last
        assert await box.installed_version() == "0.1.0"
        assert list(card.glob("backups/edge-*")) == []
        assert last.endswith("nothing written"), last
        filler.unlink()
        await wait_until(box.ready)
        assert set(orders) <= await box.order_ids()


# Each step interrupted once in the normal run, by the signal a real interruption there most likely is; every signal
# shows up: SIGKILL (the OOM killer, a power cut's kin) three times, each catchable one at least once.
EVERYDAY = {
    "build": signal.SIGHUP,  # the SSH session drops during the long pip step
    "check": signal.SIGINT,
    "stop": signal.SIGKILL,
    "backup": signal.SIGINT,  # Ctrl-C
    "install": signal.SIGKILL,
    "migrate": signal.SIGTERM,  # `kill`
    "start": signal.SIGKILL,
    "health": signal.SIGINT,
}


def matrix() -> list[Any]:  # pytest.param's type is private
    """The everyday cases above; the full step x signal matrix (32 runs, some minutes) with EDGE_UPGRADE_MATRIX=1.
    Only the cases that run are generated: nothing shows as skipped."""
    full = bool(os.environ.get("EDGE_UPGRADE_MATRIX"))
    return [
        pytest.param(step, sig, id=f"{step}-{sig.name}")
        for step in STEPS
        for sig in SIGNALS
        if full or EVERYDAY[step] is sig
    ]


async def interrupt_upgrade_at(
    box: Box, step: str, sig: signal.Signals, source: Path | None = None
) -> tuple[asyncio.subprocess.Process, list[str]]:
    """upgrade.sh (of ``source``, else the new version) started, and sent ``sig`` the moment it says it is at ``step``;
    its ended process and output."""
    process = await box.start_upgrade(source or box.prepared.new)
    assert process.stdout is not None
    output: list[str] = []
    async with asyncio.timeout(120):
        while not any(f"step: {step}" in line for line in output):
            line = (await process.stdout.readline()).decode()
            assert line, f"upgrade.sh ended before step {step}:\n" + "".join(output)
            output.append(line)
        if sig is signal.SIGTERM:
            process.send_signal(sig)
        else:
            os.killpg(process.pid, sig)
        output.append((await process.stdout.read()).decode())
        await process.wait()
    return process, output


@pytest.mark.parametrize(("step", "sig"), matrix())
async def test_interrupted_upgrade_leaves_a_working_agent_and_a_rerun_completes(
    box: Box, step: str, sig: signal.Signals
) -> None:
    """upgrade.sh interrupted at a step (SIGHUP or SIGINT to its process group like a dropped SSH session or Ctrl-C,
    SIGTERM to the script like `kill`, SIGKILL to the group like the OOM killer): afterwards the old or the new version
    is installed and starts with every order, and a second run completes the upgrade."""
    for attempt in range(3):
        orders = await box.push("before", 2)
        if step == "build":  # a real build to interrupt: the prepared one goes
            releases = box.root / "opt/edge-agent/releases"
            for release in [p for p in releases.iterdir() if p.name.startswith("0.2.0-")]:
                await asyncio.to_thread(shutil.rmtree, release)
        process, output = await interrupt_upgrade_at(box, step, sig)
        if process.returncode != 0 or attempt == 2:
            break
        # The signal came after the script had finished (a loaded machine let the quick last steps all run before
        # this test read the step's line): that run interrupted nothing. The box starts over and the case runs again.
        await box.tear_down()
        await box.set_up()
    text = "".join(output)
    assert process.returncode != 0, text
    version = await box.installed_version()
    if sig is signal.SIGKILL:
        assert version in ("0.1.0", "0.2.0"), text
        started = await box.systemctl("start", "edge-agent.service")  # what the next boot does
        assert started.returncode == 0, started.stdout
    else:
        assert version == "0.1.0", text
        assert "rolled back" in text or "before anything was changed" in text, text
        assert box.unit() == (box.prepared.old / "systemd/edge-agent.service").read_text()
        assert await box.schema() == LATEST
    await wait_until(box.ready)
    assert set(orders) <= await box.order_ids()
    assert box.foreign_files() == [], text

    rerun = await box.upgrade(box.prepared.new)
    assert rerun.returncode == 0, text + "\n--- rerun ---\n" + rerun.stdout
    assert await box.installed_version() == "0.2.0"
    await wait_until(box.ready)
    assert set(orders) <= await box.order_ids()


async def test_upgrade_from_a_box_installed_before_releases(box: Box) -> None:
    """A box whose program is the single venv the earlier install.sh made (/opt/edge-agent/venv, units starting it):
    a failed upgrade brings that venv and its units back with every order; the next upgrade succeeds and keeps the old
    venv as the previous version. (The new versions' releases stay built beside it, as an upgrade's build step leaves
    them: building them again would test pip, not the switch from the old layout.)"""
    opt = box.root / "opt/edge-agent"
    await box.systemctl("stop", "edge-agent.service")
    old_release = (opt / "current").resolve()
    (opt / "current").unlink()
    # That venv held what the release holds (made by `python -m venv`, then pip): the release moves there, and the
    # scripts' shebangs with it, instead of a second venv and pip build of the same source (~5 s of CPU).
    old_release.rename(opt / "venv")
    (opt / "venv/.edge-release-complete").unlink()  # install.sh's mark of a release; that venv had none
    for script in (opt / "venv/bin").iterdir():
        if not script.is_symlink() and script.read_bytes().startswith(f"#!{old_release}/".encode()):
            # A new file renamed over it: the release is hard-linked to the module's snapshot (copy_root), and writing
            # in place would change the snapshot's scripts too, breaking every test after this one.
            changed = script.with_name(script.name + ".new")
            changed.write_bytes(script.read_bytes().replace(str(old_release).encode(), str(opt / "venv").encode(), 1))
            shutil.copymode(script, changed)
            changed.replace(script)
    for unit in ("edge-agent.service", "edge-health-check.service", "edge-backup.service"):
        path = box.root / "etc/systemd/system" / unit
        path.write_text(path.read_text().replace("/opt/edge-agent/current/", "/opt/edge-agent/venv/"))
    legacy_unit = box.unit()
    assert (await box.systemctl("start", "edge-agent.service")).returncode == 0
    orders = await box.push("legacy", 2)

    failed = await box.upgrade(box.prepared.faulty, EDGE_HEALTH_WAIT_S="1")  # it never turns healthy
    assert failed.returncode == 1 and "rolled back" in failed.stdout, failed.stdout
    assert box.unit() == legacy_unit and await box.installed_version() == "0.1.0"
    await wait_until(box.ready)
    assert set(orders) <= await box.order_ids()

    upgraded = await box.upgrade(box.prepared.new)
    assert upgraded.returncode == 0, upgraded.stdout
    assert await box.installed_version() == "0.2.0" and (opt / "venv/bin/edge").exists()
    await wait_until(box.ready)
    assert set(orders) <= await box.order_ids()


@pytest.mark.parametrize("left", ["empty", "cut-short"])
async def test_a_journal_a_power_cut_emptied_or_cut_short_does_not_stop_the_next_upgrade(box: Box, left: str) -> None:
    """upgrade.sh killed right after it first wrote its journal (step stop), and the journal then as a power cut leaves
    a file renamed into place unsynced: empty, or cut off inside a line. The next boot starts the agent; the next
    upgrade.sh neither rolls back by a journal that names nothing to roll back to nor dies on it (before: "unbound
    variable" at every run, until someone deleted the journal by hand): it says so, and completes the upgrade."""
    orders = await box.push("before", 2)
    process, output = await interrupt_upgrade_at(box, "stop", signal.SIGKILL)
    text = "".join(output)
    journal = box.root / "opt/edge-agent/upgrade/journal"
    whole = journal.read_text()
    assert process.returncode != 0 and whole.startswith("OLD_TARGET="), text
    journal.write_text("" if left == "empty" else whole[: whole.index("\n", whole.index("\n") + 1) + 7])
    started = await box.systemctl("start", "edge-agent.service")  # what the next boot does
    assert started.returncode == 0, started.stdout
    await wait_until(box.ready)

    rerun = await box.upgrade(box.prepared.new)
    assert rerun.returncode == 0, text + "\n--- rerun ---\n" + rerun.stdout
    assert "unbound variable" not in rerun.stdout and "empty or cut short" in rerun.stdout, rerun.stdout
    assert await box.installed_version() == "0.2.0"
    assert not journal.parent.exists()
    await wait_until(box.ready)
    assert set(orders) <= await box.order_ids()
    assert await box.schema() == LATEST + 1


async def test_a_rerun_after_a_power_cut_never_restores_the_backup_over_orders_the_box_took_since(box: Box) -> None:
    """upgrade.sh is cut off (SIGKILL, as a power cut) at step migrate, where its journal says the new version never
    ran. The next boot starts the box, and it takes orders. The next upgrade.sh finishes the rollback by that journal,
    and the new version's down part fails: the backup, taken before those orders, must not be restored over them
    (before: "restored ... (taken after the agent stopped)", and every order answered 201 since the boot was gone)."""
    source = copy_source(box.prepared.user.home / f"src-bad-down-{box.port}", version="0.2.2", changes=True)
    migration = source / "migrations" / f"{LATEST + 1:03d}_upgrade_probe.sql"
    migration.write_text(migration.read_text().replace("-- migrate:down\n", "-- migrate:down\nSELECT no_such();\n"))
    try:
        before = await box.push("before", 2)
        process, output = await interrupt_upgrade_at(box, "migrate", signal.SIGKILL, source)
        text = "".join(output)
        assert process.returncode != 0, text
        started = await box.systemctl("start", "edge-agent.service")  # what the next boot does
        assert started.returncode == 0, started.stdout
        await wait_until(box.ready)
        since = await box.push("since-the-boot", 3)  # answered 201 by the box after the power cut

        rerun = await box.upgrade(source)
        await box.systemctl("start", "edge-agent.service")
        await wait_until(box.ready)
        assert set(before + since) <= await box.order_ids(), text + "\n--- rerun ---\n" + rerun.stdout
        assert "restored" not in rerun.stdout and "ROLLBACK NOT POSSIBLE" in rerun.stdout, rerun.stdout
    finally:
        shutil.rmtree(source, ignore_errors=True)


async def test_the_old_checkouts_upgrade_sh_after_an_interrupted_upgrade_names_the_version_it_leaves_installed(
    box: Box,
) -> None:
    """upgrade.sh to 0.2.0 is cut off at step migrate (SIGKILL, as a power cut); the technician then runs the 0.1.0
    checkout's upgrade.sh, to stay on that version. It finishes the rollback by the journal and ends saying 0.1.0 is
    installed, as it is. Before, the journal's version of the interrupted upgrade stood for the checkout's in every
    later line: "edge-agent 0.2.0 is installed already" (chaos ops seed 631)."""
    process, output = await interrupt_upgrade_at(box, "migrate", signal.SIGKILL)
    assert process.returncode != 0, "".join(output)
    back = await box.upgrade(box.prepared.old)
    assert back.returncode == 0, back.stdout
    assert "rolled back" in back.stdout, back.stdout
    assert back.stdout.splitlines()[-1].endswith("edge-agent 0.1.0 is installed already"), back.stdout
    assert await box.installed_version() == "0.1.0"


async def test_an_older_checkouts_upgrade_sh_changes_nothing_and_never_leaves_a_box_that_cannot_start(
    box: Box,
) -> None:
    """The box runs the new version; the technician runs the previous checkout's upgrade.sh to go back (its release is
    kept "for a rollback"). That version cannot run on the newer database: upgrade.sh says so in one line before it
    stops anything, and the agent keeps running. Before: it stopped the agent, backed up, switched the program and
    failed at migrate, then restored its backup; a power cut at migrate left the old program on a database it refuses
    (exit 2 at every boot) until someone ran upgrade.sh again."""
    upgraded = await box.upgrade(box.prepared.new)
    assert upgraded.returncode == 0, upgraded.stdout
    orders = await box.push("on-the-new", 2)
    pid_file = box.prepared.user.home / "systemd/edge-agent.service.pid"
    agent = pid_file.read_text()
    older = await box.upgrade(box.prepared.old)
    assert older.returncode == 1, older.stdout
    assert older.stdout.count("\n") == 1, older.stdout
    assert "schema" in older.stdout and "nothing was changed" in older.stdout, older.stdout
    assert pid_file.read_text() == agent, "the agent was stopped"
    assert not (box.root / "opt/edge-agent/upgrade/journal").exists(), older.stdout
    assert await box.installed_version() == "0.2.0" and await box.ready()
    assert set(orders) <= await box.order_ids()
