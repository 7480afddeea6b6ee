"""Files and locks under the data directory: the agent.lock file, `edge migrate` under a running agent."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import venv
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

import edge as edge_package
from edge.app import Agent
from edge.sim.orders import make_order
from edge.sim.ports import free_port
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from edge.store import migrations
from tests.appliance.conftest import SystemUser
from tests.helpers import BORROWED, api_client, cli_config, db_rows


async def edge(*args: str, user: SystemUser | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m edge ARGS` as a child process (the way a technician or a script runs it), as root; with ``user``,
    on an interpreter that user can read too."""
    python, env = (user.python, user.env) if user else (sys.executable, None)
    process = await asyncio.create_subprocess_exec(
        python, "-m", "edge", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


async def run_agent_once(config: Path, port: int, user: SystemUser) -> None:
    """`edge run` started as root until /ready answers 200, then SIGTERM, as systemd would stop it."""
    process = await asyncio.create_subprocess_exec(
        user.python, "-m", "edge", "run", "--config", str(config), stderr=subprocess.PIPE, env=user.env
    )
    try:
        async with api_client(port, token=None, timeout=aiohttp.ClientTimeout(total=1)) as session:
            for _ in range(200):
                try:
                    async with session.get("/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if process.returncode is not None:
                    break  # it exited: its own words follow
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("edge run not ready within 10 s")
    finally:
        if process.returncode is None:
            process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()


async def schema_version(db: Path) -> int:
    return int((await db_rows(db, "PRAGMA user_version"))[0][0])


async def test_restore_never_follows_a_symlinked_lock_file(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """If agent.lock is a symlink (the agent's user can make one in its own data directory), `edge restore` refuses
    with one line naming it, and the file it points at keeps its content: the lock is never opened through a link."""
    agent = await make_agent()
    backup = tmp_path / "backup.db"
    with sqlite3.connect(agent.settings.agent.db_path) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    await agent.stop()
    data_dir = agent.settings.agent.data_dir
    victim = tmp_path / "passwd-like"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (data_dir / "agent.lock").unlink()
    (data_dir / "agent.lock").symlink_to(victim)
    config = cli_config(tmp_path / "edge.toml", data_dir, printers)
    restored = await edge("restore", str(backup), "--config", str(config))
    assert restored.returncode == 1, restored.stdout + restored.stderr
    assert victim.read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert "agent.lock" in restored.stderr and "symlink" in restored.stderr
    assert len(restored.stderr.strip().splitlines()) == 1, restored.stderr


async def test_lock_file_is_never_truncated(tmp_path: Path, make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """Taking and dropping the lock overwrites only its own holder line and truncates nothing, so even a lock file
    that is a hard link to another file could only ever have its first line overwritten, never be emptied."""
    agent = await make_agent()
    lock = agent.settings.agent.data_dir / "agent.lock"
    assert f"agent pid {os.getpid()}" in lock.read_text()
    await agent.stop()
    tail = "\n" + "keep me\n" * 50
    lock.write_text(lock.read_text() + tail)
    again = await make_agent()
    await again.stop()
    assert lock.read_text().endswith(tail)


async def test_migrate_refuses_under_a_running_agent(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """`edge migrate --to N` while the agent runs is refused with one line naming the agent; the schema stays."""
    agent = await make_agent()
    db = agent.settings.agent.db_path
    latest = migrations.latest_version(migrations.load_migrations())
    config = cli_config(tmp_path / "edge.toml", agent.settings.agent.data_dir, printers)
    down = await edge("migrate", "--to", str(latest - 1), "--config", str(config))
    assert down.returncode == 1, down.stdout + down.stderr
    assert f"agent pid {os.getpid()}" in down.stderr and len(down.stderr.strip().splitlines()) == 1, down.stderr
    assert await schema_version(db) == latest
    await agent.stop()
    down = await edge("migrate", "--to", str(latest - 1), "--config", str(config))
    assert down.returncode == 0, down.stderr
    assert await schema_version(db) == latest - 1


async def test_a_step_down_takes_a_backup_first_and_schema_0_is_refused(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """`edge migrate --to 0` (a typo for 10) dropped every order, job and remembered order id, exit 0, no backup: the
    till's retry of an order already printed then printed it a second time unmarked (the upgrade79 probe, M1). Schema
    0 is refused in one line, nothing touched; a step down takes a backup first and names it, so what its down parts
    drop can be had back."""
    agent = await make_agent()
    async with api_client(agent) as api:
        assert (await api.post("/api/v1/orders", json=make_order(1, print_receipt=False))).status == 201
    await agent.stop()
    db = agent.settings.agent.db_path
    latest = migrations.latest_version(migrations.load_migrations())
    config = cli_config(tmp_path / "edge.toml", agent.settings.agent.data_dir, printers)
    zero = await edge("migrate", "--to", "0", "--config", str(config))
    assert zero.returncode == 2 and "--to 0" in zero.stderr and len(zero.stderr.strip().splitlines()) == 1, zero.stderr
    assert await schema_version(db) == latest and len(await orders_in(db)) == 1
    backups = agent.settings.agent.data_dir / "backups"
    backups.write_text("")  # a file where the folder goes: the backup cannot be written, so the step is not taken
    refused = await edge("migrate", "--to", str(latest - 1), "--config", str(config))
    assert refused.returncode == 1 and "--no-backup" in refused.stderr, refused.stderr
    assert await schema_version(db) == latest
    backups.unlink()
    down = await edge("migrate", "--to", str(latest - 1), "--config", str(config))
    assert down.returncode == 0, down.stderr
    [backup] = backups.glob("edge-*.db")
    assert str(backup) in down.stdout, down.stdout
    assert await schema_version(backup) == latest and len(await orders_in(backup)) == 1


async def test_a_step_down_on_a_newer_releases_database_is_refused_before_any_backup_is_written(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """`edge migrate --to N` on a database a newer release wrote (a schema above this release's): refused, exit 2, in
    one line saying the newer release's own `edge` must take the step (run from a release install.sh laid out, naming
    the others kept beside it), and nothing written. Before stop 82 it first
    wrote and named a `-before-migrate` backup, then refused: each try pushed the oldest real backup out of
    `backup.keep`, and the refusal's advice, run with this `edge`, was the same command (the upgrade82 probe, F1)."""
    agent = await make_agent()
    await agent.stop()
    db = agent.settings.agent.db_path
    known = migrations.latest_version(migrations.load_migrations())
    config = cli_config(tmp_path / "edge.toml", agent.settings.agent.data_dir, printers)
    assert (await edge("backup", "--config", str(config))).returncode == 0
    backups = agent.settings.agent.data_dir / "backups"
    nightly = sorted(backups.iterdir())

    def stamp_newer() -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE next_release_thing (x)")
            conn.execute(f"PRAGMA user_version = {known + 1}")
        conn.close()

    await asyncio.to_thread(stamp_newer)
    for _ in range(2):
        refused = await edge("migrate", "--to", str(known - 3), "--config", str(config))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stdout == "", refused.stdout
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1, line
        assert f"schema {known + 1}" in line and f"up to schema {known}" in line, line
        assert f"newer release's own `edge migrate --to {known - 3}`" in line and "nothing written" in line, line
        assert sorted(backups.iterdir()) == nightly
    assert await schema_version(db) == known + 1
    # Run from a release as install.sh lays them out: the line names the other releases kept beside it.
    releases = tmp_path / "opt" / "releases"
    await asyncio.to_thread(venv.create, releases / "0.1.0-this", with_pip=False)
    (releases / "0.2.0-newer" / "bin").mkdir(parents=True)
    (releases / "0.2.0-newer" / "bin" / "edge").touch()
    checkout = str(Path(edge_package.__file__).parents[1])
    process = await asyncio.create_subprocess_exec(
        str(releases / "0.1.0-this" / "bin" / "python"),
        *("-m", "edge", "migrate", "--to", str(known - 3), "--config", str(config)),
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{checkout}:{BORROWED['PYTHONPATH']}"},
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2, err.decode()
    assert f"besides this one: {releases / '0.2.0-newer' / 'bin' / 'edge'})" in err.decode(), err.decode()
    assert sorted(backups.iterdir()) == nightly


async def orders_in(db: Path) -> list[tuple[str]]:
    def read() -> list[tuple[str]]:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT id FROM orders").fetchall()

    return await asyncio.to_thread(read)


async def test_restore_under_a_running_agent_says_in_one_line_to_stop_it_first(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> None:
    """`edge restore` (and `edge migrate`) while the agent runs: one line naming the agent and what to do about it
    (before: "data directory … is in use by agent pid N", and the technician was left to guess), the health timer
    stopped with it (named the agent only, the timer mailed the manager "agent not running" meanwhile: the upgrade79
    probe, H1)."""
    agent = await make_agent()
    config = cli_config(tmp_path / "edge.toml", agent.settings.agent.data_dir, printers)
    backed_up = await edge("backup", "--config", str(config))
    assert backed_up.returncode == 0, backed_up.stderr
    backup = backed_up.stdout.split("backup written: ", 1)[1].split()[0]
    for argv in (("restore", backup), ("migrate",)):
        refused = await edge(*argv, "--config", str(config))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        line = refused.stderr.strip()
        assert len(line.splitlines()) == 1 and f"agent pid {os.getpid()}" in line, line
        assert "stop it first (sudo systemctl stop edge-health-check.timer edge-agent), then run" in line, line
        assert "start both after (sudo systemctl start edge-agent edge-health-check.timer)" in line, line
    await agent.stop()


def foreign_files(data_dir: Path, user: SystemUser) -> list[str]:
    """Everything under data_dir (itself included) that is not owned by the agent's user and group."""
    found = [data_dir, *sorted(data_dir.rglob("*"))]
    return [
        f"{p} ({p.lstat().st_uid}:{p.lstat().st_gid})"
        for p in found
        if (p.lstat().st_uid, p.lstat().st_gid) != (user.uid, user.gid)
    ]


def agent_data_dir(user: SystemUser) -> Path:
    """data_dir as install.sh leaves it: owned by the agent's user, 0750."""
    data_dir = user.home / "data"
    data_dir.mkdir(mode=0o750)
    os.chown(data_dir, user.uid, user.gid)
    return data_dir


async def test_root_run_commands_leave_every_file_to_the_agents_user(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """`edge migrate`, `backup`, `alerts list`, `health --alert`, `restore` and `run` started as root write under the
    data directory as the agent's user (its owner) and say so: afterwards every file there is the user's, and the
    nightly backup, which runs as that user, still works."""
    data_dir = agent_data_dir(system_user)
    port = free_port()
    config = cli_config(system_user.home / "edge.toml", data_dir, printers, port=port)
    os.chown(config, system_user.uid, system_user.gid)  # install.sh: the agent reads its config
    migrated = await edge("migrate", "--config", str(config), user=system_user)
    assert migrated.returncode == 0, migrated.stderr
    backup = await edge("backup", "--config", str(config), user=system_user)
    assert backup.returncode == 0, backup.stderr
    listed = await edge("alerts", "list", "--config", str(config), user=system_user)
    assert listed.returncode == 0, listed.stderr
    health = await edge("health", "--alert", "--config", str(config), user=system_user)
    assert health.returncode == 1 and (data_dir / "health-state.json").exists(), health.stderr
    restored = await edge("restore", backup.stdout.split(": ", 1)[1].strip(), "--config", str(config), user=system_user)
    assert restored.returncode == 0, restored.stderr
    await run_agent_once(config, port, system_user)
    assert foreign_files(data_dir, system_user) == []
    assert f"running as {system_user.name}" in migrated.stderr
    nightly = await asyncio.to_thread(
        subprocess.run,
        system_user.command(system_user.python, "-m", "edge", "backup", "--config", str(config)),
        env=system_user.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nightly.returncode == 0, nightly.stderr
    assert foreign_files(data_dir, system_user) == []


async def run_as(user: SystemUser, *args: str) -> subprocess.CompletedProcess[str]:
    """`edge ARGS` as the agent's user (what the nightly backup timer does)."""
    return await asyncio.to_thread(
        subprocess.run,
        user.command(user.python, "-m", "edge", *args),
        env=user.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_root_run_command_gives_back_what_old_tools_left_to_root(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """A box where an older upgrade left backups/ to root (the nightly backup as the agent's user then fails): the
    next root-run `edge` command gives every root-owned file there back and says so; links are left alone, so a
    link the user planted to a file of root's never hands that file over."""
    data_dir = agent_data_dir(system_user)
    config = cli_config(system_user.home / "edge.toml", data_dir, printers)
    os.chown(config, system_user.uid, system_user.gid)
    assert (await run_as(system_user, "migrate", "--config", str(config))).returncode == 0
    (data_dir / "backups").mkdir()  # as root, like the old upgrade.sh's `edge backup`
    (data_dir / "backups" / "edge-20250101T000000000Z.db").write_bytes(b"")
    victim = system_user.home / "root-only"
    victim.write_text("root's\n")
    victim.chmod(0o600)
    (data_dir / "planted-symlink").symlink_to(victim)
    os.link(victim, data_dir / "planted-hardlink")  # (a user can only do this where fs.protected_hardlinks = 0)
    nightly = await run_as(system_user, "backup", "--config", str(config))
    assert nightly.returncode == 1, nightly.stderr
    assert f"{data_dir / 'backups'} is not writable by user {system_user.name}: chown" in nightly.stderr, nightly.stderr
    assert len(nightly.stderr.strip().splitlines()) == 1, nightly.stderr  # one line, not a traceback
    checked = await edge("config", "check", "--config", str(config), user=system_user)
    assert checked.returncode == 0, checked.stderr
    assert f"gave 2 root-owned file(s) under {data_dir} back to {system_user.name}" in checked.stderr
    assert (victim.stat().st_uid, victim.stat().st_mode & 0o777) == (0, 0o600)
    assert (await run_as(system_user, "backup", "--config", str(config))).returncode == 0


async def test_setup_notifications_run_as_root_leaves_no_root_file_in_the_data_directory(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """`edge setup-notifications` run by the technician as root leaves nothing of root's in the data directory (it no
    longer migrates the database: the agent does that when it starts, as its own user)."""
    data_dir = agent_data_dir(system_user)
    config = cli_config(system_user.home / "edge.toml", data_dir, printers)
    sink = SmtpSink()
    await sink.start()
    try:
        setup = await edge(
            "setup-notifications",
            "--non-interactive",
            "--config",
            str(config),
            "--env-file",
            str(system_user.home / "edge.env"),
            "--host",
            "127.0.0.1",
            "--port",
            str(sink.port),
            "--security",
            "none",
            "--from",
            "edge@store.test",
            "--to",
            "chef@store.test",
            "--no-test-mail",
            user=system_user,
        )
    finally:
        await sink.stop()
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert foreign_files(data_dir, system_user) == []


async def test_root_checks_of_a_wiped_data_directory_leave_it_for_the_agents_user_to_make(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """The data directory wiped by hand (or a new agent.data_dir), then `sudo edge config check` and `sudo edge
    doctor`: they write nothing there, so the agent's next start makes it as its own user. Before, the printing check's
    compiled templates made it root's, and the agent then refused to start (exit 2) blaming edge.env."""
    state = system_user.home / "state"  # what systemd's StateDirectory= (or a disk mounted for the agent) gives it
    state.mkdir()
    os.chown(state, system_user.uid, system_user.gid)
    data_dir = state / "edge"
    config = cli_config(system_user.home / "edge.toml", data_dir, printers)
    os.chown(config, system_user.uid, system_user.gid)  # install.sh: the agent reads its config
    checked = await edge("config", "check", "--config", str(config), user=system_user)
    assert checked.returncode == 0, checked.stderr
    doctor = await edge("doctor", "--config", str(config), user=system_user)
    assert "FAIL  config" not in doctor.stdout, doctor.stdout + doctor.stderr
    assert not data_dir.exists(), f"root's check made {foreign_files(data_dir, system_user)}"
    started = await run_as(system_user, "migrate", "--config", str(config))
    assert started.returncode == 0, started.stderr
    assert foreign_files(data_dir, system_user) == []


async def test_a_data_directory_left_to_root_is_named_with_its_fix_not_edge_env(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """A data directory root owns while the agent runs as its user (made by an older root-run check): the agent's
    refusal names the directory and its chown, not the secrets file (whose suggested chown went round in a loop)."""
    data_dir = agent_data_dir(system_user)
    os.chown(data_dir, 0, 0)
    config = cli_config(system_user.home / "edge.toml", data_dir, printers)
    os.chown(config, system_user.uid, system_user.gid)
    secrets_file = system_user.home / "edge.env"
    secrets_file.write_text('EDGE_ALERT_TO="chef@store.test"\n', encoding="utf-8")
    secrets_file.chmod(0o600)
    os.chown(secrets_file, system_user.uid, system_user.gid)
    started = await run_as(system_user, "run", "--config", str(config))
    assert started.returncode == 2, started.stderr
    assert started.stderr.strip() == (
        f"edge: config agent.data_dir: {data_dir} belongs to root, so the agent's user {system_user.name} cannot write"
        f" there; fix: chown -R {system_user.name}: {data_dir}"
    )


async def test_a_data_directory_the_agents_user_cannot_make_is_named_with_its_fix(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """agent.data_dir set to a new folder under one root owns (a second disk mounted by root, /srv): the agent's user
    cannot make it. One line naming the key, the folder it could not write and what to run, exit 2 (a person must act:
    systemd does not restart it in a loop). Before stop 71: exit 1, "edge: [Errno 13] Permission denied: '…'" (the
    tech71 probe's note after its fix)."""
    parent = system_user.home / "srv"
    parent.mkdir(mode=0o755)  # root's
    data_dir = parent / "edge"
    config = cli_config(system_user.home / "edge.toml", data_dir, printers)
    os.chown(config, system_user.uid, system_user.gid)
    started = await run_as(system_user, "run", "--config", str(config))
    user = system_user.name
    assert (started.returncode, started.stderr.strip()) == (
        2,
        f"edge: config agent.data_dir: {data_dir} cannot be made: user {user} may not write in {parent};"
        f" fix (as root): mkdir -p {data_dir} && chown {user}: {data_dir}",
    ), started.stderr
    assert not data_dir.exists()


async def test_a_config_the_agents_user_cannot_read_fails_the_root_check_and_doctor_naming_the_fix(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """edge.toml moved into place by root with mode 0600: `sudo edge config check` and `sudo edge doctor` refuse it
    as the agent would (they said ok), and the agent's own refusal names the fix, not a bare Permission denied."""
    data_dir = agent_data_dir(system_user)
    config = cli_config(system_user.home / "edge.toml", data_dir, printers)  # root's, 0600
    user = system_user.name
    refusal = (
        f"edge: config {config}: belongs to root (mode 0600), but the agent's user (owner of {data_dir}) is {user},"
        f" who cannot read it; fix: chown {user}: {config}"
    )
    checked = await edge("config", "check", "--config", str(config), user=system_user)
    assert (checked.returncode, checked.stderr.strip()) == (2, refusal), checked.stdout + checked.stderr
    doctor = await edge("doctor", "--config", str(config), user=system_user)
    assert (doctor.returncode, doctor.stderr.strip()) == (2, refusal), doctor.stdout + doctor.stderr
    started = await run_as(system_user, "run", "--config", str(config))
    assert (started.returncode, started.stderr.strip()) == (
        2,
        f"edge: config --config: {config} belongs to root (mode 0600), so user {user} cannot read it;"
        f" fix: chown {user}: {config} (it must belong to the agent's user)",
    ), started.stderr
    os.chown(config, system_user.uid, system_user.gid)
    assert (await edge("config", "check", "--config", str(config), user=system_user)).returncode == 0


async def test_a_database_put_back_by_root_stops_the_start_and_fails_doctor_naming_its_owner_and_the_fix(
    system_user: SystemUser, printers: dict[str, SimPrinter]
) -> None:
    """The agent's database made by its user, then put back by root as a technician does by hand (`sudo cp
    backup.db edge.db`: root's, mode 0644). `edge run` as the agent's user exits 2 (systemd does not restart it in
    vain) and `edge doctor` fails, both with one line naming the file, its owner and mode, and the chown that mends it.
    Before stop 83 the start exited 1 "attempt to write a readonly database" (read like the read-only card), restarted
    five times in vain, and doctor said the database was OK (the storage83 probe, F6)."""
    data_dir = agent_data_dir(system_user)
    config = cli_config(system_user.home / "edge.toml", data_dir, printers, port=free_port())
    os.chown(config, system_user.uid, system_user.gid)
    assert (await run_as(system_user, "migrate", "--config", str(config))).returncode == 0
    db = data_dir / "edge.db"
    os.chown(db, 0, 0)
    db.chmod(0o644)
    said = (
        f"{db} belongs to root (mode 0644), so user {system_user.name} cannot write it;"
        f" fix: chown {system_user.name}: {db}*"
    )
    started = await run_as(system_user, "run", "--config", str(config))
    assert started.returncode == 2 and said in started.stderr, started.stderr
    doctor = await run_as(system_user, "doctor", "--config", str(config))
    failed = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL  database owner")]
    assert len(failed) == 1 and failed[0].endswith(said), doctor.stdout
