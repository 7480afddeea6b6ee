"""Tests for running the agent as an appliance: systemd, health, metrics, status page, backups, install."""
