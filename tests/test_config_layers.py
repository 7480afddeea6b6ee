"""Config is the lowest layer: it imports no domain code, and a printer profile is checked where printing is set up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edge
from tests.helpers import edge_blocking

EDGE = Path(edge.__file__).parent
CONFIG_MODULES = sorted(EDGE.glob("config/**/*.py")) or [EDGE / "config.py"]

MINIMAL = """
[agent]
store_id = "s1"
data_dir = "{data_dir}"

[api]
token = "tok-0123456789abcdef"

[printers.kitchen]
type = "network"
host = "127.0.0.1"
profile = "{profile}"

[stations]
kitchen = "kitchen"

[smtp]
host = "127.0.0.1"
security = "none"
sender = "edge@example.com"

[alerts]
to = ["chef@example.com"]
quiet_hours = "22:00-07:00"
"""


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_config_imports_only_the_standard_library_and_its_own_modules() -> None:
    """No config module imports printing, alerts or a third-party package, not even lazily inside a function."""
    for path in CONFIG_MODULES:
        for module in _imported_modules(path):
            top = module.split(".")[0]
            # edge.errors, edge.durable and edge.chars are leaves of the standard library, below every layer
            own = module in ("edge.errors", "edge.durable", "edge.chars", "edge.config") or module.startswith(
                "edge.config."
            )
            assert own or (top != "edge" and top in sys.stdlib_module_names), f"{path.name} imports {module}"


def _config(tmp_path: Path, profile: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(MINIMAL.format(data_dir=tmp_path / "data", profile=profile), encoding="utf-8")
    return path


def test_loading_a_config_loads_no_printing_or_alert_code(tmp_path: Path) -> None:
    """Loading a whole config (printer profile, alert hours, secrets file) brings in neither python-escpos' capability
    database nor any alert or printing module: commands that only read the config start fast. (edge.tls comes with
    the package: edge/__init__.py imports aiohttp through it.)"""
    config = _config(tmp_path, "TM-T88V")
    secrets = tmp_path / "edge.env"
    secrets.write_text('EDGE_SMTP_PASSWORD="pw-0123456789"\n', encoding="utf-8")
    secrets.chmod(0o600)
    script = (
        "import sys; from pathlib import Path; from edge.config import load_settings;"
        f"load_settings(Path({str(config)!r}), environ={{}});"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'escpos'"
        " or (m.startswith('edge.') and m.split('.')[1] not in ('config', 'errors', 'durable', 'chars', 'tls')))))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def test_unknown_printer_profile_stops_check_and_start_with_one_line(tmp_path: Path) -> None:
    """`edge config check` and `edge run` with a profile python-escpos does not know: exit 2 and the same one line
    naming the key, before the agent opens anything."""
    config = _config(tmp_path, "TM-X")
    line = (
        "edge: config printers.kitchen.profile: unknown python-escpos profile 'TM-X' (e.g. default, TM-T88V, TM-T20II)"
    )
    for command in ("config", "check"), ("run",):
        result = edge_blocking(*command, "--config", str(config))
        assert (result.returncode, result.stderr.strip()) == (2, line), command
    assert not (tmp_path / "data" / "edge.db").exists()
