#!/usr/bin/env bash
# Lint, format and type checks CI runs after the tests; expects the .venv that scripts/test.sh made.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check edge tests scripts
.venv/bin/ruff format --check edge tests scripts
.venv/bin/mypy edge
