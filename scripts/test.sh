#!/usr/bin/env bash
# Quick start 2: install into .venv with the test extras and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test,hid]'
# The checkout is installed editable, so nothing compiled its bytecode; where PYTHONDONTWRITEBYTECODE is set (this
# CI's machines) every agent process the tests start would compile the agent again (~0.15-0.3 s of CPU a start).
.venv/bin/python -m compileall -q edge
exec .venv/bin/python -m pytest "$@"
