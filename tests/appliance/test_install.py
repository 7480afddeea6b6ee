"""scripts/install.sh and scripts/upgrade.sh in a throwaway root (--prefix): idempotent, uninstall keeps data, upgrade
rolls back."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import load_settings, read_secrets
from edge.sim.powercut import PowerCut
from tests.helpers import BORROWED, HID_SCANNER, OFFLINE_BUILD, build_with_evdev, has_evdev, small_disk

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
    for name in ("edge", "migrations", "systemd", "scripts", "docs"):
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


def test_the_readme_on_the_box_finds_every_page_it_links_to(root: Path) -> None:
    """The technician reads /opt/edge-agent/README.md on the box, where the checkout is not: each docs/ page it links
    to is there beside it. Before (the tech77 probe, D1): 16 links to pages the box did not have."""
    opt = root / "opt/edge-agent"
    readme = (opt / "README.md").read_text()
    linked = {m[1] for m in re.finditer(r"\]\((docs/[^)#]+)", readme)}
    assert linked, "the README links to no docs/ page: this test reads its links wrong"
    assert sorted(page for page in linked if not (opt / page).is_file()) == []


def test_second_install_changes_nothing_and_keeps_the_config(root: Path, source: Path) -> None:
    """A second install run changes no file (not even an mtime) and keeps the config the technician edited."""
    before = tree(root)
    second = run(source / "scripts/install.sh", "--prefix", str(root), "--python", BASE_PYTHON)
    assert second.returncode == 0, second.stderr
    assert "wrote" not in second.stdout and "installed" not in second.stdout
    assert tree(root) == before
    assert f'data_dir = "{root}/var/lib/edge"' in (root / "etc/edge/edge.toml").read_text()


def test_a_power_cut_right_after_install_leaves_the_secrets_file_and_config_whole(
    root: Path, source: Path, powercut_shim: Path, tmp_path: Path
) -> None:
    """install.sh writes the first edge.env (a random EDGE_API_TOKEN) and edge.toml; the power goes right after it
    (scripts/powercut.c: each file of /etc/edge as its last fsync left it). Both are whole: the agent's config loads
    with that token. Before, edge.env was written with `printf >` and never synced: the cut left it empty, and the
    agent refused to start ("api.token: ...")."""
    etc = root / "etc/edge"
    edited = (etc / "edge.toml").read_text()
    (etc / "edge.env").unlink()
    (etc / "edge.toml").unlink()
    power = PowerCut(powercut_shim, etc, tmp_path / "durable")
    again = run(source / "scripts/install.sh", "--prefix", str(root), "--python", BASE_PYTHON, env=power.env())
    assert again.returncode == 0, again.stderr
    power.cut(("edge.env", "edge.toml"))
    token = read_secrets(etc / "edge.env").get("EDGE_API_TOKEN", "")
    assert len(token) >= 32, (etc / "edge.env").read_bytes()
    assert (etc / "edge.toml").read_text() == (source / "edge.example.toml").read_text()
    (etc / "edge.toml").write_text(edited)  # the tests below use the data directory under root
    assert load_settings(etc / "edge.toml", environ={}).api.token.get() == token


def test_an_install_after_a_cut_clears_what_the_cut_left_and_gives_an_empty_secrets_file_a_token(
    root: Path, source: Path
) -> None:
    """What an install or upgrade cut off (a power cut, a killed SSH session) left, as it left it: the temporary files
    each of them writes before its rename (a secrets file with a token among them, mode 0600, in /etc/edge), and an
    empty edge.env (what the install before durable writes left after a cut: `printf >`, never synced). The next
    install removes the temporaries (they hold the install lock, so no other run owns them) and writes the empty
    secrets file anew with a token, so the agent starts. Before, they stayed for ever (a new run has a new PID), and an
    empty edge.env stayed empty: the agent refused to start ("api.token"), and running install.sh again, the
    documented fix, changed nothing."""
    etc, opt, units = root / "etc/edge", root / "opt/edge-agent", root / "etc/systemd/system"
    left = [
        etc / ".edge.env.new.4242",
        etc / ".edge.toml.new.4242",
        units / "edge-agent.service.new.4242",
        opt / "README.md.new.4242",
    ]
    for path in left:
        path.write_text("EDGE_API_TOKEN=half-written\n")
    (opt / ".current.new.4242").symlink_to("releases/gone")
    (etc / "edge.env").write_bytes(b"")
    again = run(source / "scripts/install.sh", "--prefix", str(root), "--python", BASE_PYTHON)
    assert again.returncode == 0, again.stderr
    assert [p for p in [*left, opt / ".current.new.4242"] if p.exists() or p.is_symlink()] == []
    assert sorted(p.name for p in units.iterdir()) == sorted(UNITS)
    token = read_secrets(etc / "edge.env").get("EDGE_API_TOKEN", "")
    assert len(token) >= 32, (etc / "edge.env").read_bytes()
    assert load_settings(etc / "edge.toml", environ={}).api.token.get() == token
    assert oct((etc / "edge.env").stat().st_mode & 0o777) == "0o600"


# A program path the docs quote: an absolute path ending in bin/NAME, in or out of backticks.
_PROGRAM_PATH = re.compile(r"(?<![\w.~/-])(/(?:[\w.-]+/)*s?bin/[\w.-]+)")


def test_edge_is_on_the_path_and_every_program_the_docs_name_exists(root: Path) -> None:
    """The technician types what docs/operations.md says: bare `edge ...` (sudo's and a login's PATH have
    /usr/local/bin) and the program paths it quotes. install.sh links /usr/local/bin/edge to the program in use
    (current/, so it follows every upgrade and rollback). Before, there was no `edge` on the PATH ("command not
    found") and the docs named /opt/edge-agent/venv/bin/edge, which a fresh install does not have."""
    link = root / "usr/local/bin/edge"
    assert link.is_symlink() and os.readlink(link) == str(root / "opt/edge-agent/current/bin/edge")
    helped = subprocess.run(
        [str(link), "--help"], capture_output=True, text=True, timeout=60, env={**os.environ, **BORROWED}
    )
    assert helped.returncode == 0 and "setup-notifications" in helped.stdout, helped.stderr
    quoted = {
        p for doc in ("operations.md", "alerts.md") for p in _PROGRAM_PATH.findall((REPO / "docs" / doc).read_text())
    }
    assert "/usr/local/bin/edge" in quoted
    # What install.sh lays out (/opt, /usr/local) must be under its root; the system's own programs on this machine.
    missing = [
        p for p in sorted(quoted) if not (root / p[1:] if p.startswith(("/opt/", "/usr/local/")) else Path(p)).exists()
    ]
    assert missing == []


def newer_source(source: Path, target: Path) -> Path:
    """``source`` with a change: a release of its own, one for each name of ``target``."""
    shutil.copytree(source, target)
    (target / "edge" / "newer.py").write_text(f'"""A change: another release, {target.name}."""\n')
    return target


def test_a_hid_scanner_in_the_config_gets_evdev_installed_and_a_build_keeps_what_the_program_in_use_has(
    root: Path, source: Path, tmp_path: Path
) -> None:
    """The technician configures a keyboard-wedge scanner (type = "hid", docs/scanners.md) and runs install.sh again:
    the program in use now has evdev, which the agent reads such scanners through, and its config check passes (the
    agent starts). A later build (an upgrade's) for a config without that scanner keeps evdev, as the program in use
    has it. Before, install.sh never asked pip for the hid extra and a complete release was not built again: the agent
    refused to start ("hid needs the evdev package, which is not installed"), whatever install.sh was run."""
    config = root / "etc/edge/edge.toml"
    edited = config.read_text()
    env = build_with_evdev(tmp_path / "build")
    config.write_text(edited + HID_SCANNER)
    try:
        installed = run(source / "scripts/install.sh", "--prefix", str(root), "--python", BASE_PYTHON, env=env)
        assert installed.returncode == 0, installed.stderr
        current = root / "opt/edge-agent/current"
        assert has_evdev(current), f"no evdev in the program in use {os.readlink(current)}: {installed.stdout}"
        checked = subprocess.run(
            [str(current / "bin/edge"), "config", "check", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": env["PYTHONPATH"], "EDGE_ENV_FILE": str(root / "etc/edge/edge.env")},
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        config.write_text(edited)
    newer = newer_source(source, tmp_path / "newer")
    built = run(newer / "scripts/install.sh", "--prefix", str(root), "--build-only", "--python", BASE_PYTHON, env=env)
    assert built.returncode == 0, built.stderr
    release = Path(built.stdout.split("release ready: ")[-1].strip())
    assert release.parent == root / "opt/edge-agent/releases" and has_evdev(release), built.stdout


def test_an_evdev_that_cannot_be_compiled_says_what_to_install_and_the_program_in_use_stays(
    root: Path, source: Path, tmp_path: Path
) -> None:
    """A hid scanner in the config, and evdev cannot be compiled on the box (no gcc: an sdist whose compile fails as it
    does there): install.sh of a new version fails, its last line says what to install, and the program in use stays,
    with nothing of the build left. Before, install.sh never asked for evdev: it installed a program that refused to
    start ("hid needs the evdev package, which is not installed")."""
    config = root / "etc/edge/edge.toml"
    edited = config.read_text()
    releases = sorted(p.name for p in (root / "opt/edge-agent/releases").iterdir())
    in_use = os.readlink(root / "opt/edge-agent/current")
    newer = newer_source(source, tmp_path / "newer-without-gcc")
    config.write_text(edited + HID_SCANNER)
    try:
        failed = run(
            newer / "scripts/install.sh",
            *("--prefix", str(root), "--python", BASE_PYTHON),
            env=build_with_evdev(tmp_path / "build", compiles=False),
        )
    finally:
        config.write_text(edited)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("install.sh: evdev, which hid scanners are read through, could not be built"), failed.stderr
    assert "apt install gcc linux-libc-dev python3-dev" in last and "nothing was installed" in last, last
    assert os.readlink(root / "opt/edge-agent/current") == in_use
    assert sorted(p.name for p in (root / "opt/edge-agent/releases").iterdir()) == releases


def test_uninstall_keeps_data_and_purge_removes_it(root: Path, source: Path) -> None:
    """--uninstall removes the program and the units but keeps data and config; --purge removes those too."""
    (root / "var/lib/edge/keep.txt").write_text("data")
    uninstall = run(source / "scripts/install.sh", "--prefix", str(root), "--uninstall")
    assert uninstall.returncode == 0, uninstall.stderr
    assert not (root / "opt/edge-agent").exists() and not list((root / "etc/systemd/system").iterdir())
    assert not (root / "usr/local/bin/edge").is_symlink()
    assert (root / "var/lib/edge/keep.txt").read_text() == "data" and (root / "etc/edge/edge.toml").exists()
    purge = run(source / "scripts/install.sh", "--prefix", str(root), "--purge")
    assert purge.returncode == 0, purge.stderr
    assert not (root / "var/lib/edge").exists() and not (root / "etc/edge").exists()


@pytest.fixture
def small_box(tmp_path: Path) -> Iterator[Path]:
    """A box root on an 80 MiB file system: an SD card that really fills."""
    with small_disk(tmp_path / "box", 80) as box:
        yield box


def free_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / 2**20


def test_a_release_is_built_only_with_room_for_it_and_the_agent_and_a_failed_build_leaves_nothing(
    source: Path, small_box: Path, tmp_path: Path
) -> None:
    """A new release is a venv built on the box's SD card beside the agent's database while the agent takes orders.
    With less room than a release (the one in use, measured) plus what the agent keeps free
    (`alerts.disk_free_min_mb`), the build does not start and says why; a build that fails anyway (pip on a full card,
    a package it cannot fetch) is removed at once. Before, pip filled the card (orders refused while it ran) and its
    half-built release stayed there until the next run."""
    installed = run(source / "scripts/install.sh", "--prefix", str(small_box), "--python", BASE_PYTHON)
    assert installed.returncode == 0, installed.stderr
    [first] = (small_box / "opt/edge-agent/releases").iterdir()
    release_mb = sum(p.stat().st_size for p in first.rglob("*") if p.is_file()) / 2**20
    newer = tmp_path / "newer"
    shutil.copytree(source, newer)
    (newer / "edge" / "newer.py").write_text('"""A change: another release."""\n')
    config = small_box / "etc/edge/edge.toml"
    text = config.read_text().replace('data_dir = "/var/lib/edge"', f'data_dir = "{small_box}/var/lib/edge"')

    def reserve(mb: int) -> None:
        config.write_text(text.replace("# disk_free_min_mb = 200", f"disk_free_min_mb = {mb}"))

    before = free_mb(small_box)
    reserve(int(before - release_mb / 2))  # room for half a release above the agent's reserve
    refused = run(newer / "scripts/install.sh", "--prefix", str(small_box), "--build-only", "--python", BASE_PYTHON)
    assert refused.returncode == 1 and "not enough space" in refused.stderr, refused.stderr
    assert "alerts.disk_free_min_mb" in refused.stderr
    assert [p.name for p in (small_box / "opt/edge-agent/releases").iterdir()] == [first.name]
    assert abs(free_mb(small_box) - before) < 1
    reserve(0)
    failed = run(
        newer / "scripts/install.sh",
        "--prefix",
        str(small_box),
        "--build-only",
        "--python",
        BASE_PYTHON,
        env={"EDGE_PIP_ARGS": "--no-index"},  # its dependencies are nowhere to be found
    )
    assert failed.returncode != 0
    assert "filled up" not in failed.stderr, failed.stderr  # pip's own reason stands: the disk had room
    assert [p.name for p in (small_box / "opt/edge-agent/releases").iterdir()] == [first.name]
    assert abs(free_mb(small_box) - before) < 1


def test_a_first_install_on_a_card_too_small_for_a_release_says_so_and_leaves_nothing(
    source: Path, tmp_path: Path
) -> None:
    """The first install has no release in use to measure, so the room check cannot refuse it: pip starts and the
    card fills. Before, pip's own words ended the run ("Can't roll back edge-agent; was not uninstalled", Errno 28)
    and the technician was not told that nothing was installed or what to do. Now the last line says the disk filled
    up, how much the build had written and what was free, and nothing of the build is left."""
    with small_disk(tmp_path / "box", 2) as box:
        refused = run(source / "scripts/install.sh", "--prefix", str(box), "--python", BASE_PYTHON)
        assert refused.returncode == 1, refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith(f"install.sh: the disk of {box}/opt/edge-agent/releases filled up"), refused.stderr
        assert "nothing was installed" in last and "free some space" in last, last
        assert list((box / "opt/edge-agent/releases").iterdir()) == []
        assert free_mb(box) > 1.9  # the half-built release is gone
