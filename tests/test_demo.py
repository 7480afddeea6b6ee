"""Quick start 1 from outside: `edge demo --once` in a fresh directory, twice on the same kept data."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def demo(data_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "edge", "demo", "--once", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_demo_prints_every_ticket_and_reports_to_central_and_runs_again_on_its_kept_data(tmp_path: Path) -> None:
    """The demo prints the sample and recovered tickets and the central simulator hears what printed; run again on the
    kept database it takes new sample orders (201, not a 409 for content that differs only in its times)."""
    for _ in range(2):
        out = demo(tmp_path / "demo-data")
        assert out.count(": 201 stored") == 3, out
        summary = re.search(r"demo: (\d+) tickets printed; the central API got (\d+) status events", out)
        assert summary is not None, out
        assert int(summary[1]) >= 10 and int(summary[2]) > 0, summary[0]
