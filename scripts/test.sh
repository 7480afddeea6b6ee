#!/usr/bin/env bash
# Quick start 2: install into .venv with the test extras and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test,hid]'
exec .venv/bin/python -m pytest "$@"
