"""Config: the issue's minimal file works; every wrong value stops start-up with one line naming the key."""

from __future__ import annotations

import os
import pwd
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from edge.config import Secret, load_settings
from edge.config.envfile import quote

try:
    from edge.config import parse_recipients
except ImportError:
    parse_recipients = None
from edge.errors import ConfigError
from tests.helpers import edge_blocking

MINIMAL = """
[agent]
store_id = "berlin-mitte"
data_dir = "{data_dir}"
language = "de"

[api]
host = "127.0.0.1"
port = 8765
token = "tok-0123456789abcdef"

[printers.kitchen]
type = "network"
host = "10.0.0.21"
port = 9100
width = 48

[printers.front]
type = "network"
host = "10.0.0.22"
port = 9100
width = 48

[stations]          # station name -> printer name
kitchen = "kitchen"
bar = "kitchen"

[receipts]
printer = "front"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text.format(data_dir=tmp_path / "data"), encoding="utf-8")
    return path


def test_minimal_config_from_the_issue_loads(tmp_path: Path) -> None:
    """The exact keys from the issue, with real values, are a working config."""
    s = load_settings(write(tmp_path, MINIMAL), environ={})
    assert s.agent.store_id == "berlin-mitte"
    assert s.api.token == Secret("tok-0123456789abcdef")
    assert s.printers["kitchen"].host == "10.0.0.21" and s.printers["front"].port == 9100
    assert s.stations == {"kitchen": ["kitchen"], "bar": ["kitchen"]}
    assert s.receipts.printer == "front"
    assert s.agent.db_path == tmp_path / "data" / "edge.db"


def write_secrets(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "edge.env"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_environment_overrides_file_and_env_file(tmp_path: Path) -> None:
    """EDGE_* variables win over the secrets file edge.env beside the config, which wins over the file."""
    path = write(tmp_path, MINIMAL)
    write_secrets(tmp_path, "EDGE_API_TOKEN=from-dotenv\nEDGE_API_PORT=9000\n")
    s = load_settings(path, environ={"EDGE_API_PORT": "9100", "EDGE_PRINTERS_KITCHEN_WIDTH": "32"})
    assert s.api.token.get() == "from-dotenv"
    assert s.api.port == 9100
    assert s.printers["kitchen"].width == 32


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("port = 8765", 'port = "eighty"'), "api.port", "must be an integer"),
        (("port = 8765", "port = 70000"), "api.port", "between 1 and 65535"),
        (('language = "de"', 'language = "fr"'), "agent.language", "must be one of"),
        (('bar = "kitchen"', 'bar = "nowhere"'), "stations.bar", "'nowhere' is not configured"),
        (('printer = "front"', 'printer = "back"'), "receipts.printer", "not configured"),
        (("width = 48\n\n[printers.front]", "widht = 48\n\n[printers.front]"), "printers.kitchen.widht", "unknown key"),
        (('token = "tok-0123456789abcdef"', 'token = ""'), "api.token", "is required"),
        (('host = "10.0.0.21"\n', ""), "printers.kitchen.host", "required for a network printer"),
        (('store_id = "berlin-mitte"', 'store_id = "Berlin Mitte"'), "agent.store_id", "lowercase"),
        (("[receipts]", "[reciepts]"), "reciepts", "unknown section"),
    ],
)
def test_wrong_value_names_the_key(tmp_path: Path, change: tuple[str, str], key: str, words: str) -> None:
    """Each mistake is reported with its key and what is wrong."""
    text = MINIMAL.replace(*change, 1)
    assert text != MINIMAL
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert info.value.key == key
    assert words in info.value.problem


@pytest.mark.parametrize("case", ["no_template_dir", "template_syntax", "template_field", "other_store"])
def test_config_check_refuses_what_the_agent_would_refuse_to_start_with(tmp_path: Path, case: str) -> None:
    """`edge config check` is the technician's question "will it start?": a template folder that is not there, a
    template that does not compile or fails when it renders, and a database that is another store's stop `edge run`
    with one line (exit 2), so they stop the check with that line too (before: "ok", exit 0, and then the agent refused
    to start)."""
    templates = tmp_path / "templates"
    config = write(tmp_path, MINIMAL)
    text = config.read_text(encoding="utf-8")
    if case == "other_store":
        assert edge_blocking("migrate", "--config", str(config)).returncode == 0  # the database is berlin-mitte's
        config.write_text(text.replace('store_id = "berlin-mitte"', 'store_id = "hamburg"'), encoding="utf-8")
        key, words = "agent.store_id", "belongs to store 'berlin-mitte'"
    else:
        config.write_text(f'{text}\n[printing]\ntemplate_dir = "{templates}"\n', encoding="utf-8")
        key, words = (
            "printing.template_dir",
            {
                "no_template_dir": "not a directory",
                "template_syntax": "ticket.j2: ",
                "template_field": "receipt.j2: ",
            }[case],
        )
    if case == "template_syntax":
        templates.mkdir()
        (templates / "ticket.j2").write_text("{% if order.number %}\n", encoding="utf-8")
    elif case == "template_field":
        templates.mkdir()
        (templates / "receipt.j2").write_text("{{ order.totals.nothing }}\n", encoding="utf-8")
    result = edge_blocking("config", "check", "--config", str(config))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"edge: config {key}: ") and words in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == "", (result.stdout, result.stderr)
    if case == "other_store":
        run = edge_blocking("run", "--config", str(config))
        assert run.returncode == 2 and "belongs to store 'berlin-mitte'" in run.stderr, run.stderr
    if case == "template_field":  # the doctor's first line says it as well (before: "OK config")
        doctor = edge_blocking("doctor", "--config", str(config))
        first = doctor.stdout.splitlines()[0]
        assert doctor.returncode == 1 and first.startswith("FAIL  config") and "receipt.j2" in first, doctor.stdout


def test_config_check_refuses_a_database_a_newer_agent_wrote_as_the_start_does(tmp_path: Path) -> None:
    """A box rolled back to an older agent by hand, its database left as the newer one wrote it: `edge run` stops
    with one line (exit 2), so the check does too. Before stop 67: "ok", exit 0 (the docs probe, D5). The line names
    the way back that keeps every order, the newer release's `edge migrate --to N` (N: what this agent knows); before,
    "upgrade the agent (or restore a backup)", and a backup loses every order taken since (the upgrade73 probe)."""
    config = write(tmp_path, MINIMAL)
    migrated = edge_blocking("migrate", "--config", str(config))
    assert migrated.returncode == 0, migrated.stderr
    latest = int(migrated.stdout.strip().rsplit(" ", 1)[1])
    with sqlite3.connect(tmp_path / "data" / "edge.db") as conn:
        conn.execute("PRAGMA user_version = 999")
    result = edge_blocking("config", "check", "--config", str(config))
    assert result.returncode == 2 and "written by a newer agent" in result.stderr, (result.stdout, result.stderr)
    assert f"the newer release's `edge migrate --to {latest}`" in result.stderr, result.stderr
    assert "or restore a backup" not in result.stderr, result.stderr
    run = edge_blocking("run", "--config", str(config))
    assert run.returncode == 2 and "written by a newer agent" in run.stderr, run.stderr
    doctor = edge_blocking("doctor", "--config", str(config))
    assert doctor.stdout.startswith("FAIL  config") and "newer agent" in doctor.stdout.splitlines()[0], doctor.stdout
    assert "(edge migrate)" not in doctor.stdout, doctor.stdout  # this agent's migrate refuses it


def test_secret_never_shows_in_repr(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL), environ={})
    assert "tok-0123456789abcdef" not in repr(s)
    assert s.secrets() == ["tok-0123456789abcdef"]


def test_config_check_exit_codes(tmp_path: Path) -> None:
    """`edge config check` says ok (exit 0), or one line naming the key (exit 2), never a traceback."""
    good = write(tmp_path, MINIMAL)
    ok = edge_blocking("config", "check", "--config", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("port = 8765", "port = -1").format(data_dir=tmp_path), encoding="utf-8")
    result = edge_blocking("config", "check", env={"EDGE_CONFIG": str(bad)})
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "edge: config api.port: must be a port number between 1 and 65535 (0: any free port), got -1"
    )

    broken = tmp_path / "broken.toml"
    broken.write_text("[agent\nstore_id=", encoding="utf-8")
    result = edge_blocking("run", "--config", str(broken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("edge: config --config:") and "not valid TOML" in result.stderr


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("10.0.0.21:9100", 'holds a port: write host = "10.0.0.21" and port = 9100'),
        ("http://10.0.0.21", 'is a URL: write only the address, host = "10.0.0.21"'),
        ("10.0.0.21 ", "is not a host name or an IP address"),
        ("kitchen printer", "is not a host name or an IP address"),
    ],
)
def test_a_printers_address_written_with_its_port_or_as_a_url_stops_the_check_naming_the_fix(
    tmp_path: Path, host: str, problem: str
) -> None:
    """A technician's usual slips in a network printer's host (a port, a scheme, a space): `edge config check` exits 2
    with one line naming printers.kitchen.host and what to write (before: "ok", and the printer stayed unreachable
    with "Name or service not known")."""
    bad = write(tmp_path, MINIMAL.replace('host = "10.0.0.21"', f"host = {host!r}".replace("'", '"')))
    result = edge_blocking("config", "check", "--config", str(bad))
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip() == f"edge: config printers.kitchen.host: {problem}"


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("127.0.0.1:8765", 'holds a port: write host = "127.0.0.1" and port = 8765'),
        ("http://127.0.0.1", 'is a URL: write only the address, host = "127.0.0.1"'),
    ],
)
def test_the_apis_address_written_with_its_port_or_as_a_url_stops_the_check_naming_the_fix(
    tmp_path: Path, host: str, problem: str
) -> None:
    """The same slips in api.host passed the check ("ok"); `edge run` then said "[Errno -2] Name or service not known",
    naming no setting, with exit 1, restarted by systemd again and again (the technician probe)."""
    bad = write(tmp_path, MINIMAL.replace('host = "127.0.0.1"', f'host = "{host}"', 1))
    result = edge_blocking("config", "check", "--config", str(bad))
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip() == f"edge: config api.host: {problem}"


@pytest.mark.parametrize(
    ("written", "env", "shown"),  # shown None: finite, but beyond what any setting takes
    [
        ("inf", {}, "inf"),
        ("1e400", {}, "inf"),
        ("nan", {}, "nan"),
        ("3", {"EDGE_PRINTERS_KITCHEN_CONNECT_TIMEOUT": "inf"}, "inf"),
        ("1e15", {}, None),
    ],
)
def test_a_number_that_is_not_finite_stops_the_check_naming_the_key(
    tmp_path: Path, written: str, env: dict[str, str], shown: str | None
) -> None:
    """TOML has inf and nan (and 1e400 is inf): a printer's connect_timeout = inf (or 1e15) passed the check, and the
    agent then never printed on that printer (OverflowError at every connect: an acknowledged order that never
    prints). Now one line naming the key, exit 2, in edge.toml or the environment; no setting takes more than
    4294967295 (MQTT's longest session expiry)."""
    bad = write(
        tmp_path, MINIMAL.replace("port = 9100\nwidth = 48", f"port = 9100\nwidth = 48\nconnect_timeout = {written}", 1)
    )
    result = edge_blocking("config", "check", "--config", str(bad), env=env)
    assert result.returncode == 2, result.stdout
    problem = f"must be a finite number, got {shown}" if shown else "must be at most 4294967295, got 1e+15"
    assert result.stderr.strip() == f"edge: config printers.kitchen.connect_timeout: {problem}"


@pytest.mark.parametrize("listed", ['["kitchen", "kitchen"]', '["kitchen", "front", "kitchen"]'])
def test_a_station_that_names_a_printer_twice_stops_the_check_naming_the_key(tmp_path: Path, listed: str) -> None:
    """A station's printers are its printer and the ones it fails over to, in order: naming one twice (a slip while
    adding a fallback) passed the check, and the station looked as if it had a fallback where it had none (the
    printer's own outage left it without a healthy backup). One line naming the key and the printer, exit 2."""
    bad = write(tmp_path, MINIMAL.replace('bar = "kitchen"', f"bar = {listed}", 1))
    result = edge_blocking("config", "check", "--config", str(bad))
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip() == "edge: config stations.bar: names printer 'kitchen' twice"


@pytest.mark.parametrize("host", ["kitchen-printer.fritz.box", "fd00::21", "192.168.178.40", "PRINTER1"])
def test_a_printers_plain_name_or_address_passes_the_check(tmp_path: Path, host: str) -> None:
    """The check above refuses no plain name or address, IPv6 included (once each, not once per refused spelling:
    each is a start of `edge`)."""
    good = write(tmp_path, MINIMAL.replace('host = "10.0.0.21"', f'host = "{host}"'))
    result = edge_blocking("config", "check", "--config", str(good))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [("config", "check"), ("run",)])
def test_an_unusable_escpos_cache_folder_set_by_the_operator_stops_with_a_line_naming_it(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """ESCPOS_CAPABILITIES_PICKLE_DIR (python-escpos' own setting) naming a folder that is not there, at a store whose
    logo needs python-escpos: one line naming the variable, exit 2, nothing left in the temporary folder (before:
    `edge run` blamed printing.template_dir, `edge config check` printed a bare [Errno 2] with exit 1, and both left
    python-escpos' folder behind). A store printing text only never loads python-escpos, so the setting is not read."""
    logo, temp, missing = tmp_path / "logo.png", tmp_path / "tmp", tmp_path / "no-such-folder"
    Image.new("L", (100, 40), 0).save(logo)
    temp.mkdir()
    env = {"ESCPOS_CAPABILITIES_PICKLE_DIR": str(missing), "TMPDIR": str(temp)}
    text_only = write(tmp_path, MINIMAL)
    assert edge_blocking("config", "check", "--config", str(text_only), env=env).returncode == 0
    config = write(tmp_path, MINIMAL.replace("[printers.kitchen]\n", f'[printers.kitchen]\nlogo = "{logo}"\n'))
    result = edge_blocking(*command, "--config", str(config), env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("edge: config ESCPOS_CAPABILITIES_PICKLE_DIR:"), result.stderr
    assert str(missing) in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(temp.iterdir()) == []


def test_secrets_file_readable_by_others_stops_start_up(tmp_path: Path) -> None:
    """A secrets file with group or other bits stops `edge config check` and `edge run` with one line naming the fix."""
    config = write(tmp_path, MINIMAL)
    secrets = write_secrets(tmp_path, "EDGE_SMTP_PASSWORD=s3cret\n", mode=0o644)
    for command in (["config", "check"], ["run"]):
        result = edge_blocking(*command, "--config", str(config))
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip() == (
            f"edge: config {secrets}: is mode 0644, others may read the secrets; fix: chmod 600 {secrets}"
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the data directory another owner")
def test_secrets_file_of_another_user_than_the_agent_stops_start_up(tmp_path: Path) -> None:
    """Run as root, `edge config check` refuses a secrets file whose owner is not the agent's user (the owner of the
    data directory): that user could not read it. One line naming the chown."""
    config = write(tmp_path, MINIMAL)
    secrets = write_secrets(tmp_path, "EDGE_SMTP_PASSWORD=s3cret\n")
    (tmp_path / "data").mkdir()
    os.chown(tmp_path / "data", 65534, 65534)
    result = edge_blocking("config", "check", "--config", str(config))
    assert result.returncode == 2, result.stdout
    nobody = pwd.getpwuid(65534).pw_name
    assert result.stderr.strip() == (
        f"edge: config {secrets}: belongs to root (mode 0600), but the agent's user (owner of {tmp_path / 'data'})"
        f" is {nobody}, who cannot read it; fix: chown {nobody}: {secrets}"
    )
    os.chown(secrets, 65534, 65534)
    assert edge_blocking("config", "check", "--config", str(config)).returncode == 0


def test_old_dotenv_beside_the_config_is_refused(tmp_path: Path) -> None:
    """The secrets file is edge.env beside the config, nothing else: a leftover .env (the old wizard's) is named with
    the fix instead of being read or silently ignored."""
    config = write(tmp_path, MINIMAL)
    write_secrets(tmp_path, "EDGE_API_TOKEN=tok-from-secrets-file\n")
    (tmp_path / ".env").write_text("EDGE_SMTP_PASSWORD=old\n", encoding="utf-8")
    result = edge_blocking("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"edge: config {tmp_path / '.env'}: is no longer read: move its lines into {tmp_path / 'edge.env'}"
        " (the one secrets file) and delete it"
    )


@pytest.mark.parametrize(("secrets", "state"), [("", "it is empty"), (None, "there is no such file")])
def test_a_missing_api_token_names_the_secrets_file_and_what_is_wrong_with_it(
    tmp_path: Path, secrets: str | None, state: str
) -> None:
    """No token in the config and an empty (a power cut right after install.sh wrote it) or missing secrets file: `edge
    run` stops with one line naming the file the token is looked for in, and that it is empty or missing (before:
    "api.token: is required unless ... (set it in the config file or EDGE_API_TOKEN)", no file named)."""
    config = write(tmp_path, MINIMAL.replace('token = "tok-0123456789abcdef"', ""))
    env_file = tmp_path / "etc" / "edge.env"  # named by EDGE_ENV_FILE: not beside the config
    if secrets is not None:
        env_file.parent.mkdir()
        env_file.write_text(secrets, encoding="utf-8")
        env_file.chmod(0o600)
    result = edge_blocking("run", "--config", str(config), env={"EDGE_ENV_FILE": str(env_file)})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        f"edge: config api.token: is required unless api.require_signature is true: set EDGE_API_TOKEN in {env_file}"
        f" ({state})"
    ), result.stderr


@pytest.mark.parametrize("token", ["change-me", "CHANGE_ME", "changeme", " change-me "])
def test_example_token_does_not_start_an_agent(tmp_path: Path, token: str) -> None:
    """The example's placeholder token (any spelling) stops `edge run` with one line saying where the real one goes."""
    config = write(tmp_path, MINIMAL.replace("tok-0123456789abcdef", token))
    result = edge_blocking("run", "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("edge: config api.token: is the example's placeholder")
    assert "EDGE_API_TOKEN" in result.stderr and str(tmp_path / "edge.env") in result.stderr


@pytest.mark.parametrize(
    ("to", "in_env", "in_toml"),
    [
        ("chef@store.test; vize@store.test", "not one e-mail address", "not one e-mail address"),
        ("chef@store.test vize@store.test", "not one e-mail address", "not one e-mail address"),
        ("chef@store.test,vize", "'vize' is not an e-mail address", "not one e-mail address"),
        ("Chef <chef@store.test>", "write the bare address", "write the bare address"),
        ("chef@@store.test", "not an e-mail address", "not an e-mail address"),
    ],
)
def test_recipient_lists_are_parsed_strictly(tmp_path: Path, to: str, in_env: str, in_toml: str) -> None:
    """Recipients are comma-separated addresses; a list with ; or spaces (or anything not an address) is refused naming
    the key and the entry, from the secrets file and from a TOML list alike."""
    config = write(tmp_path, MINIMAL + '\n[smtp]\nhost = "smtp.example.com"\nsender = "edge@store.test"\n')
    write_secrets(tmp_path, f"EDGE_ALERT_TO={quote('EDGE_ALERT_TO', to)}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert err.value.key == "alerts.to" and in_env in err.value.problem
    (tmp_path / "edge.env").unlink()
    config.write_text(config.read_text(encoding="utf-8") + f"\n[alerts]\nto = [{to!r}]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert err.value.key == "alerts.to" and in_toml in err.value.problem


def test_recipient_list_parser() -> None:
    """The one parser (config and setup-notifications): commas separate, blanks around entries and empty entries go,
    a repeated address is kept once."""
    assert parse_recipients(" chef@store.test ,vize@store.test,, chef@store.test ") == [
        "chef@store.test",
        "vize@store.test",
    ]
    assert parse_recipients("chef@bäckerei.de,root@localhost") == ["chef@bäckerei.de", "root@localhost"]
    with pytest.raises(ValueError, match="before the @ need SMTPUTF8"):  # tests/alerts/test_idn.py
        parse_recipients("küche@bäckerei.de")
    with pytest.raises(ValueError, match="separate recipients with commas"):
        parse_recipients("a@b.test;c@d.test")
