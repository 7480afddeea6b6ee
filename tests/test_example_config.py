"""The shipped edge.example.toml is a valid config once the technician has set the API token in the secrets file."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edge.config import _printers, _sections, load_settings
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


def test_each_default_the_example_shows_loads_when_uncommented(tmp_path: Path) -> None:
    """Each `# key = value` line of the example is its default: a technician who takes the line in as it stands gets a
    config that loads and means the same. Before stop 67 `# dir = ""` under [backup] stopped the start ("must be an
    absolute path … got '.'": the docs probe, D4)."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    default = re.compile(r"# ([a-z_]+) = (.+?)(\s+#.*)?$")
    examples = {"logo"}  # shown with an example's value (a file of the technician's), not its default (none)
    failed, section_on = [], True
    for n, line in enumerate(lines):
        if re.match(r"(# )?\[", line):  # a table, or one shown commented out: its keys are examples too
            section_on = line.startswith("[")
        match = default.fullmatch(line)
        if not section_on or not match or match[1] in examples or match[2].endswith(("[", "{")):
            continue
        config = tmp_path / f"line{n}.toml"
        config.write_text("\n".join([*lines[:n], f"{match[1]} = {match[2]}", *lines[n + 1 :]]), encoding="utf-8")
        try:
            load_settings(config, environ={"EDGE_API_TOKEN": "tok-0123456789abcdef"})
        except ConfigError as err:
            failed.append(f"line {n + 1}: {line.strip()}: {err}")
    assert failed == []


def test_the_example_names_every_setting() -> None:
    """configuration.md says the example lists every key with its default: a technician reads it, not the code.
    Before stop 67 six were missing (`api.status_refresh_s`, `alerts.storage_stall_s`, `central.silent_down_s`,
    `central.proxy_password`, a printer's `cancel_kanji` and `answers_status`, a scanner's `layout`: the docs probe,
    D10)."""
    named: dict[str, set[str]] = {}
    section = None
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if header := re.match(r"#?\s*\[([a-z]+)", line):  # a table, or one shown commented out ([printers.kitchen])
            section = header[1]
        elif (key := re.match(r"#?\s*([a-z_]+)\s*=", line)) and section:
            named.setdefault(section, set()).add(key[1])
    tables: dict[str, tuple[type, ...]] = {
        "agent": (_sections.AgentSettings,),
        "api": (_sections.ApiSettings,),
        "receipts": (_sections.ReceiptSettings,),
        "spool": (_sections.SpoolSettings,),
        "retention": (_sections.RetentionSettings,),
        "backup": (_sections.BackupSettings,),
        "printing": (_sections.PrintingSettings,),
        "smtp": (_sections.SmtpSettings,),
        "alerts": (_sections.AlertSettings,),
        "central": (_sections.CentralSettings,),
        "mqtt": (_sections.MqttSettings,),
        "scanners": (_sections.ScannerSettings,),
        "printers": (
            _printers.NetworkPrinterSettings,
            _printers.UsbPrinterSettings,
            _printers.SerialPrinterSettings,
            _printers.FilePrinterSettings,
        ),
    }
    missing = sorted(
        f"{table}.{field.name}"
        for table, types in tables.items()
        for cls in types
        for field in dataclasses.fields(cls)
        if field.init and field.name != "name" and field.name not in named.get(table, set())
    )
    assert missing == []
