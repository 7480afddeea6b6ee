"""Without [mqtt] nothing changes: paho-mqtt is never imported (start-up time and memory stay as they were)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import asyncio, sys
from edge.app import Agent
from edge.cli import build_parser
from edge.ops.technician import doctor
import edge.api.routes, edge.api.status_page
print(sorted(m for m in sys.modules if m.startswith("paho")))
"""


def test_an_agent_without_mqtt_never_imports_paho() -> None:
    """The agent's modules (composition root, CLI, doctor, API) load without paho-mqtt: it is imported only where
    [mqtt] url is set."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
