#!/usr/bin/env python3
"""Set up the manager's e-mail alerts on site; the same wizard as `edge setup-notifications`."""

import sys
from pathlib import Path

# Run straight from a checkout too, where the edge package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.alerts.setup import main

if __name__ == "__main__":
    sys.exit(main())
