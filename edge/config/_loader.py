"""The loader: TOML file, secrets file and EDGE_* variables in, typed settings out; every error names its key."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import stat
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import edge.config._fields as f
from edge.config._build import build, coerce, fields, keys, read, refuse_unknown
from edge.config._printers import PRINTER_TYPES, AnyPrinterSettings, PrinterSettings
from edge.config._rules import RULES, WARNINGS, is_placeholder_token
from edge.config._sections import SECTIONS, ScannerSettings, Settings, UnknownVariable, Unsafe
from edge.config._values import Secret
from edge.config.envfile import BOM, EnvFileError, parse_env_lines
from edge.errors import ConfigError

# Names the setup script writes (and the issue promises), mapped to the EDGE_<SECTION>_<KEY> they stand for.
_ENV_ALIASES = {"EDGE_ALERT_TO": "EDGE_ALERTS_TO", "EDGE_SMTP_FROM": "EDGE_SMTP_SENDER"}
_NAMED_TABLES = ("printers", "stations", "staleness", "scanners")  # [TABLE.NAME] entries, not keys of one section
# EDGE_* variables that are read but are no setting: in the secrets file they are not misspelt keys.
_NOT_SETTINGS = ("EDGE_CONFIG", "EDGE_ENV_FILE")
# In the process environment only a variable under a section's prefix is taken for a misspelt setting: others there
# are other tools' (install.sh's EDGE_PIP_ARGS, upgrade.sh's EDGE_HEALTH_WAIT_S, the tests' EDGE_CRASH_ORDERS).
_SETTING_PREFIXES = (*(f"EDGE_{table}_".upper() for table in (*SECTIONS, *_NAMED_TABLES)), "EDGE_ALERT_")


def _entries(data: Mapping[str, Any], table: str, what: str) -> dict[str, dict[str, Any]]:
    """The [TABLE.NAME] tables of a table of named entries (printers, scanners), each name checked."""
    entries: dict[str, dict[str, Any]] = {}
    for name, body in data.get(table, {}).items():
        if problem := f.name(name):
            raise ConfigError(f"{table}.{name}", f"{what} name {problem}")
        if not isinstance(body, dict):
            raise ConfigError(f"{table}.{name}", f"must be a table ([{table}.NAME])")
        entries[name] = body
    return entries


def _env_prefix(table: str, name: str) -> str:
    return f"EDGE_{table}_{name.replace('-', '_')}".upper()


def _printer(name: str, body: Mapping[str, Any], env: Mapping[str, str], data_dir: Path) -> AnyPrinterSettings:
    """One [printers.NAME] table as the settings type of its transport, chosen by ``type`` (the environment may set
    it too); the keys of every transport are known, as they were when one type held them all."""
    key, env_prefix = f"printers.{name}", _env_prefix("printers", name)
    transports = list(PRINTER_TYPES.values())
    refuse_unknown(key, body, [n for n in keys([PrinterSettings, *transports]) if n != "name"])
    cls = PRINTER_TYPES[read(key, body, env, env_prefix, "type", *fields(PrinterSettings)["type"])]
    also = [other for other in transports if other is not cls]
    return build(
        cls, key, body, env, env_prefix, given={"name": name}, defaults={"path": data_dir / "out" / name}, also=also
    )


def _stations(data: Mapping[str, Any]) -> dict[str, list[str]]:
    stations: dict[str, list[str]] = {}
    for station, target in data.get("stations", {}).items():
        key = f"stations.{station}"
        if problem := f.name(station):
            raise ConfigError(key, f"station name {problem}")
        stations[station] = coerce(key, target, list[str], from_env=False)
        if not stations[station]:
            raise ConfigError(key, "must name at least one printer")
        if twice := next((p for i, p in enumerate(stations[station]) if p in stations[station][:i]), None):
            raise ConfigError(key, f"names printer {twice!r} twice")  # a fallback that is the same printer
    return stations


def _staleness(data: Mapping[str, Any]) -> dict[str, float]:
    staleness: dict[str, float] = {}
    for station, minutes in data.get("staleness", {}).items():
        key = f"staleness.{station}"
        staleness[station] = coerce(key, minutes, float, from_env=False)
        if problem := f.at_least(0)(staleness[station]):
            raise ConfigError(key, problem)
    return staleness


def parse_settings(
    data: dict[str, Any], *, env: Mapping[str, str] | None = None, source: str = "", secrets_file: Path | None = None
) -> Settings:
    """Settings from a parsed TOML document and EDGE_* variables: each table read and checked, then every rule."""
    env = {**{target: env[alias] for alias, target in _ENV_ALIASES.items() if alias in env}, **env} if env else {}
    known = {*SECTIONS, *_NAMED_TABLES}
    for section, body in data.items():
        if section not in known:
            raise ConfigError(section, f"unknown section (known: {', '.join(sorted(known))})")
        if not isinstance(body, dict):
            raise ConfigError(section, "must be a table ([section])")
    sections: dict[str, Any] = {
        name: build(cls, name, data.get(name, {}), env, f"EDGE_{name}") for name, cls in SECTIONS.items()
    }
    data_dir = sections["agent"].data_dir
    settings = Settings(
        printers={
            name: _printer(name, body, env, data_dir) for name, body in _entries(data, "printers", "printer").items()
        },
        stations=_stations(data),
        staleness=_staleness(data),
        scanners={
            name: build(
                ScannerSettings, f"scanners.{name}", body, env, _env_prefix("scanners", name), given={"name": name}
            )
            for name, body in _entries(data, "scanners", "scanner").items()
        },
        source=source,
        secrets_file=secrets_file,
        **sections,
    )
    for rule in RULES:
        rule(settings)
    return dataclasses.replace(settings, unsafe=tuple(found for warn in WARNINGS if (found := warn(settings))))


SECRETS_FILE = "edge.env"  # beside the config: /etc/edge/edge.env on an installed box, the unit's EnvironmentFile=


def secrets_path(config_path: Path | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The one secrets file: EDGE_ENV_FILE, else edge.env beside the config."""
    environ = os.environ if environ is None else environ
    if environ.get("EDGE_ENV_FILE"):
        return Path(environ["EDGE_ENV_FILE"])
    return config_path.parent / SECRETS_FILE if config_path else None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class _NotUtf8Error(ValueError):
    pass


def _utf8(data: bytes) -> str:
    """The file's text; _NotUtf8Error naming the line and the byte, and the fix: Notepad's "ANSI" (Windows-1252) or
    "Unicode" (UTF-16) said only the codec's words, "can't decode byte 0xe9 in position 114" (the tech71 probe)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise _NotUtf8Error(
            f"line {line} is not UTF-8 (byte 0x{data[err.start]:02x}): save the file as UTF-8"
            " (Notepad: Save as, Encoding UTF-8)"
        ) from None


def _unreadable(path: Path) -> str:
    """Why this process's user cannot read ``path`` (the config or the secrets file), with the fix."""
    me = _user(os.geteuid())
    try:
        info = path.stat()
    except OSError as err:  # a folder on the way this user may not enter
        return f"cannot be reached as user {me}: {err.strerror}"
    owner = _user(info.st_uid)
    # Root's: moved in by root (the old wizard's habit, a file made under umask 077), the agent's user must own it.
    # Another user's: most likely the agent's, and this is a person's command without the sudo under which edge
    # commands act as that user.
    fix = (
        f"chown {me}: {path} (it must belong to the agent's user)"
        if info.st_uid == 0
        else f"run it with sudo (as root, edge commands act as the agent's user, {owner})"
    )
    return f"belongs to {owner} (mode {stat.S_IMODE(info.st_mode):04o}), so user {me} cannot read it; fix: {fix}"


def read_secrets(path: Path) -> dict[str, str]:
    """The secrets file's KEY=VALUE pairs, refusing a file others may read or one this user cannot, naming the fix."""
    return {key: value for key, (_, value) in _read_secret_lines(path).items()}


def _read_secret_lines(path: Path) -> dict[str, tuple[int, str]]:
    """read_secrets with each value's line number."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigError(str(path), f"cannot be reached as user {_user(os.geteuid())}: {err.strerror}") from None
    if stat.S_ISDIR(info.st_mode):  # before the mode: "chmod 600" would lock the config folder and read no file
        raise ConfigError(
            str(path),
            f"is a folder, not the secrets file: EDGE_ENV_FILE names the file itself, e.g. {path / SECRETS_FILE}",
        )
    if info.st_mode & 0o077:
        raise ConfigError(
            str(path), f"is mode {stat.S_IMODE(info.st_mode):04o}, others may read the secrets; fix: chmod 600 {path}"
        )
    try:
        text = _utf8(path.read_bytes())
    except PermissionError:
        raise ConfigError(str(path), _unreadable(path)) from None
    except OSError as err:
        raise ConfigError(str(path), f"cannot be read: {err}") from None
    except _NotUtf8Error as err:
        raise ConfigError(str(path), str(err)) from None
    try:
        return parse_env_lines(text, source=str(path))
    except EnvFileError as err:
        raise ConfigError(str(path), str(err).removeprefix(f"{path} ")) from None


def read_env(config_path: Path | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """EDGE_* variables: the process environment wins over the secrets file (edge.env beside the config)."""
    return _env_layers(config_path, environ)[1]


def _env_layers(
    config_path: Path | None,
    environ: Mapping[str, str] | None = None,
    secrets: Mapping[str, str | None] | None = None,
) -> tuple[dict[str, tuple[int, str]], dict[str, str]]:
    """(the secrets file's EDGE_* variables with their line numbers, every EDGE_* variable as the settings take it);
    ``secrets``: keys set (None: removed) over the file's, as a writer of it would leave them."""
    environ = os.environ if environ is None else environ
    from_file: dict[str, tuple[int, str]] = {}
    path = secrets_path(config_path, environ)
    if path is not None:
        legacy = path.with_name(".env")
        if "EDGE_ENV_FILE" not in environ and legacy.exists():
            raise ConfigError(
                str(legacy), f"is no longer read: move its lines into {path} (the one secrets file) and delete it"
            )
        from_file = {k: v for k, v in _read_secret_lines(path).items() if k.startswith("EDGE_")}
    for name, value in (secrets or {}).items():
        if value is None:
            from_file.pop(name, None)
        else:  # a new key has no line yet (lines only name unknown variables, which a writer's keys are not)
            from_file[name] = (from_file.get(name, (0, value))[0], value)
    merged = {k: value for k, (_, value) in from_file.items()}
    merged.update({k: v for k, v in environ.items() if k.startswith("EDGE_")})
    return from_file, merged


def _setting_variables(data: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Every EDGE_* variable that sets something, mapped to its key's path in the TOML document (section, [entry,]
    key): each section's keys, and the keys of each printer and scanner the document has (the environment cannot
    add one)."""
    found: dict[str, tuple[str, ...]] = {}
    for section, cls in SECTIONS.items():
        for name in fields(cls):
            found[f"EDGE_{section}_{name}".upper()] = (section, name)
    printer_keys = [n for n in keys([PrinterSettings, *PRINTER_TYPES.values()]) if n != "name"]
    scanner_keys = [n for n in fields(ScannerSettings) if n != "name"]
    for table, names in (("printers", printer_keys), ("scanners", scanner_keys)):
        for entry in data.get(table, {}):
            for name in names:
                found[f"{_env_prefix(table, entry)}_{name}".upper()] = (table, entry, name)
    for alias, target in _ENV_ALIASES.items():
        found[alias] = found[target]
    return found


def _in_toml(data: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether edge.toml sets the key to a value of its own: the example's stand-in token (change-me), which
    edge.env is meant to override, is not one worth a line at every start."""
    here: Any = data
    for part in path:
        if not isinstance(here, Mapping) or part not in here:
            return False
        here = here[part]
    return not is_placeholder_token(here)


def _layering(
    data: Mapping[str, Any],
    config_path: Path,
    secrets_file: Path | None,
    from_file: Mapping[str, tuple[int, str]],
    environ: Mapping[str, str],
) -> tuple[tuple[str, ...], tuple[UnknownVariable, ...]]:
    """(one line per key edge.toml sets and edge.env or the process environment overrides, naming the winner; the
    secrets file's EDGE_* variables that name no setting, then the process environment's under a section's prefix). A
    variable of the process environment with the secrets file's own value is the file's (systemd's EnvironmentFile=
    puts it there)."""
    variables = _setting_variables(data)
    overridden: list[str] = []
    unknown: list[UnknownVariable] = []
    file_name = secrets_file.name if secrets_file else ""
    for name, (line, value) in from_file.items():
        if name in variables:
            if _in_toml(data, variables[name]):
                key = ".".join(variables[name])
                if name in environ and environ[name] != value:
                    overridden.append(
                        f"{key} is set in {config_path}, in {secrets_file} ({name}) and in the environment;"
                        " the environment wins"
                    )
                else:
                    overridden.append(f"{key} is set in {config_path} and in {secrets_file} ({name}); {file_name} wins")
        elif name not in _NOT_SETTINGS:
            unknown.append(UnknownVariable(line, name, _closest(name, variables)))
    for name in environ:
        if name in variables and name not in from_file and _in_toml(data, variables[name]):
            key = ".".join(variables[name])
            overridden.append(f"{key} is set in {config_path} and in the environment ({name}); the environment wins")
    for name in sorted(environ):
        if name not in variables and name not in from_file and name.startswith(_SETTING_PREFIXES):
            unknown.append(UnknownVariable(None, name, _closest(name, variables)))
    return tuple(overridden), tuple(unknown)


def _secret_keys(data: Mapping[str, Any]) -> list[str]:
    """The secrets the TOML document holds itself (not the example's stand-in token, which edge.env overrides)."""
    found = []
    for section, cls in SECTIONS.items():
        body = data.get(section)
        if not isinstance(body, Mapping):
            continue
        for name, (_, annotation) in fields(cls).items():
            if annotation in (Secret, list[Secret]) and body.get(name) and not is_placeholder_token(body[name]):
                found.append(f"{section}.{name}")
    return found


def _readable_secrets(data: Mapping[str, Any], path: Path, data_dir: Path) -> tuple[Unsafe, ...]:
    """A config file every user of the box may read that holds a secret. Told, not refused: edge.toml at 0644 always
    started (a file copied in under umask 022), and an upgrade must not stop it (the security81 probe, F4). edge.env,
    where secrets go, is refused at such a mode."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return ()
    if not mode & stat.S_IROTH or not (keys := _secret_keys(data)):
        return ()
    try:  # the agent's user and group own its data directory; the unit runs as edge:edge
        info = data_dir.stat()
        owner = f"{_user(info.st_uid)}:{_group(info.st_gid)}"
    except OSError:
        owner = "edge:edge"
    return (
        Unsafe(
            str(path),
            f"{path} is mode {mode:04o} and holds {', '.join(keys)}: every user of this box can read it; fix: chmod 640"
            f" {path} and chown {owner} {path} (the agent's user and group), or move the secret into the secrets file",
        ),
    )


def _closest(name: str, known: Iterable[str]) -> str | None:
    """The known variable ``name`` is likely a typo of, if any."""
    import difflib  # here: only a misspelt variable needs it (0.6 ms and 0.1 MB of every start otherwise)

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return close[0] if close else None


def check_agent_reads(files: tuple[Path | None, ...], data_dir: Path) -> None:
    """The agent's user owns the data directory: it must be able to write there, and to read the config and secrets
    files. Root reads any file, so a root-run check judges them for that user (else it says ok to what the agent
    then refuses); the agent's user learns of a data directory root made (a root-run command on a wiped one)."""
    try:
        data = data_dir.stat()
    except OSError:
        return  # no data directory yet: the agent makes it, as its user
    me = os.geteuid()
    if data.st_uid == 0 and me != 0 and not os.access(data_dir, os.W_OK):
        raise ConfigError(
            "agent.data_dir",
            f"{data_dir} belongs to root, so the agent's user {_user(me)} cannot write there;"
            f" fix: chown -R {_user(me)}: {data_dir}",
        )
    agent = _user(data.st_uid)
    for path in files:
        try:
            info = path.stat() if path else None
        except OSError:
            continue  # no secrets file: nothing to read
        if info and not _may_read(info, data.st_uid, data.st_gid):
            raise ConfigError(
                str(path),
                f"belongs to {_user(info.st_uid)} (mode {stat.S_IMODE(info.st_mode):04o}), but the agent's user"
                f" (owner of {data_dir}) is {agent}, who cannot read it; fix: chown {agent}: {path}",
            )


def _may_read(info: os.stat_result, uid: int, gid: int) -> bool:
    """Whether user ``uid`` (primary group ``gid`` when it has no passwd entry) may read a file, by its mode."""
    if uid in (0, info.st_uid):
        return uid == 0 or bool(info.st_mode & stat.S_IRUSR)
    try:
        entry = pwd.getpwuid(uid)
        groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except KeyError:
        groups = {gid}
    return bool(info.st_mode & (stat.S_IRGRP if info.st_gid in groups else stat.S_IROTH))


def resolve_config_path(cli_path: str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    raw = cli_path or environ.get("EDGE_CONFIG")
    if not raw:
        raise ConfigError("--config", "no config file given: pass --config PATH or set EDGE_CONFIG")
    return Path(raw)


def load_settings_around_faults(
    path: Path, needed: tuple[str, ...], environ: Mapping[str, str] | None = None
) -> tuple[Settings, ConfigError | None]:
    """The settings as far as they can be had, for a command that must work while the config is broken (the health
    check, which tells the manager the agent is down): a table, printer or scanner whose settings fail is left out
    until what is left loads. Returns the settings and the first failure (None: the config is whole); raises it when
    it is in one of the ``needed`` sections, or is the file itself."""
    try:
        return load_settings(path, environ), None
    except ConfigError as err:
        first = failure = err
    if first.key.startswith("--"):  # the file itself: nothing to read around
        raise first
    data = tomllib.loads(path.read_text(encoding="utf-8").removeprefix(BOM))
    env, secrets_file = read_env(path, environ), secrets_path(path, environ)
    while True:  # each round leaves out a part that is there, or gives up: it ends
        table, _, rest = failure.key.partition(".")
        entry = rest.split(".", 1)[0]
        if table in needed or table not in data or (table in _NAMED_TABLES and rest and entry not in data[table]):
            raise first
        if table in _NAMED_TABLES and rest:
            del data[table][entry]
        else:
            del data[table]
        try:
            settings = parse_settings(data, env=env, source=str(path), secrets_file=secrets_file)
        except ConfigError as err:
            failure = err
            continue
        return settings, first


def load_settings(
    path: Path, environ: Mapping[str, str] | None = None, *, secrets: Mapping[str, str | None] | None = None
) -> Settings:
    """The settings from the config file, the secrets file beside it and the process environment, with the keys the
    last two override and the secrets file's variables that name no setting (settings.overridden, .unknown_variables).
    A UTF-8 BOM at the start of the file (Windows Notepad) is skipped. ``secrets``: keys the secrets file is about to
    get (None: to lose), so that its writer checks the result as the agent will read it before writing it."""
    try:
        data = tomllib.loads(_utf8(path.read_bytes()).removeprefix(BOM))
    except FileNotFoundError:
        raise ConfigError("--config", f"file {path} does not exist") from None
    except PermissionError:
        raise ConfigError("--config", f"{path} {_unreadable(path)}") from None
    except OSError as err:
        raise ConfigError("--config", f"cannot read {path}: {err}") from None
    except _NotUtf8Error as err:
        raise ConfigError("--config", f"{path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("--config", f"{path} is not valid TOML: {err}") from None
    environ = os.environ if environ is None else environ
    secrets_file = secrets_path(path, environ)
    from_file, env = _env_layers(path, environ, secrets)
    settings = parse_settings(data, env=env, source=str(path), secrets_file=secrets_file)
    check_agent_reads((path, secrets_file), settings.agent.data_dir)
    edge_environ = {k: v for k, v in environ.items() if k.startswith("EDGE_")}
    overridden, unknown = _layering(data, path, secrets_file, from_file, edge_environ)
    unsafe = (*_readable_secrets(data, path, settings.agent.data_dir), *settings.unsafe)
    return dataclasses.replace(settings, overridden=overridden, unknown_variables=unknown, unsafe=unsafe)
