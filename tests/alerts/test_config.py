"""[smtp] and [alerts] settings: the environment names the setup script writes, and clear errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.config import parse_settings
from edge.errors import ConfigError

BASE: dict[str, Any] = {"agent": {"store_id": "berlin-01"}, "api": {"token": "tok-0123456789abcdef"}}


def test_environment_names_from_the_issue() -> None:
    """EDGE_SMTP_* fill [smtp], EDGE_SMTP_FROM the sender, EDGE_ALERT_TO (comma-separated) the recipients; the password
    stays secret."""
    env = {
        "EDGE_SMTP_HOST": "smtp.example.com",
        "EDGE_SMTP_PORT": "465",
        "EDGE_SMTP_SECURITY": "tls",
        "EDGE_SMTP_USERNAME": "edge@example.com",
        "EDGE_SMTP_PASSWORD": "app-pass-1234",
        "EDGE_SMTP_FROM": "Filiale <edge@example.com>",
        "EDGE_ALERT_TO": "chef@example.com, vize@example.com",
    }
    s = parse_settings(BASE, env=env)
    assert (s.smtp.host, s.smtp.port, s.smtp.security, s.smtp.username, s.smtp.sender) == (
        "smtp.example.com",
        465,
        "tls",
        "edge@example.com",
        "Filiale <edge@example.com>",
    )
    assert s.alerts.to == ["chef@example.com", "vize@example.com"]
    assert s.smtp.password.get() == "app-pass-1234" and "app-pass-1234" not in repr(s.smtp)
    assert "app-pass-1234" in s.secrets()  # so logging scrubs it


def test_defaults_a_manager_accepts() -> None:
    """Without an [smtp] host alerting is off; the timers default to 30 s, 2 min and 4 h."""
    s = parse_settings(BASE)
    assert s.smtp.host == "" and s.alerts.to == []
    assert (s.alerts.group_wait_s, s.alerts.group_interval_s, s.alerts.repeat_interval_s) == (30.0, 120.0, 4 * 3600.0)


@pytest.mark.parametrize(
    ("data", "env", "key", "words"),
    [
        ({"smtp": {"host": "smtp.example.com", "sender": "a@b.test"}}, {}, "alerts.to", "EDGE_ALERT_TO"),
        ({}, {"EDGE_SMTP_HOST": "h", "EDGE_ALERT_TO": "a@b.test"}, "smtp.sender", "EDGE_SMTP_FROM"),
        ({"smtp": {"security": "ssl"}}, {}, "smtp.security", "'starttls', 'tls', 'none'"),
        ({"alerts": {"opening_hours": "8-23"}}, {}, "alerts.opening_hours", "HH:MM"),
        ({"alerts": {"quiet_hours": "22:00-07:00-09:00"}}, {}, "alerts.quiet_hours", "HH:MM-HH:MM"),
        ({"alerts": {"group_interval_s": 0}}, {}, "alerts.group_interval_s", "greater than 0"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, Any], env: dict[str, str], key: str, words: str) -> None:
    """A wrong alert setting stops the start with one line naming the key and what is wrong."""
    with pytest.raises(ConfigError) as err:
        parse_settings({**BASE, **data}, env=env)
    assert err.value.key == key and words in str(err.value)


PLAIN_LOGIN = {
    "smtp": {"host": "smtp.example.com", "port": 25, "security": "none", "username": "edge", "password": "pw"},
    "alerts": {"to": ["chef@example.com"]},
}


def test_login_in_clear_to_another_host_is_refused() -> None:
    """security = none with a user name to a host that is not this box would send the password unencrypted over the
    network: the config is refused with one line naming the key and the way out; loopback or an explicit opt-in pass."""
    with pytest.raises(ConfigError) as err:
        parse_settings({**BASE, **PLAIN_LOGIN})
    assert err.value.key == "smtp.security"
    assert "unencrypted" in str(err.value) and "smtp.allow_plain_login" in str(err.value)
    assert "\n" not in str(err.value)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.53"):
        parse_settings({**BASE, **PLAIN_LOGIN, "smtp": {**PLAIN_LOGIN["smtp"], "host": host}})
    allowed = parse_settings({**BASE, **PLAIN_LOGIN, "smtp": {**PLAIN_LOGIN["smtp"], "allow_plain_login": True}})
    assert allowed.smtp.allow_plain_login
    parse_settings({**BASE, **PLAIN_LOGIN, "smtp": {**PLAIN_LOGIN["smtp"], "username": "", "sender": "a@b.test"}})


def test_config_check_refuses_login_in_clear_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edge config check` stops with exit code 2 and one readable line when the password would go out in clear."""
    monkeypatch.delenv("EDGE_CONFIG", raising=False)
    config = tmp_path / "edge.toml"
    config.write_text(
        '[agent]\nstore_id = "berlin-01"\n[api]\ntoken = "tok-0123456789abcdef"\n'
        '[smtp]\nhost = "mail.example.com"\nport = 25\nsecurity = "none"\nusername = "edge"\n'
        '[alerts]\nto = ["chef@example.com"]\n',
        encoding="utf-8",
    )
    assert main(["config", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge: config smtp.security:")
