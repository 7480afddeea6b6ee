"""setup-notifications driven through a pseudo-terminal (pexpect) against a real SMTP server with STARTTLS and AUTH."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import resource
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest
from dotenv import dotenv_values

from edge.config import load_settings
from edge.sim.powercut import PowerCut
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, SMTP_USER
from tests.alerts.helpers import non_interactive

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "setup-notifications.py"
OLD_ENV = "# keys of other parts stay\nEDGE_API_TOKEN='tok-0123456789abcdef'\nEDGE_SMTP_HOST=old.example.com\n"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def write_config(tmp_path: Path, old_env: str = OLD_ENV) -> Path:
    """The agent's config and its secrets file edge.env beside it (mode 0600, as install.sh leaves it)."""
    config = tmp_path / "edge.toml"
    config.write_text(f'[agent]\nstore_id = "berlin-01"\ndata_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    (tmp_path / "edge.env").write_text(old_env, encoding="utf-8")
    (tmp_path / "edge.env").chmod(0o600)
    return config


async def run_script(*args: str, env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str]:
    """scripts/setup-notifications.py in a subprocess: (exit code, everything it printed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=40)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def drive(config: Path, port: int, ca_file: Path, password: str, sink: SmtpSink) -> tuple[str, int]:
    """Answers the wizard like a technician: Custom provider, the test server, STARTTLS with its CA."""
    child = pexpect.spawn(
        sys.executable,
        [str(SCRIPT), "--config", str(config)],
        env=clean_env(),
        encoding="utf-8",
        timeout=10,
        cwd=str(config.parent),
    )
    child.logfile_read = transcript = io.StringIO()
    child.expect("Choose 1-4: ")
    child.sendline("4")
    child.expect(r"SMTP server \[old.example.com\]: ")  # the current .env value is offered as default
    child.sendline("127.0.0.1")
    child.expect(r"Port \[587\]: ")
    child.sendline(str(port))
    child.expect(r"\[starttls\]: ")
    child.sendline("")
    child.expect(r"CA certificate file.*: ")
    child.sendline(str(ca_file))
    child.expect("User name.*: ")
    child.sendline(SMTP_USER)
    child.expect("Password \\(not shown\\): ")
    child.sendline(password)
    child.expect(r"Sender address \[edge@store.test\]: ")
    child.sendline("")
    child.expect("Recipients, comma-separated: ")
    child.sendline("chef@store.test, vize@store.test")
    child.expect(r"\(de/en\) \[de\]: ")
    child.sendline("en")
    while (asked := child.expect(["Did the test e-mail arrive.*: ", r"Password \(not shown\): ", pexpect.EOF])) == 1:
        child.sendline(password)  # a refused password is asked again: the same typed each time
    if asked == 0:
        child.sendline("y" if sink.messages else "n")
        child.expect(pexpect.EOF)
    child.close()
    return transcript.getvalue(), child.exitstatus


async def test_setup_custom_provider_end_to_end(sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """Custom provider at the test server: login checked, test mail received, edge.env beside the config written 0600
    with old keys kept and a backup; the data directory is left to the agent (no root-owned database)."""
    config = write_config(tmp_path)
    output, status = await asyncio.wait_for(
        asyncio.to_thread(drive, config, sink.port, cert[0], SMTP_PASSWORD, sink), timeout=40
    )
    assert status == 0, output
    [mail] = sink.messages
    assert "TEST" in str(mail["Subject"]) and "berlin-01" in str(mail["Subject"])
    assert sorted(sink.envelopes[0].rcpt_tos) == ["chef@store.test", "vize@store.test"]
    env_file = tmp_path / "edge.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert env_file.read_text(encoding="utf-8").startswith(
        "# keys of other parts stay\nEDGE_API_TOKEN='tok-0123456789abcdef'\n"
    )
    values = dotenv_values(env_file, interpolate=False)
    assert (
        values["EDGE_SMTP_HOST"] == "127.0.0.1"
        and values["EDGE_SMTP_PORT"] == str(sink.port)
        and values["EDGE_SMTP_SECURITY"] == "starttls"
    )
    assert (
        values["EDGE_SMTP_PASSWORD"] == SMTP_PASSWORD and values["EDGE_ALERT_TO"] == "chef@store.test,vize@store.test"
    )
    assert (tmp_path / "edge.env.bak").read_text(encoding="utf-8") == OLD_ENV
    assert stat.S_IMODE((tmp_path / "edge.env.bak").stat().st_mode) == 0o600
    settings = load_settings(config, environ={})
    assert (
        settings.smtp.host == "127.0.0.1"
        and settings.smtp.password.get() == SMTP_PASSWORD
        and settings.alerts.to == ["chef@store.test", "vize@store.test"]
    )
    assert settings.agent.language == "en" and settings.api.token.get() == "tok-0123456789abcdef"
    assert not (tmp_path / "data").exists()  # run as root, a database made here would be root's (issue 16.13)
    assert "the agent's config loads" in output
    assert SMTP_PASSWORD not in output  # hidden input, never echoed
    # The dialogue is the technician's: no log line of the mailer in the middle of it (before stop 63, tech probe
    # finding 8: a coloured "alert_mail_delivered accepted=1 ..." between two questions).
    assert "alert_mail_delivered" not in output and "\x1b[" not in output, output


async def test_setup_wrong_password_writes_nothing(sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """A wrong password, typed each of the three times it is asked, ends the wizard with a plain message; edge.env is
    untouched and no backup appears."""
    config = write_config(tmp_path)
    output, status = await asyncio.wait_for(
        asyncio.to_thread(drive, config, sink.port, cert[0], "not-the-password", sink), timeout=40
    )
    assert status == 1
    assert "refused the login" in output and "535 5.7.8" in output and "Nothing was written." in output
    assert (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV
    assert not (tmp_path / "edge.env.bak").exists()
    assert sink.messages == [] and output.count("Password (not shown): ") == 3 and sink.failed_logins == 3


async def test_setup_non_interactive_dry_run(sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """Non-interactive with flags and EDGE_SMTP_PASSWORD from the environment; --dry-run tests and shows, writes
    nothing, hides the password."""
    config = write_config(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *non_interactive(config, sink, cert[0], "--dry-run", password_stdin=False),
        env=clean_env(EDGE_SMTP_PASSWORD=SMTP_PASSWORD),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=40)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "EDGE_SMTP_PASSWORD=********" in text and SMTP_PASSWORD not in text
    assert len(sink.messages) == 1
    assert (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV


async def test_gmail_preset_asks_for_app_password_and_checks_arrival(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """The Gmail preset fills smtp.gmail.com:587 STARTTLS and says an app password is needed; answering 'n' to "did
    it arrive" writes nothing."""
    from edge.alerts.setup import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    # The preset's host is overridden to reach the test server; everything else comes from the preset and the answers.
    args = parser.parse_args(
        [
            "--env-file",
            str(tmp_path / "edge.env"),
            "--provider",
            "gmail",
            "--host",
            "127.0.0.1",
            "--port",
            str(sink.port),
            "--ca-file",
            str(cert[0]),
        ]
    )
    answers = iter([SMTP_USER, "", "chef@store.test", "de", "n"])
    said: list[str] = []
    status = await asyncio.wait_for(
        asyncio.to_thread(run, args, ask=lambda _: next(answers), ask_secret=lambda _: SMTP_PASSWORD, say=said.append),
        timeout=30,
    )
    assert status == 1
    assert f"Gmail: 127.0.0.1, port {sink.port}, STARTTLS" in said
    assert any("app password" in line for line in said)
    assert len(sink.messages) == 1 and not (tmp_path / "edge.env").exists()


async def test_non_interactive_password_stdin_sends_and_writes(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """The fleet form: flags plus the password on stdin; it tests login, sends the test mail to every recipient and
    writes edge.env beside the config; exit 0 only because the mail was accepted."""
    config = write_config(tmp_path)
    code, out = await run_script(
        *non_interactive(config, sink, cert[0], to="chef@store.test,vize@store.test"),
        env=clean_env(),
        stdin=f"{SMTP_PASSWORD}\n".encode(),
    )
    assert code == 0, out
    assert sorted(sink.envelopes[0].rcpt_tos) == ["chef@store.test", "vize@store.test"]
    settings = load_settings(config, environ={})
    assert settings.smtp.password.get() == SMTP_PASSWORD and settings.smtp.port == sink.port
    assert settings.alerts.to == ["chef@store.test", "vize@store.test"]
    assert SMTP_PASSWORD not in out


async def test_non_interactive_refusal_exits_non_zero_and_writes_nothing(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """A login the server refuses, or no password at all, is a non-zero exit with the reason; edge.env is untouched."""
    config = write_config(tmp_path)
    code, out = await run_script(*non_interactive(config, sink, cert[0]), env=clean_env(), stdin=b"wrong\n")
    assert code == 1 and "refused the login" in out
    code, out = await run_script(*non_interactive(config, sink, cert[0]), env=clean_env(), stdin=b"")
    assert code == 2 and "no password" in out and "--password-stdin" in out
    assert sink.messages == []
    assert (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV


@pytest.mark.parametrize("to", ["chef@store.test; vize@store.test", "chef@store.test vize@store.test"])
async def test_recipients_separated_by_semicolon_or_space_are_refused(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path, to: str
) -> None:
    """Recipients separated by ; or blanks are refused before anything is sent or written: the wizard never claims to
    have mailed addresses it could not read."""
    config = write_config(tmp_path)
    code, out = await run_script(
        *non_interactive(config, sink, cert[0], to=to), env=clean_env(), stdin=f"{SMTP_PASSWORD}\n".encode()
    )
    assert code == 2, out
    assert "separate recipients with commas" in out
    assert sink.messages == [] and (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV


@pytest.mark.parametrize("port", ["587250", "0"])
async def test_a_port_no_server_can_have_is_refused_in_one_line(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path, port: str
) -> None:
    """A port typed with a digit too many (or 0): exit 2, one line naming the range, nothing sent or written. Before:
    a traceback ending in OverflowError, exit 1."""
    config = write_config(tmp_path)
    flags = non_interactive(config, sink, cert[0])
    flags[flags.index("--port") + 1] = port
    code, out = await run_script(*flags, env=clean_env(), stdin=f"{SMTP_PASSWORD}\n".encode())
    assert code == 2 and "Traceback" not in out, out
    assert "1 and 65535" in out and port in out, out
    assert sink.messages == [] and (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV


async def test_a_mistyped_config_path_is_refused_before_anything_is_sent_or_written(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """--config naming a file that is not there (egde/ for edge/): exit 2 naming it, nothing sent, no folder or
    secrets file made. Before: the test mail went, egde/edge.env was written with the password, and the exit was 0
    (a fleet script read success), only the last line saying the agent would not start."""
    write_config(tmp_path)
    typo = tmp_path / "egde" / "edge.toml"
    code, out = await run_script(
        *non_interactive(typo, sink, cert[0]), env=clean_env(), stdin=f"{SMTP_PASSWORD}\n".encode()
    )
    assert code == 2 and str(typo) in out, out
    assert sink.messages == [] and not typo.parent.exists()


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
async def test_a_secrets_file_saved_in_another_encoding_is_named_and_left_as_it_is(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path, encoding: str
) -> None:
    """edge.env saved by a Windows editor as UTF-16 (or with a Latin-1 "ü"): the wizard names the file and says it is
    not UTF-8, exit 2, the file untouched. Before: only "'utf-8' codec can't decode byte 0xff…", naming no file."""
    config = write_config(tmp_path)
    env = tmp_path / "edge.env"
    env.write_bytes((OLD_ENV + "# Küche\n").encode(encoding))
    before = env.read_bytes()
    code, out = await run_script(
        *non_interactive(config, sink, cert[0]), env=clean_env(), stdin=f"{SMTP_PASSWORD}\n".encode()
    )
    assert code == 2 and str(env) in out and "UTF-8" in out, out
    assert sink.messages == [] and env.read_bytes() == before


async def test_preset_switch_drops_the_old_servers_ca_file(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """Switching from a custom relay with its own CA file to a preset removes EDGE_SMTP_CA_FILE: the new server is
    trusted through the system's CAs, and the agent reads no stale CA file."""
    old_ca = tmp_path / "old-relay-ca.pem"  # the old relay's own CA: a real certificate, but not the new server's
    made = await asyncio.create_subprocess_exec(
        *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-days", "2", "-subj", "/CN=old-relay", "-keyout", str(tmp_path / "old.key"), "-out", str(old_ca)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(made.wait(), timeout=30) == 0
    config = write_config(tmp_path, OLD_ENV + f'EDGE_SMTP_CA_FILE="{old_ca}"\nEDGE_SMTP_PASSWORD="{SMTP_PASSWORD}"\n')
    # The test server's certificate stands in for a public CA: OpenSSL takes the system's CAs from SSL_CERT_FILE.
    env = clean_env(SSL_CERT_FILE=str(cert[0]))
    args = ["--config", str(config), "--non-interactive", "--provider", "outlook", "--host", "127.0.0.1"]
    args += ["--port", str(sink.port), "--username", SMTP_USER, "--to", "chef@store.test"]
    code, out = await run_script(*args, env=env)
    assert code == 0, out
    assert "EDGE_SMTP_CA_FILE" not in (tmp_path / "edge.env").read_text(encoding="utf-8")
    assert load_settings(config, environ={}).smtp.ca_file is None


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None] | None]]:
    """A 32 KiB tmpfs (a real nearly-full disk) where mounting works; else a folder and a file-size limit
    (RLIMIT_FSIZE) for the subprocess, which makes a large write come up short the same way."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=32k,mode=0755", "tmpfs", str(where)], capture_output=True, timeout=10
        ).returncode
        == 0
    )
    if mounted:
        yield where, None
        subprocess.run(["umount", str(where)], check=True, timeout=10)
    else:
        yield where, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


async def test_full_disk_keeps_the_old_secrets_file_byte_for_byte(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path, tiny_disk: tuple[Path, Callable[[], None] | None]
) -> None:
    """On a nearly full disk the new secrets file cannot be written whole: the wizard says so and exits non-zero, and
    the old file (EDGE_API_TOKEN on its last line) survives byte for byte; no temp file is left."""
    disk, limit = tiny_disk
    secrets = disk / "edge.env"
    old = "# site notes\n" + "# " + "x" * 4900 + "\n" + "EDGE_API_TOKEN=tok-0123456789abcdef\n"
    secrets.write_text(old, encoding="utf-8")
    secrets.chmod(0o600)
    if limit is None:  # leave three pages free: the backup (two pages) fits, the new file (two pages) does not
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096) == 4096:
                pass
        except OSError:
            pass  # the disk is full
        finally:
            os.close(fd)
        os.truncate(filler, (filler.stat().st_size // 4096 - 3) * 4096)
    args = non_interactive(tmp_path / "edge.toml", sink, cert[0])
    args[args.index("--config") : args.index("--config") + 2] = ["--env-file", str(secrets)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        env=clean_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=limit,
    )
    out_bytes, _ = await asyncio.wait_for(proc.communicate(f"{SMTP_PASSWORD}\n".encode()), timeout=40)
    out = out_bytes.decode()
    assert len(sink.messages) == 1  # the test mail went out; writing is what failed
    assert proc.returncode == 1, out
    assert "✓ wrote" not in out and "could not write" in out
    assert secrets.read_text(encoding="utf-8") == old
    assert not [p.name for p in disk.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the wizard on another user's file")
async def test_root_run_keeps_the_secrets_file_the_agents(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """Run as root (sudo), the wizard leaves edge.env and its backup owned by the agent's user, mode 0600."""
    config = write_config(tmp_path)
    os.chown(tmp_path / "edge.env", 65534, 65534)
    code, out = await run_script(
        *non_interactive(config, sink, cert[0]), env=clean_env(), stdin=f"{SMTP_PASSWORD}\n".encode()
    )
    assert code == 0, out
    for name in ("edge.env", "edge.env.bak"):
        info = (tmp_path / name).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600), name


async def test_root_run_with_no_secrets_file_yet_makes_it_the_agents_not_the_configs_owners(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """No edge.env yet, edge.toml saved by root (`sudo nano`), the data directory the agent's: the new edge.env is the
    agent's user's (the owner of agent.data_dir, as the agent itself reads it), mode 0600, and the wizard's check of
    the agent's config finds no owner to fix. Before: it took edge.toml's owner, root, and ended with "chown"."""
    config = write_config(tmp_path)
    (tmp_path / "edge.env").unlink()
    (tmp_path / "data").mkdir()
    os.chown(tmp_path / "data", 65534, 65534)
    code, out = await run_script(
        *non_interactive(config, sink, cert[0]), env=clean_env(), stdin=f"{SMTP_PASSWORD}\n".encode()
    )
    assert code == 0, out
    info = (tmp_path / "edge.env").stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600), out
    assert "chown" not in out, out


def test_a_line_the_agent_would_refuse_stops_the_wizard_before_any_question(tmp_path: Path) -> None:
    """A hand-written line of another key that systemd would read differently is named (file and line) before the
    first question; nothing is sent or written. The wizard's own keys in old formats are simply rewritten."""
    from edge.alerts.setup import add_arguments, run

    env = tmp_path / "edge.env"
    old = "EDGE_SMTP_PASSWORD='it\\'s'\nexport EDGE_API_TOKEN=tok-0123456789abcdef\n"
    env.write_text(old, encoding="utf-8")
    env.chmod(0o600)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    said: list[str] = []

    def no_questions(question: str) -> str:
        raise AssertionError(f"asked {question!r}")

    status = run(
        parser.parse_args(["--env-file", str(env)]), ask=no_questions, ask_secret=no_questions, say=said.append
    )
    assert status == 2
    assert said[0].startswith(f'✗ {env} line 2: not KEY="value"') and said[0].endswith("nothing sent, nothing written.")
    assert env.read_text(encoding="utf-8") == old


async def test_the_secrets_file_written_by_the_setup_survives_a_power_cut(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path, powercut_shim: Path
) -> None:
    """The fleet form under the power-cut shim watching the config's folder, then the power goes: edge.env is the new
    one (written to a temporary file, fsynced, renamed, the folder fsynced) and edge.env.bak the old one, whole."""
    config = write_config(tmp_path)
    power = PowerCut(powercut_shim, tmp_path, tmp_path / "durable")
    code, out = await run_script(
        *non_interactive(config, sink, cert[0]), env=clean_env(**power.env()), stdin=f"{SMTP_PASSWORD}\n".encode()
    )
    assert code == 0, out
    kept = await asyncio.to_thread(power.cut, ("edge.env", "edge.env.bak"))
    assert set(kept) == {"edge.env", "edge.env.bak"}, kept
    settings = load_settings(config, environ={})
    assert settings.smtp.password.get() == SMTP_PASSWORD and settings.smtp.port == sink.port
    assert (tmp_path / "edge.env.bak").read_text(encoding="utf-8") == OLD_ENV


async def test_a_secrets_file_half_written_by_a_setup_that_was_cut_off_is_removed_by_the_next(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """A setup cut off between writing edge.env's temporary file and its rename (a power cut, a killed SSH session)
    leaves that file in /etc/edge with the mail password in it; a new run has a new PID, so before, it stayed there
    for ever. The next write of edge.env removes the temporaries of writers that are gone; one of a process still
    running (another setup writing at this moment) is its own, left alone."""
    config = write_config(tmp_path)
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    left = tmp_path / f".edge.env.{gone.pid}.tmp"
    left.write_text(f"EDGE_SMTP_PASSWORD={SMTP_PASSWORD}\n")
    running = tmp_path / f".edge.env.{os.getpid()}.tmp"
    running.write_text("# being written\n")
    code, out = await run_script(
        *non_interactive(config, sink, cert[0]), env=clean_env(), stdin=f"{SMTP_PASSWORD}\n".encode()
    )
    assert code == 0, out
    assert not left.exists() and running.exists()
    assert load_settings(config, environ={}).smtp.password.get() == SMTP_PASSWORD


@pytest.mark.parametrize("typed", ["STARTTLS", "StartTLS"])
async def test_the_fleet_form_reads_security_in_any_case_as_the_questions_do(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path, typed: str
) -> None:
    """`--security STARTTLS` in a rollout script is starttls, as the typed answer is. Before: argparse's usage error,
    exit 2, on every box of the rollout."""
    config = write_config(tmp_path)
    flags = non_interactive(config, sink, cert[0])
    flags[flags.index("--security") + 1] = typed
    code, out = await run_script(*flags, env=clean_env(), stdin=f"{SMTP_PASSWORD}\n".encode())
    assert code == 0, out
    assert load_settings(config, environ={}).smtp.security == "starttls"
    assert len(sink.messages) == 1
