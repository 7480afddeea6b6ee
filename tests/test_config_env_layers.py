"""edge.toml and the secrets file edge.env together: a key set in both is named with the one that wins, a key in
edge.env that names no setting is one line, and a file saved with a UTF-8 BOM (Windows Notepad) reads as without."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.config import load_settings
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, log_events

# What the technician edited in edge.toml weeks after the wizard wrote the mail keys into edge.env.
EDITED_TOML = """
[agent]
store_id = "s1"
data_dir = "{data_dir}"
language = "en"

[api]
port = 18766

[smtp]
host = "127.0.0.1"
port = 2525
security = "none"

[alerts]
to = ["new-manager@example.com"]

[printers.kitchen]
type = "file"

[stations]
kitchen = "kitchen"

[receipts]
enabled = false  # a kitchen-only box: else the check says how to say so
"""

PLAIN_TOML = """
[agent]
store_id = "s1"
data_dir = "{data_dir}"

[printers.kitchen]
type = "file"

[stations]
kitchen = "kitchen"

[receipts]
enabled = false  # a kitchen-only box: else the check says how to say so
"""

WIZARD_ENV = """EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"
# e-mail alerts (written by setup-notifications)
EDGE_SMTP_HOST="smtp.gmail.com"
EDGE_SMTP_PORT="587"
EDGE_SMTP_SECURITY="starttls"
EDGE_SMTP_USERNAME="old@gmail.com"
EDGE_SMTP_PASSWORD="app-password"
EDGE_SMTP_FROM="old@gmail.com"
EDGE_ALERT_TO="old-manager@example.com"
EDGE_AGENT_LANGUAGE="de"
"""


def _write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    path.chmod(mode)
    return path


def _store(tmp_path: Path, env: str | bytes, toml: str | bytes | None = None) -> tuple[Path, Path]:
    config = _write(tmp_path / "edge.toml", toml if toml is not None else EDITED_TOML.format(data_dir=tmp_path / "d"))
    return config, _write(tmp_path / "edge.env", env)


def _check(config: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    """`edge config check` as the technician runs it: the process environment without EDGE_* of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "edge", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, **environ},
    )


def test_config_check_names_every_key_edge_env_overrides_and_which_one_wins(tmp_path: Path) -> None:
    """The probe's store: edge.toml edited after the wizard (language, relay, recipients), edge.env still holding the
    wizard's values. `edge config check` names each key set in both, in edge.env's order, with the winner; a variable
    of the process environment with another value than edge.env's (not systemd's EnvironmentFile=) wins over both, and
    one with edge.env's own value (what systemd passes) is edge.env's. (before: only the ok line, exit 0, while
    alerts.to, smtp.* and agent.language stayed edge.env's)"""
    config, env = _store(tmp_path, WIZARD_ENV)
    result = _check(config, EDGE_SMTP_HOST="smtp.gmail.com", EDGE_SMTP_PORT="2587")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"smtp.host is set in {config} and in {env} (EDGE_SMTP_HOST); edge.env wins",
        f"smtp.port is set in {config}, in {env} (EDGE_SMTP_PORT) and in the environment; the environment wins",
        f"smtp.security is set in {config} and in {env} (EDGE_SMTP_SECURITY); edge.env wins",
        f"alerts.to is set in {config} and in {env} (EDGE_ALERT_TO); edge.env wins",
        f"agent.language is set in {config} and in {env} (EDGE_AGENT_LANGUAGE); edge.env wins",
        f"config {config}: ok (1 printers, stations: kitchen)",
    ]
    settings = load_settings(config, environ={})
    assert (settings.alerts.to, settings.smtp.host, settings.agent.language) == (
        ["old-manager@example.com"],
        "smtp.gmail.com",
        "de",
    )


def test_a_misspelt_key_in_edge_env_stops_config_check_with_one_line(tmp_path: Path) -> None:
    """EDGE_AGENT_STOR_ID names no setting: `edge config check` exits 2 with one line naming the file, the line, the
    variable and the nearest setting, as it does for an unknown key in edge.toml (before: exit 0, "ok", the line
    ignored)."""
    toml = PLAIN_TOML.format(data_dir=tmp_path / "d")
    config, env = _store(tmp_path, 'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\nEDGE_AGENT_STOR_ID="s2"\n', toml)
    result = _check(config)
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip() == (
        f"edge: config {env}: line 2: EDGE_AGENT_STOR_ID names no setting, so it changes nothing"
        " (did you mean EDGE_AGENT_STORE_ID?)"
    )
    # edge.env's other variables that are no setting but are read (the file's own place, the config's) pass
    _write(env, f'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\nEDGE_CONFIG="{config}"\n')
    assert _check(config).returncode == 0


@pytest.mark.parametrize(
    "quoted", ["“abcdefghijklmnopqrstuvwx”", "„abcdefghijklmnopqrstuvwx“", '"‘abcdefghijklmnopqrstuvwx’"']
)
def test_a_secret_in_typographic_quotes_pasted_from_a_mail_stops_config_check_with_one_line(
    tmp_path: Path, quoted: str
) -> None:
    """The API token pasted from a mail or a document with its typographic quotes (“…”, „…“, ‘…’): they would become
    part of the token, and central's requests would be refused with nothing on the box saying why. `edge config
    check` exits 2 with one line naming the file, the line and the variable, and what to write instead (before:
    "ok", tech probe finding 9)."""
    toml = PLAIN_TOML.format(data_dir=tmp_path / "d")
    config, env = _store(tmp_path, f"EDGE_API_TOKEN={quoted}\n", toml)
    result = _check(config)
    assert result.returncode == 2, result.stdout
    [line] = result.stderr.strip().splitlines()
    assert f"{env}: line 1: EDGE_API_TOKEN" in line and "typographic quotes" in line, line
    assert "abcdefghijklmnopqrstuvwx" not in line  # a secret is not echoed


async def _start_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **environ: str) -> list[dict[str, Any]]:
    """The log of one `edge run` started and stopped with simulated printers, its EDGE_* environment only
    ``environ`` (edge.env, if the test wrote one, sets the rest)."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    agent = agent_process(tmp_path, {"kitchen": kitchen, "front": front})
    for name in [name for name in os.environ if name.startswith("EDGE_")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    try:
        await agent.start()
    finally:
        await agent.close()
        await kitchen.stop()
        await front.stop()
    return log_events(agent.log)


async def test_the_agents_start_log_names_overridden_and_unknown_keys_in_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edge run` starts with a misspelt key in edge.env (a warning: it changed nothing before either) and says, in
    one line each, which keys edge.env overrides and which it does not know (before: neither line)."""
    env = _write(tmp_path / "edge.env", 'EDGE_AGENT_LOG_LEVEL="warning"\nEDGE_AGENT_STOR_ID="s2"\n')
    lines = await _start_log(tmp_path, monkeypatch)
    [overrides] = [line for line in lines if line["event"] == "config_overridden_by_env_file"]
    assert overrides["level"] == "warning"
    assert overrides["keys"] == [
        f"agent.log_level is set in {tmp_path / 'edge.toml'} and in {env} (EDGE_AGENT_LOG_LEVEL); edge.env wins"
    ]
    [unknown] = [line for line in lines if line["event"] == "config_env_file_unknown_keys"]
    assert unknown["level"] == "warning"
    assert unknown["keys"] == ["line 2: EDGE_AGENT_STOR_ID (did you mean EDGE_AGENT_STORE_ID?)"]
    assert unknown["file"] == str(env)


def test_a_utf8_bom_at_the_start_of_edge_toml_or_edge_env_is_read_as_without(tmp_path: Path) -> None:
    """Windows Notepad's "UTF-8 with BOM": both files load as without it (before: edge.toml "Invalid statement (at
    line 1, column 1)", edge.env "line 1: not KEY=value", exit 2)."""
    toml = PLAIN_TOML.format(data_dir=tmp_path / "d")
    config, _ = _store(
        tmp_path, b'\xef\xbb\xbfEDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\n', b"\xef\xbb\xbf" + toml.encode()
    )
    result = _check(config)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == f"config {config}: ok (1 printers, stations: kitchen)"
    assert load_settings(config, environ={}).api.token.get() == "abcdefghijklmnopqrstuvwx"


def test_a_box_installed_as_documented_lists_no_override(tmp_path: Path) -> None:
    """install.sh writes edge.toml from the example, with its stand-in `token = "change-me"`, and the real token into
    edge.env: that override is the documented way, not news at every start and every check (the first version of the
    lines above named it on every box)."""
    example = (Path(__file__).parents[1] / "edge.example.toml").read_text(encoding="utf-8")
    toml = (
        PLAIN_TOML.format(data_dir=tmp_path / "d")
        + "\n[api]\n"
        + next(line for line in example.splitlines() if line.startswith("token = "))
    )
    config, _ = _store(tmp_path, 'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\n', toml)
    result = _check(config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"config {config}: ok (1 printers, stations: kitchen)"]


@pytest.mark.parametrize("which", ["toml", "env"])
def test_a_config_saved_in_another_encoding_stops_config_check_with_the_line_and_the_fix(
    tmp_path: Path, which: str
) -> None:
    """Notepad's "ANSI" (Windows-1252): a store's name with "é" in edge.toml, a password with "ü" in edge.env. One line
    naming the file, the line and the byte, and what to do (before stop 71: only the codec's words, "'utf-8' codec
    can't decode byte 0xe9 in position 114: invalid continuation byte", the tech71 probe)."""
    toml = PLAIN_TOML.format(data_dir=tmp_path / "d")
    env = 'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\n'
    if which == "toml":
        config, path = _store(tmp_path, env, toml.replace('"', '"Café ', 1).encode("cp1252"))[0], None
    else:
        config, path = _store(tmp_path, (env + 'EDGE_SMTP_PASSWORD="Grüße"\n').encode("cp1252"), toml)
    path = path or config
    result = _check(config)
    assert result.returncode == 2, result.stdout
    line = 2 if which == "env" else next(n for n, t in enumerate(toml.splitlines(), 1) if '"' in t)
    assert result.stderr.strip().endswith(
        f"{path}: line {line} is not UTF-8 (byte 0x{'e9' if which == 'toml' else 'fc'}): save the file as UTF-8"
        " (Notepad: Save as, Encoding UTF-8)"
    ), result.stderr


@pytest.mark.parametrize(
    ("section", "key"),
    [("api", "token"), ("smtp", "password"), ("central", "token"), ("mqtt", "password"), ("api", "signing_secrets")],
)
def test_a_secret_written_as_a_number_stops_config_check_naming_the_key_not_the_secret(
    tmp_path: Path, section: str, key: str
) -> None:
    """A PIN-like app password or a numeric token typed into edge.toml without quotes is a TOML number, not text: `edge
    config check` stops with one line naming the key and to put it in quotes, and never the number (the same line is
    the agent's start's and the health timer's, in the journal every minute). Before (the tech77 probe, F2): "config
    central.token: must be a string, got 5550123456789"."""
    secret = "5550123456789"
    value = f"[{secret}]" if key == "signing_secrets" else secret
    extra = {"central": 'url = "https://central.example"\n', "mqtt": 'url = "mqtt://127.0.0.1:1883"\n'}
    toml = PLAIN_TOML.format(data_dir=tmp_path / "d") + f"\n[{section}]\n{extra.get(section, '')}{key} = {value}\n"
    config, _ = _store(tmp_path, 'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\n' if key != "token" else "", toml)
    result = _check(config)
    assert result.returncode == 2, result.stdout
    [line] = result.stderr.strip().splitlines()
    assert f"{section}.{key}" in line and "quotes" in line, line
    assert secret not in result.stderr + result.stdout, line


@pytest.mark.parametrize(
    ("section", "url", "where"),
    [
        ("central", "https://admin:s3cretpw-4711@central.example/base", "central.token"),
        ("mqtt", "mqtt://edge:mqttpw-123456@127.0.0.1:1883", "mqtt.username and EDGE_MQTT_PASSWORD"),
        ("mqtt", "mqtts://edge:mqttpw-123456@broker.example/edge", "mqtt.username and EDGE_MQTT_PASSWORD"),
        # A password holding a character that ends a URL's authority ("?", "#", "/"), or the URL not parsable at all
        # (an unclosed "["): before (the verify78 probe, V1) central.url took these and logged them, the others
        # echoed them whole
        ("central", "http://admin:Pw9xq?z@127.0.0.1:9/base", "central.token"),
        ("central", "http://admin:Pw9x/z@127.0.0.1:9/base", "central.token"),
        ("central", "http://admin:Pw9xv@[::1/base", "central.token"),
        ("mqtt", "mqtt://edge:Pw9xh#z@127.0.0.1:1883", "mqtt.username and EDGE_MQTT_PASSWORD"),
        ("mqtt", "mqtt://edge:Pw9xh?z@[::1:1883", "mqtt.username and EDGE_MQTT_PASSWORD"),
        ("central", "http://proxy:Pw9xk/z@127.0.0.1:3128", "central.proxy_user and EDGE_CENTRAL_PROXY_PASSWORD"),
    ],
)
def test_a_login_written_into_a_url_stops_config_check_naming_where_it_goes_not_the_password(
    tmp_path: Path, section: str, url: str, where: str
) -> None:
    """A technician pastes the broker's or central's URL with its login (`mqtt://user:pass@host`): `edge config check`
    stops with one line saying where the login goes instead, and never repeats the password (the same line is the
    start's and the health timer's, in the journal every minute). Before (the http78 probe, F5 and F6): central.url
    took it, and the agent logged the password at every start and showed it in /api/v1/recovery/status; mqtt.url was
    refused with the whole URL, password and all, echoed by `edge config check`, `edge health` and `edge doctor`."""
    key = "proxy" if "proxy" in where else "url"
    extra = {
        "central": 'token = "central-token-0123456789"\n'
        + ('url = "https://central.example"\n' if key == "proxy" else "")
    }
    toml = PLAIN_TOML.format(data_dir=tmp_path / "d") + f'\n[{section}]\n{key} = "{url}"\n{extra.get(section, "")}'
    config, _ = _store(tmp_path, 'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\n', toml)
    result = _check(config)
    assert result.returncode == 2, result.stdout
    [line] = result.stderr.strip().splitlines()
    assert f"{section}.{key}" in line and "login" in line and where in line, line
    password = url.split("@")[0].rsplit(":", 1)[1]
    assert password not in result.stderr + result.stdout, line


def test_edge_env_file_naming_a_folder_stops_config_check_saying_it_is_a_folder_not_to_chmod_it(
    tmp_path: Path,
) -> None:
    """EDGE_ENV_FILE=/etc/edge, the folder instead of the file in it: `edge config check` exits 2 with one line saying
    it is a folder and naming the file meant. Before stop 80 it said "is mode 0755, others may read the secrets; fix:
    chmod 600 /etc/edge", which locks the agent's config folder and still reads no file (the config80 probe, F7)."""
    toml = PLAIN_TOML.format(data_dir=tmp_path / "d")
    config, env = _store(tmp_path, 'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\n', toml)
    tmp_path.chmod(0o755)
    result = _check(config, EDGE_ENV_FILE=str(tmp_path))
    assert result.returncode == 2, result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"edge: config {tmp_path}: is a folder") and str(env) in line, line
    assert "chmod" not in line, line


def test_a_misspelt_edge_variable_in_the_process_environment_stops_config_check_as_in_edge_env(
    tmp_path: Path,
) -> None:
    """EDGE_PRINTERS_KICHEN_HOST in a systemd drop-in's Environment= (or a shell export) names no setting: `edge
    config check` exits 2 with one line naming it, where it is set and the nearest setting, as for the same line in
    edge.env. A variable of another tool (upgrade.sh's EDGE_HEALTH_WAIT_S) is none of the config's sections and
    passes; a misspelt line of edge.env that systemd also put into the environment is named once, as edge.env's.
    Before stop 80 the environment's was ignored, "ok", exit 0 (the config80 probe, F5)."""
    toml = PLAIN_TOML.format(data_dir=tmp_path / "d")
    config, env = _store(tmp_path, 'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\n', toml)
    result = _check(config, EDGE_PRINTERS_KICHEN_HOST="10.0.0.9")
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip() == (
        "edge: config environment: EDGE_PRINTERS_KICHEN_HOST names no setting, so it changes nothing (did you mean"
        " EDGE_PRINTERS_KITCHEN_HOST?); it is set in the process environment (a systemd drop-in's Environment=, a"
        " shell export): correct or remove it there"
    )
    assert _check(config, EDGE_HEALTH_WAIT_S="15").returncode == 0
    _write(env, 'EDGE_API_TOKEN="abcdefghijklmnopqrstuvwx"\nEDGE_AGENT_STOR_ID="s2"\n')
    result = _check(config, EDGE_AGENT_STOR_ID="s2")  # systemd's EnvironmentFile= passes edge.env's lines
    assert result.returncode == 2, result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"edge: config {env}: line 2: EDGE_AGENT_STOR_ID names no setting"), line


async def test_the_agents_start_log_names_a_misspelt_variable_of_its_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edge run` with EDGE_SMTP_PASWORD in its environment starts (the variable changes nothing, as a misspelt line
    of edge.env) and says so in one warning naming it and the setting meant. Before stop 80 the start logged
    nothing (the config80 probe, F5)."""
    lines = await _start_log(tmp_path, monkeypatch, EDGE_SMTP_PASWORD="x")
    [unknown] = [line for line in lines if line["event"] == "config_environment_unknown_keys"]
    assert unknown["level"] == "warning"
    assert unknown["keys"] == ["EDGE_SMTP_PASWORD (did you mean EDGE_SMTP_PASSWORD?)"]
