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
# pytest rewrites the asserts of every test module it imports, and each of the suite's workers imports them all: ~7 s
# of CPU a worker. Where bytecode is not written it did so in every worker of every run; one collection first, with
# bytecode written, leaves the rewritten modules for the workers to load (its errors, if any, the run itself reports).
PYTHONDONTWRITEBYTECODE= .venv/bin/python -m pytest --collect-only -q -p no:cacheprovider "$@" -n 0 >/dev/null 2>&1 || true
exec .venv/bin/python -m pytest "$@"
