"""Secrets in the config (the security81 probe): what never worked is refused in one line that names the key and never
the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.box import write_box_config
from tests.helpers import edge_blocking

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
