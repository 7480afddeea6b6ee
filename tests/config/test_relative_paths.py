"""agent.data_dir or backup.dir typed without its leading slash: each `edge` command (and the agent, whose unit has
no working directory: /) would use a folder of its own under wherever it was started, each a different database. The
check refuses it naming the setting, exit 2, and creates nothing. Before, it said ok and made ./var/lib/edge/cache in
the technician's current folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.box import write_box_config
from tests.helpers import edge_blocking


@pytest.mark.parametrize(
    ("section", "key", "example"),
    [("agent", "data_dir", "/var/lib/edge"), ("backup", "dir", "/media/usb/edge-backups")],
)
def test_a_relative_data_or_backup_folder_is_refused_and_the_check_creates_nothing(
    tmp_path: Path, section: str, key: str, example: str
) -> None:
    (tmp_path / "etc").mkdir()
    config = write_box_config(tmp_path / "etc", **{section: {key: "var/lib/edge"}})
    here = tmp_path / "here"
    here.mkdir()
    done = edge_blocking("config", "check", "--config", str(config), cwd=here)
    assert done.returncode == 2, done.stdout
    assert done.stderr.strip() == (
        f"edge: config {section}.{key}: must be an absolute path like {example}, got 'var/lib/edge'"
    ), done.stderr
    assert list(here.iterdir()) == []
