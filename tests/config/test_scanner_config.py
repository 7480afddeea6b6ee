"""[scanners] a start cannot work with: each stops `edge config check` and `edge run` with one line naming the key
(exit 2: systemd does not restart a config error in a loop)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from edge.sim.scanner import SimScanner
from tests.config.box import write_box_config
from tests.helpers import edge_blocking


def _refused(config: Path, env: dict[str, str] | None = None) -> list[str]:
    """The last line of `edge config check` and of `edge run`, each asserted to end with exit 2 (the check's output
    that one line)."""
    lines = []
    for command in (("config", "check"), ("run",)):
        done: subprocess.CompletedProcess[str] = edge_blocking(*command, "--config", str(config), env=env, timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert command == ("run",) or done.stderr.count("\n") == 1, done.stderr
        lines.append(done.stderr.strip().splitlines()[-1])
    return lines


def test_a_hid_scanner_whose_evdev_cannot_be_loaded_stops_the_check_and_the_start(tmp_path: Path) -> None:
    """evdev is there but does not load (built for another Python, its compiled part missing): found is not enough,
    the check loads it. Before, the check passed, and the agent logged a traceback at every retry to open the
    scanner, every few seconds for good."""
    broken = tmp_path / "site" / "evdev"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("from evdev import _input  # the compiled part, missing\n", encoding="utf-8")
    path = os.pathsep.join(p for p in (str(broken.parent), os.environ.get("PYTHONPATH")) if p)
    config = write_box_config(tmp_path, scanners={"wedge": {"type": "hid", "port": "/dev/input/event7"}})
    for line in _refused(config, env={"PYTHONPATH": path}):
        assert line.startswith("edge: config scanners.wedge.type: hid needs the evdev package, which"), line
        assert "which cannot be loaded (" in line and "_input" in line and "run scripts/install.sh again" in line, line


def test_two_scanners_on_one_device_by_two_paths_stop_the_check_and_the_start(tmp_path: Path) -> None:
    """The pass scanner by its stable link (as udev's /dev/serial/by-id/... names are), the counter one by the device
    the link points to (/dev/ttyUSB0): one device. Before, the check passed and the start ran two readers on it, the
    second never able to open it (held exclusively), reported gone and mailed as offline for good."""
    sim = SimScanner(tmp_path / "usb-Honeywell_Scanner-if00")
    sim.plug()
    try:
        device = os.path.realpath(sim.path)
        scanners = {"pass": {"port": str(sim.path)}, "counter": {"port": device, "hand_out": True}}
        config = write_box_config(tmp_path, scanners=scanners)
        for line in _refused(config):
            assert line == (
                f"edge: config scanners.counter.port: {device} and scanners.pass.port ({sim.path}) are one device"
                f" ({device}): one scanner a device"
            ), line
    finally:
        sim.unplug()
