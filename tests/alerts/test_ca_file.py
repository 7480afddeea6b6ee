"""smtp.ca_file, the extra CA a company relay needs, mistyped or pointing at the wrong file: every command names the
setting and the file in one line (config check, the setup wizard, the doctor, `edge alerts test` through the running
agent), and the outbox says so too. Before: `config check` said ok, the doctor and the wizard ended with a bare
"[Errno 2] No such file or directory", the API answered 500, and the mails piled up unexplained."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge.api.client import call_agent
from edge.app import Agent
from edge.config import Settings
from edge.ops.technician import doctor
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, smtp_section
from tests.alerts.helpers import non_interactive
from tests.alerts.test_setup import OLD_ENV, clean_env, run_script, write_config
from tests.alerts.test_setup_answers import ARRIVED, custom, replace, run, written
from tests.helpers import api_client, edge

NOT_A_CERTIFICATE = "this is the relay's README, not a certificate\n"


def test_config_check_names_a_missing_smtp_ca_file(tmp_path: Path) -> None:
    """`edge config check` stops at it: exit 2, one line naming the setting and the file (as for mqtt.ca_file)."""
    config = write_config(tmp_path, old_env="EDGE_API_TOKEN='tok-0123456789abcdef'\n")
    missing = tmp_path / "relay-ca.pem"
    config.write_text(
        config.read_text(encoding="utf-8")
        + f'\n[smtp]\nhost = "127.0.0.1"\nsender = "edge@store.test"\nca_file = "{missing}"\n'
        + '\n[alerts]\nto = ["chef@store.test"]\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "edge", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert "smtp.ca_file" in line and str(missing) in line and "no such file" in line, line


@pytest.mark.parametrize("fault", ["missing", "not-a-certificate"])
async def test_the_setup_wizard_names_a_ca_file_it_cannot_use_and_writes_nothing(
    sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path, fault: str
) -> None:
    config = write_config(tmp_path)
    ca = tmp_path / "relay-ca.pme"  # a typo
    if fault == "not-a-certificate":
        ca.write_text(NOT_A_CERTIFICATE, encoding="utf-8")
    code, out = await run_script(*non_interactive(config, sink, ca), env=clean_env(), stdin=b"secret\n")
    assert code in (1, 2) and "Traceback" not in out, out
    assert str(ca) in out and "ca_file" in out, out
    assert sink.messages == []
    assert (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV


async def test_the_doctor_names_a_ca_file_that_holds_no_certificate_and_checks_the_rest(
    make_settings: Callable[..., Settings], sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """One line per check: the smtp check fails naming smtp.ca_file and the file; the other checks still run."""
    ca = tmp_path / "relay-ca.pem"
    ca.write_text(NOT_A_CERTIFICATE, encoding="utf-8")
    settings = make_settings(smtp=smtp_section(sink, cert, ca_file=str(ca)), alerts={"to": ["chef@store.test"]})

    checks = {c.name: c for c in await doctor(settings, call_agent)}  # no agent runs: that check fails alone
    assert checks["smtp"].level == "fail", checks["smtp"]
    assert "smtp.ca_file" in checks["smtp"].detail and str(ca) in checks["smtp"].detail, checks["smtp"]
    assert "database" in checks


async def test_a_test_mail_through_the_running_agent_names_the_ca_file_not_a_500(
    make_agent: Callable[..., Awaitable[Agent]], sink: SmtpSink, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """The running agent with a CA file that holds no certificate: `POST /api/v1/alerts/test` answers how it went,
    and the mail's last error names smtp.ca_file and the file; nothing reaches the relay."""
    ca = tmp_path / "relay-ca.pem"
    ca.write_text(NOT_A_CERTIFICATE, encoding="utf-8")
    agent = await make_agent(smtp=smtp_section(sink, cert, ca_file=str(ca)), alerts={"to": ["chef@store.test"]})
    async with api_client(agent) as api, api.post("/api/v1/alerts/test") as response:
        assert response.status == 201, await response.text()
        mail = (await response.json())["mail"]
    assert mail["state"] != "sent", mail
    assert "smtp.ca_file" in mail["last_error"] and str(ca) in mail["last_error"], mail
    assert sink.messages == []


async def test_a_missing_ca_file_given_for_a_relay_without_tls_is_refused_before_anything_is_written(
    login_relay: SmtpSink, tmp_path: Path
) -> None:
    """The fleet form, a local relay (security none) and a CA file that is not there: one line naming the file,
    nothing sent, edge.env as it was. Before stop 80 the test passed (no TLS, the CA never loaded), it exited 0 and
    wrote EDGE_SMTP_CA_FILE, and from then on `edge config check` exited 2 and the agent would not start (the
    config80 probe, F1)."""
    config = write_config(tmp_path)
    missing = tmp_path / "relay-ca.pem"
    args = non_interactive(config, login_relay, missing, "--security", "none")
    code, out = await run_script(*args, env=clean_env(), stdin=SMTP_PASSWORD.encode() + b"\n")
    assert code == 2 and "Traceback" not in out, out
    [line] = [line for line in out.splitlines() if str(missing) in line]
    assert "smtp.ca_file" in line and "no such file" in line, out
    assert login_relay.messages == []
    assert (tmp_path / "edge.env").read_text(encoding="utf-8") == OLD_ENV


async def test_a_ca_file_typed_at_the_question_that_is_no_certificate_is_asked_again(
    login_relay: SmtpSink, tmp_path: Path
) -> None:
    """Typed at the CA question, a path that does not exist and then a file that holds no certificate are each
    answered with one line naming the file and asked again; Enter (the system's CAs) goes on, and what is written
    passes `edge config check`. Before stop 80 any text was taken there ("edge@store.de" too) and written, with
    security none (the config80 probe, F1)."""
    config = write_config(tmp_path)
    missing, readme = tmp_path / "relay-ca.pem", tmp_path / "README"
    readme.write_text(NOT_A_CERTIFICATE, encoding="utf-8")
    answers = replace(
        custom(login_relay.port, missing, security="none"),
        "CA certificate",
        (r"CA certificate file.*: ", str(missing)),
        (r"CA certificate file.*: ", str(readme)),
        (r"CA certificate file.*: ", ""),
    )
    output, status = await run(config, [*answers, ARRIVED])
    assert status == 0, output
    refused = [line for line in output.splitlines() if line.startswith("✗")]
    assert len(refused) == 2 and str(missing) in refused[0] and str(readme) in refused[1], output
    assert "EDGE_SMTP_CA_FILE" not in written(tmp_path)
    check = await edge("config", "check", "--config", str(config), env=clean_env())
    assert check.returncode == 0, check.stderr


async def test_the_wizard_refuses_values_the_agents_config_check_would_refuse_and_writes_nothing(
    login_relay: SmtpSink, tmp_path: Path
) -> None:
    """edge.toml still names the CA file of a relay long gone (`[smtp] ca_file`, no host: unused, so the check passes).
    The wizard sets up a local relay without a CA file of its own: the toml's would then be used, and the agent would
    not start. The wizard loads the config as `edge config check` does with the values it is about to write and stops
    with that line, nothing sent or written. Before stop 80 it wrote them and only said afterwards that the agent would
    not start (the config80 probe, F1)."""
    old_env = "EDGE_API_TOKEN='tok-0123456789abcdef'\n"
    config = write_config(tmp_path, old_env=old_env)
    gone = tmp_path / "old-relay-ca.pem"
    config.write_text(config.read_text(encoding="utf-8") + f'\n[smtp]\nca_file = "{gone}"\n', encoding="utf-8")
    before = await edge("config", "check", "--config", str(config), env=clean_env())
    assert before.returncode == 0, before.stderr
    # no CA file of its own (the last --ca-file wins): EDGE_SMTP_CA_FILE is not written, edge.toml's is read
    args = non_interactive(config, login_relay, gone, "--security", "none", "--ca-file", "")
    code, out = await run_script(*args, env=clean_env(), stdin=SMTP_PASSWORD.encode() + b"\n")
    assert code == 2 and "Traceback" not in out, out
    [line] = [line for line in out.splitlines() if str(gone) in line]
    assert line.startswith("✗") and "smtp.ca_file" in line and "nothing written" in line, out
    assert login_relay.messages == []
    assert (tmp_path / "edge.env").read_text(encoding="utf-8") == old_env
