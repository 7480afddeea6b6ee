"""The shipped edge.example.toml is a valid config once the technician has set the API token in the secrets file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_settings
from edge.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "edge.example.toml"


def test_example_config_loads() -> None:
    """A technician who copies the example and sets EDGE_API_TOKEN starts from a config that passes the check."""
    settings = load_settings(EXAMPLE, environ={"EDGE_API_TOKEN": "tok-0123456789abcdef"})
    assert settings.agent.store_id == "berlin-mitte"
    assert set(settings.printers) == {"kitchen", "front"}
    assert settings.receipts.printer == "front"


def test_example_token_is_refused() -> None:
    """The example's own token, change-me, never starts an agent."""
    with pytest.raises(ConfigError) as err:
        load_settings(EXAMPLE, environ={})
    assert err.value.key == "api.token" and "placeholder 'change-me'" in err.value.problem
