"""Config: the issue's minimal file works; every wrong value stops start-up with one line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import Secret, load_settings
from edge.errors import ConfigError

MINIMAL = """
[agent]
store_id = "berlin-mitte"
data_dir = "{data_dir}"
language = "de"

[api]
host = "127.0.0.1"
port = 8765
token = "change-me"

[printers.kitchen]
type = "network"
host = "10.0.0.21"
port = 9100
width = 48

[printers.front]
type = "network"
host = "10.0.0.22"
port = 9100
width = 48

[stations]          # station name -> printer name
kitchen = "kitchen"
bar = "kitchen"

[receipts]
printer = "front"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text.format(data_dir=tmp_path / "data"), encoding="utf-8")
    return path


def test_minimal_config_from_the_issue_loads(tmp_path: Path) -> None:
    """The exact keys from the issue, with real values, are a working config."""
    s = load_settings(write(tmp_path, MINIMAL), environ={})
    assert s.agent.store_id == "berlin-mitte"
    assert s.api.token == Secret("change-me")
    assert s.printers["kitchen"].host == "10.0.0.21" and s.printers["front"].port == 9100
    assert s.stations == {"kitchen": ["kitchen"], "bar": ["kitchen"]}
    assert s.receipts.printer == "front"
    assert s.agent.db_path == tmp_path / "data" / "edge.db"


def test_environment_overrides_file_and_env_file(tmp_path: Path) -> None:
    """EDGE_* variables win over the .env file beside the config, which wins over the file."""
    path = write(tmp_path, MINIMAL)
    (tmp_path / ".env").write_text("EDGE_API_TOKEN=from-dotenv\nEDGE_API_PORT=9000\n", encoding="utf-8")
    s = load_settings(path, environ={"EDGE_API_PORT": "9100", "EDGE_PRINTERS_KITCHEN_WIDTH": "32"})
    assert s.api.token.get() == "from-dotenv"
    assert s.api.port == 9100
    assert s.printers["kitchen"].width == 32


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("port = 8765", 'port = "eighty"'), "api.port", "must be an integer"),
        (("port = 8765", "port = 70000"), "api.port", "between 1 and 65535"),
        (('language = "de"', 'language = "fr"'), "agent.language", "must be one of"),
        (('bar = "kitchen"', 'bar = "nowhere"'), "stations.bar", "'nowhere' is not configured"),
        (('printer = "front"', 'printer = "back"'), "receipts.printer", "not configured"),
        (("width = 48\n\n[printers.front]", "widht = 48\n\n[printers.front]"), "printers.kitchen.widht", "unknown key"),
        (('token = "change-me"', 'token = ""'), "api.token", "is required"),
        (('host = "10.0.0.21"\n', ""), "printers.kitchen.host", "required for a network printer"),
        (('store_id = "berlin-mitte"', 'store_id = "Berlin Mitte"'), "agent.store_id", "lowercase"),
        (("[receipts]", "[reciepts]"), "reciepts", "unknown section"),
    ],
)
def test_wrong_value_names_the_key(tmp_path: Path, change: tuple[str, str], key: str, words: str) -> None:
    """Each mistake is reported with its key and what is wrong."""
    text = MINIMAL.replace(*change, 1)
    assert text != MINIMAL
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert info.value.key == key
    assert words in info.value.problem


def test_secret_never_shows_in_repr(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), environ={})
    assert "change-me" not in repr(s)
    assert s.secrets() == ["change-me"]


def _edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_config_check_exit_codes(tmp_path: Path) -> None:
    """`edge config check` says ok (exit 0), or one line naming the key (exit 2), never a traceback."""
    good = write(tmp_path, MINIMAL)
    ok = _edge("config", "check", "--config", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("port = 8765", "port = -1").format(data_dir=tmp_path), encoding="utf-8")
    result = _edge("config", "check", env={"EDGE_CONFIG": str(bad)})
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "edge: config api.port: must be a port number between 1 and 65535 (0: any free port), got -1"
    )

    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\nstore_id=", encoding="utf-8")
    result = _edge("run", "--config", str(broken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("edge: config --config:") and "not valid TOML" in result.stderr
