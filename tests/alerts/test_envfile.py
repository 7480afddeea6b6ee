"""The secrets file: one format systemd's EnvironmentFile=, python-dotenv and the agent read alike; written whole."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge.config import read_env
from edge.config.envfile import EnvFileError, parse_env, pasted_quotes, quote, update_env_file
from edge.errors import ConfigError
from tests.alerts.helpers import systemd_reads


def agent_reads(path: Path) -> dict[str, str]:
    """What the agent's config loader takes from the file (the EDGE_ENV_FILE pointing at it aside)."""
    found = read_env(None, {"EDGE_ENV_FILE": str(path)})
    del found["EDGE_ENV_FILE"]
    return found


NASTY = {
    "EDGE_SMTP_PASSWORD": "it's \"quoted\" \\ back\\\\slash \\' \\n",
    "EDGE_API_TOKEN": "$HOME ${HOME} `id` \\$x",
    "EDGE_CENTRAL_TOKEN": "  spaces around # not a comment = sign  ",
    "EDGE_SMTP_FROM": "Küche Mitte <küche@bäckerei.de> €",
    "EDGE_SMTP_USERNAME": "trailing backslash\\",
    "EDGE_ALERT_TO": ";leading semicolon, 'single",
    "EDGE_SMTP_HOST": "",
}


def test_nasty_values_read_back_identically_by_systemd_dotenv_and_the_agent(tmp_path: Path) -> None:
    """Quotes, backslashes, $, #, spaces, '=', non-ASCII and an empty value: systemd, python-dotenv and the agent's own
    reader all read back exactly what was written."""
    env = tmp_path / "edge.env"
    update_env_file(env, NASTY)
    assert systemd_reads(env) == NASTY
    assert dict(dotenv_values(env, interpolate=False)) == NASTY
    assert agent_reads(env) == NASTY


# The code points systemd's UTF-8 check refuses besides surrogates (src/basic/utf8.c, unichar_is_valid): U+FDD0-U+FDEF
# and the last two of every plane. A file holding one is refused whole (EINVAL): a unit reading it does not start.
NONCHARACTERS = [chr(c) for c in range(0xFDD0, 0xFDF0)] + [
    chr(p << 16 | low) for p in range(17) for low in (0xFFFE, 0xFFFF)
]


@settings(max_examples=60, deadline=None)
@given(
    value=st.text(
        alphabet=st.characters(exclude_categories=("Cs", "Cc"), exclude_characters=NONCHARACTERS), max_size=40
    )
)
def test_any_printable_value_round_trips(tmp_path_factory: pytest.TempPathFactory, value: str) -> None:
    """Any value without control characters or noncharacters (nor wrapped in typographic quotes, refused both ways:
    tests/test_config_env_layers.py) is read back identically by systemd, python-dotenv and the agent."""
    assume(not pasted_quotes(value))
    env = tmp_path_factory.mktemp("rt") / "edge.env"
    env.write_text(f"EDGE_SMTP_PASSWORD={quote('EDGE_SMTP_PASSWORD', value)}\n", encoding="utf-8")
    assert systemd_reads(env) == {"EDGE_SMTP_PASSWORD": value}
    assert dotenv_values(env, interpolate=False) == {"EDGE_SMTP_PASSWORD": value}
    assert parse_env(env.read_text(encoding="utf-8"), source=str(env)) == {"EDGE_SMTP_PASSWORD": value}


def refused_write(env: Path, value: str) -> str:
    """Writing ``value`` as the SMTP password into a secrets file holding a token: refused naming the key, the file
    left as it was; the refusal's text."""
    env.write_text("EDGE_API_TOKEN=keep-me-0123456789\n", encoding="utf-8")
    env.chmod(0o600)
    with pytest.raises(EnvFileError) as err:
        update_env_file(env, {"EDGE_SMTP_PASSWORD": value})
    assert "EDGE_SMTP_PASSWORD" in str(err.value)
    assert env.read_text(encoding="utf-8") == "EDGE_API_TOKEN=keep-me-0123456789\n"
    return str(err.value)


@pytest.mark.parametrize("value", ["\ufdd0", "pass\ufffeword", "\U0010ffff"])
def test_unicode_noncharacters_are_refused_on_write_and_read(tmp_path: Path, value: str) -> None:
    """systemd refuses a secrets file with a Unicode noncharacter (U+FDD0-U+FDEF, U+xFFFE, U+xFFFF) in a value: the
    agent's unit would not start, while `edge` by hand reads it. The writer refuses such a value naming the key and
    writes nothing; the agent's reader refuses such a line as it refuses any line systemd reads differently."""
    env = tmp_path / "edge.env"
    assert "noncharacter" in refused_write(env, value)
    line = 'EDGE_SMTP_PASSWORD="' + value + '"\n'
    env.write_text(line, encoding="utf-8")
    with pytest.raises(AssertionError, match=r"-22"):  # systemd refuses the whole file (EINVAL): the unit cannot start
        systemd_reads(env)
    with pytest.raises(EnvFileError, match=r"line 1: .*noncharacter"):
        parse_env(line, source=str(env))


@pytest.mark.parametrize("value", ["two\nlines", "tab\there", "carriage\rreturn", "nul\x00", "bell\x07", "del\x7f"])
def test_control_characters_are_refused(tmp_path: Path, value: str) -> None:
    """A value with a control character (line break, tab, ...) is refused naming the key, and nothing is written: the
    file stays one line per key, which is what the agent's strict reader accepts."""
    env = tmp_path / "edge.env"
    assert "control character" in refused_write(env, value)
    assert not (tmp_path / "edge.env.bak").exists()


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("EDGE_SMTP_PASSWORD='it\\'s'", "line 2"),  # systemd: it\s'   python-dotenv: it's
        ("EDGE_SMTP_PASSWORD=plain #comment", "line 2"),  # systemd keeps '#comment', python-dotenv drops it
        ("EDGE_SMTP_PASSWORD=back\\\\slash", "line 2"),  # systemd: back\slash   python-dotenv: back\\slash
        ("EDGE_SMTP_PASSWORD='a\\\\b'", "line 2"),  # systemd: a\\b   python-dotenv: a\b
        ('EDGE_SMTP_PASSWORD="dollar \\$"', "line 2"),  # systemd: dollar $   python-dotenv: dollar \$
        ("export EDGE_SMTP_PASSWORD=x", "line 2"),  # systemd: a variable named 'export EDGE_SMTP_PASSWORD'
        ("EDGE_SMTP_PASSWORD", "line 2"),
    ],
)
def test_hand_written_lines_read_differently_by_systemd_are_refused(tmp_path: Path, line: str, words: str) -> None:
    """A hand-edited line that systemd and python-dotenv would read differently stops the agent with its line number."""
    env = tmp_path / "edge.env"
    env.write_text(f"# site notes\n{line}\n", encoding="utf-8")
    env.chmod(0o600)
    with pytest.raises(ConfigError) as err:
        agent_reads(env)
    assert words in str(err.value) and str(env) in str(err.value)


def test_update_keeps_other_lines_and_reads_back(tmp_path: Path) -> None:
    """A key set twice in the old file is written once, in place; new keys are appended under a comment; a key given
    as None is removed; other lines stay."""
    env = tmp_path / "edge.env"
    env.write_text(
        "# site notes\nEDGE_SMTP_HOST=old\nEDGE_API_TOKEN=abc\nEDGE_SMTP_HOST=older\nEDGE_SMTP_CA_FILE=/old/ca.pem\n",
        encoding="utf-8",
    )
    env.chmod(0o600)
    password = "p'a\"ss\\w${HOME}$x #not-a-comment"
    backup = update_env_file(
        env, {"EDGE_SMTP_HOST": "smtp.example.com", "EDGE_SMTP_PASSWORD": password, "EDGE_SMTP_CA_FILE": None}
    )
    lines = env.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["# site notes", 'EDGE_SMTP_HOST="smtp.example.com"', "EDGE_API_TOKEN=abc"]
    assert lines[3:5] == ["", "# e-mail alerts (written by setup-notifications)"]
    assert agent_reads(env) == {
        "EDGE_SMTP_HOST": "smtp.example.com",
        "EDGE_API_TOKEN": "abc",
        "EDGE_SMTP_PASSWORD": password,
    }
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert backup == tmp_path / "edge.env.bak" and "older" in backup.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_new_file_without_backup(tmp_path: Path) -> None:
    """No old file: no backup, the new one is private from the start."""
    env = tmp_path / "sub" / "edge.env"
    assert update_env_file(env, {"EDGE_ALERT_TO": "a@b.test,c@d.test"}) is None
    assert dotenv_values(env)["EDGE_ALERT_TO"] == "a@b.test,c@d.test"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
