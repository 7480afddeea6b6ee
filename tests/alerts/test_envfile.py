"""The .env writer: other keys and comments stay, duplicates go, tricky passwords read back exactly, 0600 and a backup."""

from __future__ import annotations

import stat
from pathlib import Path

from dotenv import dotenv_values

from edge.alerts.envfile import update_env_file
from edge.config import read_env


def test_update_keeps_other_lines_and_reads_back(tmp_path: Path) -> None:
    """A key set twice in the old file is written once, in place; new keys are appended under a comment; values survive quotes, $ and #."""
    env = tmp_path / ".env"
    env.write_text(
        "# site notes\nexport EDGE_SMTP_HOST=old\nEDGE_API_TOKEN=abc\nEDGE_SMTP_HOST=older\n", encoding="utf-8"
    )
    env.chmod(0o644)
    password = "p'a\"ss\\w${HOME}$x #not-a-comment"
    backup = update_env_file(env, {"EDGE_SMTP_HOST": "smtp.example.com", "EDGE_SMTP_PASSWORD": password})
    lines = env.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["# site notes", "EDGE_SMTP_HOST='smtp.example.com'", "EDGE_API_TOKEN=abc"]
    assert lines[3:5] == ["", "# e-mail alerts (written by setup-notifications)"]
    assert dotenv_values(env, interpolate=False)["EDGE_SMTP_PASSWORD"] == password
    assert (
        read_env(None, {"EDGE_ENV_FILE": str(env)})["EDGE_SMTP_PASSWORD"] == password
    )  # exactly as the agent reads it
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert backup == tmp_path / ".env.bak" and "older" in backup.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_new_file_without_backup(tmp_path: Path) -> None:
    """No old file: no backup, the new one is private from the start."""
    env = tmp_path / "sub" / ".env"
    assert update_env_file(env, {"EDGE_ALERT_TO": "a@b.test,c@d.test"}) is None
    assert dotenv_values(env)["EDGE_ALERT_TO"] == "a@b.test,c@d.test"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
