"""scripts/install.sh and scripts/upgrade.sh in a throwaway root (--prefix): idempotent, uninstall keeps data, upgrade
rolls back."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import OFFLINE_BUILD

pytestmark = pytest.mark.slow(seconds=6)

REPO = Path(__file__).parents[2]
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
UNITS = [
    "edge-agent.service",
    "edge-health-check.service",
    "edge-health-check.timer",
    "edge-backup.service",
    "edge-backup.timer",
]


def run(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **OFFLINE_BUILD, **(env or {})}
    full_env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, timeout=240, env=full_env, cwd="/"
    )


def tree(root: Path) -> dict[str, tuple[int, str, int]]:
    """Every file under root with its mode, content hash and mtime: equal trees mean a run changed nothing."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            found[str(path.relative_to(root))] = (
                stat.st_mode,
                hashlib.sha256(path.read_bytes()).hexdigest(),
                stat.st_mtime_ns,
            )
    return found


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout, so the in-tree package build leaves the real one alone."""
    src = tmp_path_factory.mktemp("install") / "src"
    for name in ("edge", "migrations", "systemd", "scripts"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "edge.example.toml"):
        shutil.copy(REPO / name, src / name)
    return src


@pytest.fixture(scope="module")
def root(source: Path) -> Path:
    """One install into a throwaway root, shared by the tests below in file order (a venv and a package build take
    seconds)."""
    target = source.parent / "root"
    first = run(source / "scripts/install.sh", "--prefix", str(target), "--python", BASE_PYTHON)
    assert first.returncode == 0, first.stderr
    config = target / "etc/edge/edge.toml"
    config.write_text(config.read_text().replace('data_dir = "/var/lib/edge"', f'data_dir = "{target}/var/lib/edge"'))
    return target


def test_install_lays_out_program_config_and_units(root: Path, source: Path) -> None:
    """The program (a release venv, current pointing at it) with its migrations, the config from the example, a 0600
    secrets file, the five units, the data dir."""
    current = root / "opt/edge-agent/current"
    assert current.is_symlink() and os.readlink(current).startswith("releases/0.1.0-")
    assert (current / "bin/edge").exists() and (current / ".edge-release-complete").exists()
    assert (current / "share/edge-agent/migrations/001_core.sql").exists()
    assert "berlin-mitte" in (root / "etc/edge/edge.toml").read_text()
    assert oct((root / "etc/edge/edge.env").stat().st_mode & 0o777) == "0o600"
    assert oct((root / "etc/edge/edge.toml").stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in (root / "etc/systemd/system").iterdir()) == sorted(UNITS)
    assert (root / "var/lib/edge").is_dir()


def test_second_install_changes_nothing_and_keeps_the_config(root: Path, source: Path) -> None:
    """A second install run changes no file (not even an mtime) and keeps the config the technician edited."""
    before = tree(root)
    second = run(source / "scripts/install.sh", "--prefix", str(root), "--python", BASE_PYTHON)
    assert second.returncode == 0, second.stderr
    assert "wrote" not in second.stdout and "installed" not in second.stdout
    assert tree(root) == before
    assert f'data_dir = "{root}/var/lib/edge"' in (root / "etc/edge/edge.toml").read_text()


def test_uninstall_keeps_data_and_purge_removes_it(root: Path, source: Path) -> None:
    """--uninstall removes the program and the units but keeps data and config; --purge removes those too."""
    (root / "var/lib/edge/keep.txt").write_text("data")
    uninstall = run(source / "scripts/install.sh", "--prefix", str(root), "--uninstall")
    assert uninstall.returncode == 0, uninstall.stderr
    assert not (root / "opt/edge-agent").exists() and not list((root / "etc/systemd/system").iterdir())
    assert (root / "var/lib/edge/keep.txt").read_text() == "data" and (root / "etc/edge/edge.toml").exists()
    purge = run(source / "scripts/install.sh", "--prefix", str(root), "--purge")
    assert purge.returncode == 0, purge.stderr
    assert not (root / "var/lib/edge").exists() and not (root / "etc/edge").exists()
