#!/usr/bin/env bash
# Quick start 1: install into .venv and run the agent in demo mode (simulated printers, all on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e .
exec .venv/bin/edge demo "$@"
