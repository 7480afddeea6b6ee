"""The shipped edge.example.toml is a valid config as it stands."""

from __future__ import annotations

from pathlib import Path

from edge.config import load_settings

EXAMPLE = Path(__file__).parents[1] / "edge.example.toml"


def test_example_config_loads() -> None:
    """A technician who copies the example and edits values starts from a config that passes the check."""
    settings = load_settings(EXAMPLE, environ={})
    assert settings.agent.store_id == "berlin-mitte"
    assert set(settings.printers) == {"kitchen", "front"}
    assert settings.receipts.printer == "front"
