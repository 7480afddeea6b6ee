"""Secrets in the config (the security81 probe): what never worked is refused in one line that names the key and never
the secret (a key in central.url's query, a token ending in a tab or line break); what works but puts a secret at risk
(a short API token, a secret in a config file every user may read, a password sent in clear) is told by `edge config
check`, the start's log and `edge doctor`, never refused, so that an upgrade does not stop a store that works."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from edge.log import configure_logging
from edge.sim.printer import SimPrinter
from tests.config.box import write_box_config
from tests.helpers import TOKEN, agent_process, api_client, edge, edge_blocking, log_events

KEY = "Zq9FunctionKEY7Xk"


def _refused(config: Path, *, env: dict[str, str] | None = None) -> str:
    """The one line `edge config check` and `edge run` stop with (exit 2, the same line from both)."""
    lines = []
    for command in (("config", "check"), ("run",)):
        done = edge_blocking(*command, "--config", str(config), env=env, timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        lines.append(done.stderr.strip().splitlines()[-1])
    assert lines[0] == lines[1], lines
    return lines[0]


@pytest.mark.parametrize("url", [f"https://central.example.com/api?code={KEY}", f"https://central.example.com/#{KEY}"])
def test_a_key_in_central_urls_query_stops_the_check_and_the_start_naming_central_token_not_the_key(
    tmp_path: Path, url: str
) -> None:
    """central.url = "https://…/api?code=KEY" (Azure Functions' key, ?api_key=): the agent adds its paths after the URL,
    so it called ".../api?code=KEY/v1/health" and never reached central, and the URL, key and all, showed on the
    public status page, in `edge status`, `edge doctor` and the log at every start. Before stop 81 the check said ok
    (the security81 probe, F2)."""
    config = write_box_config(tmp_path, central={"url": url, "token": "central-token-0123456789"})
    line = _refused(config)
    assert line.startswith("edge: config central.url: must not hold a query"), line
    assert "central.token" in line and "EDGE_CENTRAL_TOKEN" in line, line
    assert KEY not in line, line


@pytest.mark.parametrize(
    ("section", "url", "shown"),
    [
        ("mqtt", f"mqtt://broker.example.com:1883?password={KEY}", "mqtt://broker.example.com:1883?…"),
        ("central", f"https://central.example.com/{KEY} x", "https://central.example.com/… (it holds a blank)"),
    ],
)
def test_a_url_refused_as_no_url_is_repeated_without_its_query_or_path(
    tmp_path: Path, section: str, url: str, shown: str
) -> None:
    """An address the check refuses is shown as far as its host: a key in its query or path stays out of the line the
    journal keeps (every minute, from the health timer). Before stop 81 the whole value was repeated (the security81
    probe, F2: `got 'mqtt://b.example.com:1883?password=…'`)."""
    values = {"url": url} | ({"token": "central-token-0123456789"} if section == "central" else {})
    line = _refused(write_box_config(tmp_path, **{section: values}))
    assert line.startswith(f"edge: config {section}.url: must be"), line
    assert line.endswith(f"got {shown!r}") and KEY not in line, line


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("api.token", "Tok-0123456789abcdef\t", "ends in a tab"),
        ("api.token", "Tok-0123456789abcdef\n", "ends in a line break"),
        ("api.token", "Tok-0123456789\nabcdef", "holds a line break"),
        ("central.token", "central-0123456789\t", "ends in a tab"),
    ],
)
def test_a_token_with_a_tab_or_line_break_stops_the_check_and_the_start_naming_the_key_not_the_token(
    tmp_path: Path, key: str, value: str, said: str
) -> None:
    """A token pasted with a tab (a spreadsheet cell) or written with a TOML \\n: no HTTP request can carry it (header
    values are trimmed, and end at a line break), so every call was refused with 401 or 400, and with a line break
    every `edge` command crashed with a traceback that printed the token. Before stop 81 the check said ok (the
    security81 probe, F6)."""
    section, name = key.split(".")
    values = {"url": "https://central.example.com"} if section == "central" else {}
    line = _refused(write_box_config(tmp_path, **{section: values | {name: value}}))
    assert line.startswith(f"edge: config {key}: {said} (the value not shown: a secret)"), line
    assert value.strip() not in line, line


def test_a_token_with_a_tab_in_the_process_environment_is_refused_too(tmp_path: Path) -> None:
    """The secrets file cannot hold a tab; a systemd drop-in's Environment= can (the security81 probe, F6)."""
    line = _refused(write_box_config(tmp_path), env={"EDGE_API_TOKEN": "Tok-0123456789abcdef\t"})
    assert line.startswith("edge: config api.token: ends in a tab"), line
    assert "Tok-0123456789abcdef" not in line, line


def _unsafe_lines(done: str) -> list[str]:
    return [
        line for line in done.splitlines() if "openssl rand" in line or "every user" in line or "unencrypted" in line
    ]


async def test_a_short_api_token_is_told_by_the_check_the_start_and_the_doctor_and_still_works(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """api.token = "1234": a client on the store's network found it in 1.5 s (wrong tries are not slowed). Told, with
    how to make a good one, by `edge config check` (exit 0: it worked before, an upgrade must not stop the store), by
    one warning at the start, and by a WARN line of `edge doctor`; orders with it are still taken. Before stop 81
    nothing said a word (the security81 probe, F3)."""
    short = {"EDGE_API_TOKEN": "1234"}
    agent = agent_process(tmp_path, printers, env=short)
    check = await edge("config", "check", "--config", str(agent.config), env=short)
    assert check.returncode == 0, check.stderr
    [told] = _unsafe_lines(check.stdout)
    assert told.startswith("api.token is 4 characters long") and "openssl rand -hex 16" in told, told
    assert "1234" not in told.replace("api.token is 4", ""), told
    await agent.start()
    try:
        async with api_client(agent.port, token="1234") as api, api.get("/api/v1/status") as answer:
            assert answer.status == 200
        doctor = await edge("doctor", "--config", str(agent.config), env=short)
        [line] = [line for line in doctor.stdout.splitlines() if "openssl rand" in line]
        assert line.split()[:2] == ["WARN", "config"], line
    finally:
        await agent.close()
    said = [e for e in log_events(agent.log) if e["event"] == "config_unsafe"]
    assert [(e["key"], e["level"]) for e in said] == [("api.token", "warning")], said


async def test_a_config_file_every_user_may_read_holding_a_secret_is_told_with_its_mode_and_the_fix(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """edge.toml with api.token in it at mode 0644 (copied in under umask 022): any user of the box could read the
    token. Told with the file, its mode and the fix by `edge config check` (exit 0: such a box always started) and at
    the start; not for 0640, nor for a 0644 file holding no secret. Before stop 81 nothing said a word, while an
    edge.env at 0644 is refused (the security81 probe, F4)."""
    agent = agent_process(tmp_path, printers)
    agent.config.chmod(0o644)
    check = await edge("config", "check", "--config", str(agent.config))
    assert check.returncode == 0, check.stderr
    [told] = _unsafe_lines(check.stdout)
    assert told.startswith(f"{agent.config} is mode 0644 and holds api.token: every user of this box can read it"), told
    assert f"chmod 640 {agent.config}" in told and "chown " in told and TOKEN not in check.stdout, told
    await agent.start()
    await agent.close()
    said = [e for e in log_events(agent.log) if e["event"] == "config_unsafe"]
    assert [e["key"] for e in said] == [str(agent.config)], said

    agent.config.chmod(0o640)
    assert _unsafe_lines((await edge("config", "check", "--config", str(agent.config))).stdout) == []
    agent.config.write_text(agent.config.read_text().replace(f'token = "{TOKEN}"', ""))
    agent.config.chmod(0o644)
    done = await edge("config", "check", "--config", str(agent.config), env={"EDGE_API_TOKEN": TOKEN})
    assert done.returncode == 0 and _unsafe_lines(done.stdout) == [], (done.stdout, done.stderr)


@pytest.mark.parametrize(
    ("section", "values", "told"),
    [
        (
            "mqtt",
            {"url": "mqtt://broker.example.com:1883", "username": "store-1", "password": "broker-pw-0123"},
            "mqtt.url is mqtt:// to broker.example.com with a password",
        ),
        (
            "central",
            {"url": "http://central.example.com", "token": "central-token-0123456789"},
            "central.url is http:// to central.example.com: central.token (and every order) crosses the network",
        ),
        ("mqtt", {"url": "mqtt://127.0.0.1:1883", "username": "store-1", "password": "broker-pw-0123"}, None),
        ("central", {"url": "http://localhost:8080", "token": "central-token-0123456789"}, None),
        ("central", {"url": "https://central.example.com", "token": "central-token-0123456789"}, None),
    ],
)
def test_a_secret_sent_in_clear_to_a_host_off_the_box_is_told_not_refused(
    tmp_path: Path, section: str, values: dict[str, str], told: str | None
) -> None:
    """The broker's password over mqtt:// and central's token over http:// to another host cross the network
    unencrypted; SMTP's like is refused (smtp.allow_plain_login). Told, not refused (it works, the upgrade rule); to
    this box itself nothing is said. Before stop 81 nothing said a word (the security81 probe, F5)."""
    config = write_box_config(tmp_path, **{section: values})
    config.chmod(0o600)
    done = edge_blocking("config", "check", "--config", str(config), timeout=60)
    assert done.returncode == 0, done.stderr
    lines = _unsafe_lines(done.stdout)
    assert len(lines) == (told is not None), done.stdout
    if told is not None:
        assert lines[0].startswith(told) and "unencrypted" in lines[0], lines
        assert values.get("password", values.get("token", "")) not in done.stdout


@pytest.mark.parametrize("secret", ["1", "abc"])
def test_a_secret_shorter_than_four_characters_is_scrubbed_from_log_lines_where_it_stands_alone(secret: str) -> None:
    """A secret of 1-3 characters went to the log as it was (only 4 and more were scrubbed: the security81 probe,
    F3). Now where it stands alone, a whole value or a word between non-letters, it is `***`; inside another word
    (a one-letter token would otherwise blank every such letter) it is left."""
    out = io.StringIO()
    configure_logging(fmt="json", secrets=[secret, TOKEN], stream=out)
    try:
        structlog.get_logger().warning("refused", given=secret, detail=f"Bearer {secret}: refused", word=f"x{secret}y9")
    finally:
        configure_logging()
    [line] = [json.loads(text) for text in out.getvalue().splitlines()]
    assert (line["given"], line["detail"], line["word"]) == ("***", "Bearer ***: refused", f"x{secret}y9")


@pytest.mark.parametrize(
    ("name", "told"),
    [
        ("Bäckerei Müller am Marktplatz, Filiale Nord-Ost im Einkaufszentrum Süd", "is 70 characters long"),
        ("Pizza \u202eollaP", "U+202E at character 7"),
        ("Bäckerei Müller am Markt", None),
    ],
    ids=["long", "direction-override", "fine"],
)
def test_a_store_name_too_long_for_a_receipts_head_or_with_hidden_characters_is_told_not_refused(
    tmp_path: Path, name: str, told: str | None
) -> None:
    """agent.store_name heads every receipt and mail subject: 70 characters printed as two lines on every receipt, a
    direction override turned every subject around. Told by `edge config check` (exit 0: it worked before, an upgrade
    must not stop a store), not refused. Before stop 82 nothing said a word (the i18n82 probe, F5)."""
    config = write_box_config(tmp_path, agent={"store_name": name})
    config.chmod(0o600)
    done = edge_blocking("config", "check", "--config", str(config), timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("agent.store_name")]
    assert len(lines) == (told is not None), done.stdout
    if told is not None:
        assert told in lines[0] and "\u202e" not in lines[0], lines
