"""TLS for the agent's own connections out (mail relay, MQTT broker): always verifying."""

from __future__ import annotations

import ssl
from pathlib import Path


def verifying_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's CAs, host names checked, plus ``ca_file`` for a company relay or broker with its own CA.
    ``create_default_context(cafile=...)`` would load only that file and drop the system CAs, so the file is added.
    Blocking: it reads the CA files, so callers build it once, in a thread."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=str(ca_file))
    return context
