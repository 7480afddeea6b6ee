"""A technician's day on a box, end to end: install.sh with a real system user, setup-notifications (the wizard and
the non-interactive form), the agent started as that user, and a fault mail over STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pexpect
import pytest

from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER, cert, server_tls, sink  # noqa: F401 (fixtures)
from tests.alerts.helpers import non_interactive, systemd_reads
from tests.helpers import BORROWED, EXAMPLE, OFFLINE_BUILD, REAL_VENV, fresh

REPO = Path(__file__).parents[2]
# The box's Python: the agent's user must be able to run it (a pyenv Python under /root is not).
BOX_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.slow(seconds=7),
    pytest.mark.skipif(os.geteuid() != 0, reason="creates a real system user: needs root (CI runs as root)"),
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("useradd", "userdel", "runuser")), reason="needs useradd and runuser"
    ),
    pytest.mark.skipif(not os.access(BOX_PYTHON, os.X_OK), reason=f"needs {BOX_PYTHON} (with venv) for the box"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent_user() -> Iterator[str]:
    """A unique throwaway user name; the user (made by install.sh) and its group are removed at the end."""
    name = f"edget{secrets.token_hex(4)}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, timeout=30)
    subprocess.run(["groupdel", name], capture_output=True, timeout=30)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Path]:
    """A throwaway root the agent's user can walk into (pytest's own tmp folders are root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="edge-box-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_") and k != "VIRTUAL_ENV"}
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=300, env={**full, **(env or {})}, input=stdin, cwd="/"
    )


def wizard(edge: Path, config: Path, sink_port: int, ca: Path) -> tuple[int, str]:
    """The wizard in a pseudo-terminal, answered like a technician with sudo: Custom, the relay, STARTTLS."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}, **BORROWED}
    child = pexpect.spawn(
        str(edge), ["setup-notifications", "--config", str(config)], env=env, encoding="utf-8", timeout=20
    )
    child.logfile_read = transcript = io.StringIO()
    for prompt, answer in [
        ("Choose 1-4: ", "4"),
        (r"SMTP server: ", "127.0.0.1"),
        (r"Port \[587\]: ", str(sink_port)),
        (r"\[starttls\]: ", ""),
        (r"CA certificate file.*: ", str(ca)),
        ("User name.*: ", SMTP_USER),
        (r"Password \(not shown\): ", SMTP_PASSWORD),
        (r"Sender address.*: ", ""),
        ("Recipients, comma-separated: ", "chef@store.test"),
        (r"\(de/en\) \[de\]: ", "en"),
        ("Did the test e-mail arrive.*: ", "y"),
    ]:
        child.expect(prompt)
        child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus or 0, transcript.getvalue()


@pytest.fixture
async def agent_process() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Agents started by the test; each is stopped (SIGTERM, then SIGKILL) at the end."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_install_setup_and_a_fault_mail_as_the_agents_user(
    box: Path,
    agent_user: str,
    sink: SmtpSink,  # noqa: F811 (the fixtures imported above)
    cert: tuple[Path, Path],  # noqa: F811
    agent_process: list[asyncio.subprocess.Process],
) -> None:
    """install.sh --prefix --user creates the user and a secrets file only it can read (with a random API token);
    the wizard and the non-interactive form, run as root, test the relay, send their test mails and keep the file the
    user's; the agent started as that user (environment as systemd's EnvironmentFile= parses it) comes up, takes an
    order, and its printer fault reaches the manager's inbox over STARTTLS with AUTH."""
    source = box / "src"
    for name in ("edge", "migrations", "systemd", "scripts", "docs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "edge.example.toml"):
        shutil.copy(REPO / name, source / name)
    root = box / "root"

    # 1. install, as root, creating the agent's user
    installed = await asyncio.to_thread(
        run,
        "bash",
        str(source / "scripts/install.sh"),
        "--prefix",
        str(root),
        "--user",
        agent_user,
        "--python",
        BOX_PYTHON,
        env=REAL_VENV,  # the technician's build: pip in the release, as on a box (other tests' builds skip it)
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    user = pwd.getpwnam(agent_user)
    config, secrets_file, data = root / "etc/edge/edge.toml", root / "etc/edge/edge.env", root / "var/lib/edge"
    for path, mode in ((secrets_file, 0o600), (config, 0o600), (data, 0o750)):
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (user.pw_uid, user.pw_gid, mode), path
    token = systemd_reads(secrets_file)["EDGE_API_TOKEN"]
    assert len(token) >= 32
    # a box installed by the old install.sh had a root-owned secrets file: a rerun gives it back to the agent's user
    os.chown(secrets_file, 0, 0)
    secrets_file.chmod(0o640)
    again = await asyncio.to_thread(
        run, "bash", str(source / "scripts/install.sh"), "--prefix", str(root), "--user", agent_user,
        "--python", BOX_PYTHON, env=OFFLINE_BUILD,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    info = secrets_file.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.pw_uid, 0o600)
    assert systemd_reads(secrets_file)["EDGE_API_TOKEN"] == token  # never replaced

    # the technician's config: this box's paths, a kitchen printer that is switched off, mails without group wait
    api_port, dead_port = free_port(), free_port()
    text = config.read_text(encoding="utf-8")
    for old, new in [
        ('data_dir = "/var/lib/edge"', f'data_dir = "{data}"'),
        ("port = 8765", f"port = {api_port}"),
        ('host = "10.0.0.21"\nport = 9100', f'host = "127.0.0.1"\nport = {dead_port}'),
        ('host = "10.0.0.22"\nport = 9100', f'host = "127.0.0.1"\nport = {dead_port}'),
        ("[alerts]", "[alerts]\ngroup_wait_s = 0\ncritical_group_wait_s = 0"),
    ]:
        assert old in text, old
        text = text.replace(old, new, 1)
    config.write_text(text, encoding="utf-8")
    ca = root / "etc/edge/relay-ca.pem"  # the relay's own CA, where the agent's user can read it
    shutil.copy(cert[0], ca)
    ca.chmod(0o644)

    # 2. the wizard, then the non-interactive form, both as root
    edge = root / "opt/edge-agent/current/bin/edge"
    status, transcript = await asyncio.wait_for(asyncio.to_thread(wizard, edge, config, sink.port, ca), timeout=60)
    assert status == 0, transcript
    assert "the agent's config loads" in transcript
    rollout = await asyncio.to_thread(
        run,
        str(edge),
        "setup-notifications",
        *non_interactive(config, sink, ca, to="chef@store.test,vize@store.test"),
        env=BORROWED,
        stdin=SMTP_PASSWORD + "\n",
    )
    assert rollout.returncode == 0, rollout.stdout + rollout.stderr
    assert len(sink.messages) == 2  # one test mail each
    info = secrets_file.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (user.pw_uid, 0o600)
    assert not (data / "edge.db").exists()  # nothing root-owned in the data directory

    # 3. the agent as its user; systemd would hand it the secrets file's variables (EnvironmentFile=)
    unit_env = systemd_reads(secrets_file)
    assert unit_env["EDGE_SMTP_PASSWORD"] == SMTP_PASSWORD and unit_env["EDGE_API_TOKEN"] == token
    env = [f"{k}={v}" for k, v in {**BORROWED, **unit_env, "PATH": "/usr/bin:/bin"}.items()]
    proc = await asyncio.create_subprocess_exec(
        "runuser", "-u", agent_user, "--", "env", "-i", *env, str(edge), "run", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    agent_process.append(proc)
    base = f"http://127.0.0.1:{api_port}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(100):
            assert proc.returncode is None, (await proc.stderr.read()).decode() if proc.stderr else ""
            try:
                async with http.get(f"{base}/ready") as answer:
                    if answer.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the agent did not become ready within 20 s")
        assert (data / "edge.db").stat().st_uid == user.pw_uid
        # the health-check timer's command, as the agent's user, reads the same secrets file
        health = await asyncio.to_thread(
            run, "runuser", "-u", agent_user, "--", "env", "-i", *env, str(edge), "health", "--alert",
            "--config", str(config),
        )  # fmt: skip
        assert health.returncode == 0 and health.stdout.startswith("healthy"), health.stdout + health.stderr

        # 4. an order for the switched-off kitchen printer: the manager gets the fault mail
        order = fresh(json.loads(json.dumps(EXAMPLE)))
        async with http.post(f"{base}/api/v1/orders", json=order) as answer:
            assert answer.status == 201, await answer.text()
        mails = await sink.wait_for(3, timeout=20)
    fault = mails[2]
    assert "ALERT (critical)" in str(fault["Subject"]) and "unreachable" in str(fault["Subject"])
    assert sorted(sink.envelopes[2].rcpt_tos) == ["chef@store.test", "vize@store.test"]
    assert sink.failed_logins == 0


def _box_of(box: Path, agent_user: str) -> tuple[Path, Path, pwd.struct_passwd]:
    """The agent's user made, its data directory, a config naming it and a secrets file (root's, 0600)."""
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", agent_user],
        check=True,
        timeout=30,
    )
    user = pwd.getpwnam(agent_user)
    data = box / "data"
    data.mkdir()
    os.chown(data, user.pw_uid, user.pw_gid)
    config = box / "edge.toml"
    config.write_text(f'[agent]\nstore_id = "berlin-01"\ndata_dir = "{data}"\n', encoding="utf-8")
    config.chmod(0o644)
    secrets_file = box / "edge.env"
    secrets_file.write_text('EDGE_API_TOKEN="tok-0123456789abcdef"\n', encoding="utf-8")
    secrets_file.chmod(0o600)
    return config, secrets_file, user


def test_secrets_file_the_agents_user_cannot_read_is_one_line(box: Path, agent_user: str) -> None:
    """A secrets file left root's (the old wizard's habit) stops the agent's user with one line naming the chown."""
    config, secrets_file, _user = _box_of(box, agent_user)
    checked = run(
        "runuser",
        "-u",
        agent_user,
        "--",
        "env",
        f"PYTHONPATH={REPO}:{BORROWED['PYTHONPATH']}",
        BOX_PYTHON,
        "-m",
        "edge",
        "config",
        "check",
        "--config",
        str(config),
    )
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert checked.stderr.strip() == (
        f"edge: config {secrets_file}: belongs to root (mode 0600), so user {agent_user} cannot read it;"
        f" fix: chown {agent_user}: {secrets_file} (it must belong to the agent's user)"
    )


def test_a_technician_without_sudo_is_told_to_use_sudo_not_to_chown_the_agents_secrets(
    box: Path, agent_user: str
) -> None:
    """The secrets file is right (the agent's user's, 0600); the technician ran `edge doctor` as themself, without the
    documented sudo. The line told them to chown the file to themself, which would stop the agent reading its secrets
    at its next start (the technician probe). It tells them to run it with sudo."""
    config, secrets_file, user = _box_of(box, agent_user)
    os.chown(secrets_file, user.pw_uid, user.pw_gid)
    technician = pwd.getpwuid(65534).pw_name  # nobody: another user than the agent's
    env = f"PYTHONPATH={REPO}:{BORROWED['PYTHONPATH']}"
    checked = run(
        "runuser", "-u", technician, "--", "env", env, BOX_PYTHON, "-m", "edge", "doctor", "--config", str(config)
    )
    assert checked.returncode == 2, checked.stdout + checked.stderr
    said = checked.stderr.strip()
    assert f"belongs to {agent_user}" in said and "run it with sudo" in said and "chown" not in said, said
