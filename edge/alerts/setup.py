"""The setup-notifications wizard for a technician on site (or a fleet rollout, non-interactive): provider, login
test, test mail, then the mail settings written into the agent's one secrets file, edge.env."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import email.utils
import getpass
import os
import socket
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.alerts.addresses import smtp_address
from edge.config import (
    AgentSettings,
    Secret,
    SmtpSettings,
    check_address,
    load_settings,
    parse_recipients,
    secrets_path,
)
from edge.config.envfile import BOM, EnvFileError, parse_line, update_env_file
from edge.errors import AlertError, ConfigError, EdgeError
from edge.log import configure_logging
from edge.tls import verifying_context

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PASSWORD_TRIES = 3
LANGUAGE_NAMES = {"de": "German", "en": "English"}


@dataclasses.dataclass(frozen=True)
class Provider:
    label: str
    host: str
    port: int
    security: str
    app_password: bool = False


PROVIDERS: dict[str, Provider | None] = {
    "gmail": Provider("Gmail", "smtp.gmail.com", 587, "starttls", app_password=True),
    "outlook": Provider("Outlook / Office 365", "smtp.office365.com", 587, "starttls"),
    "yahoo": Provider("Yahoo", "smtp.mail.yahoo.com", 465, "tls", app_password=True),
    "custom": None,
}
_APP_PASSWORD_NOTE = (
    "Note: {label} needs an app password (account security settings → app passwords), not your normal password."
)
# Every key the wizard owns: each is set, or removed when it has no value (a stale CA file must not outlive its server).
MANAGED = (
    "EDGE_SMTP_HOST",
    "EDGE_SMTP_PORT",
    "EDGE_SMTP_SECURITY",
    "EDGE_SMTP_USERNAME",
    "EDGE_SMTP_PASSWORD",
    "EDGE_SMTP_FROM",
    "EDGE_SMTP_CA_FILE",
    "EDGE_ALERT_TO",
    "EDGE_AGENT_LANGUAGE",
)


class _Refused(Exception):
    """An answer or flag the wizard cannot use; nothing has been sent or written."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="agent config file (default: $EDGE_CONFIG); the secrets file edge.env beside it is written",
    )
    parser.add_argument(
        "--env-file", help="the secrets file to write (default: $EDGE_ENV_FILE, else edge.env beside the config)"
    )
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="ask nothing (fleet rollout): flags, then EDGE_SMTP_* / EDGE_ALERT_TO, then the secrets file's values",
    )
    parser.add_argument("--dry-run", action="store_true", help="test and show what would be written, write nothing")
    parser.add_argument("--provider", choices=list(PROVIDERS))
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--security", type=_security_flag, help="starttls, tls or none (any case; ssl is tls)")
    parser.add_argument("--username")
    parser.add_argument("--from", dest="sender", help="sender address (default: the user name)")
    parser.add_argument("--to", help="recipients, comma-separated")
    parser.add_argument("--language", choices=["de", "en"])
    parser.add_argument("--ca-file", help="extra CA certificate to trust (a relay with its own CA)")
    # No --password flag on purpose: it would sit in the shell history and in `ps`.
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (else EDGE_SMTP_PASSWORD, else the one already in the file)",
    )
    parser.add_argument("--no-test-mail", action="store_true", help="only test connection and login")


class _Wizard:
    def __init__(
        self,
        args: argparse.Namespace,
        known: dict[str, str],
        *,
        ask: Callable[[str], str],
        ask_secret: Callable[[str], str],
        say: Callable[[str], None],
    ) -> None:
        self.args, self.known = args, known
        self._ask, self._ask_secret, self.say = ask, ask_secret, say
        self.interactive = not args.non_interactive

    def value(
        self,
        flag: str | None,
        env: str,
        question: str,
        default: str = "",
        *,
        inherit: bool = True,
        check: Callable[[str], str] = str,
    ) -> str:
        """Flag, then environment, then the secrets file (when inherit), then asking (or the default). ``check`` gives
        the value to use or raises ValueError with the reason: asked again then, so one slip costs one answer."""
        current = flag or os.environ.get(env) or (self.known.get(env) if inherit else None) or default
        if not self.interactive:
            return check(current)
        while True:
            answer = self._ask(f"{question}{f' [{current}]' if current else ''}: ").strip()
            try:
                return check(answer or current)
            except ValueError as err:
                self.say(f"✗ {err}")

    def choose_provider(self) -> Provider | None:
        if self.args.provider or not self.interactive:
            return PROVIDERS.get(self.args.provider or "custom")
        names = list(PROVIDERS)
        menu = "  ".join(f"[{n}] {p.label if (p := PROVIDERS[name]) else 'Custom'}" for n, name in enumerate(names, 1))
        while True:
            answer = self._ask(f"E-mail provider: {menu}\nChoose 1-{len(names)}: ").strip().lower()
            if answer.isdigit() and 1 <= int(answer) <= len(names):
                return PROVIDERS[names[int(answer) - 1]]
            if answer in PROVIDERS:
                return PROVIDERS[answer]
            self.say(f"Please type a number from 1 to {len(names)}.")

    def password(self) -> str:
        """Hidden input (empty keeps the file's); non-interactive: stdin with --password-stdin, else the environment."""
        if self.interactive:
            typed = self._ask_secret("Password (not shown): ")
        elif self.args.password_stdin:
            typed = sys.stdin.readline().rstrip("\r\n")
        else:
            typed = os.environ.get("EDGE_SMTP_PASSWORD", "")
        return typed or self.known.get("EDGE_SMTP_PASSWORD", "")

    def confirm(self, question: str) -> bool:
        return self._ask(f"{question} [y/n]: ").strip().lower() in ("y", "yes", "j", "ja")


def _env_path(args: argparse.Namespace) -> Path:
    if args.env_file:
        return Path(args.env_file)
    config = args.config or os.environ.get("EDGE_CONFIG")
    path = secrets_path(Path(config) if config else None)
    if path is None:
        raise _Refused("no agent config given: pass --config /etc/edge/edge.toml (or --env-file PATH)")
    if config and not Path(config).is_file():  # a typo: the password would go into a file the agent never reads
        raise _Refused(f"no agent config at {config}: pass the agent's, e.g. --config /etc/edge/edge.toml")
    return path


def _read_known(path: Path) -> dict[str, str]:
    """The secrets file's current values, offered as defaults. A line the agent would refuse is an error before any
    question, unless it is one of the wizard's own keys, which get rewritten anyway."""
    if not path.is_file():
        return {}
    known = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:  # a Windows editor's UTF-16, or one "ü" in Latin-1: the agent cannot read it
        raise _Refused(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8 (or plain ASCII)"
        ) from None
    for number, line in enumerate(text.removeprefix(BOM).splitlines(), 1):
        try:
            pair = parse_line(line)
        except EnvFileError as err:
            if not any(line.lstrip().removeprefix("export").lstrip().startswith(f"{key}=") for key in MANAGED):
                raise _Refused(f"{path} line {number}: {err}") from None
            continue
        if pair:
            known[pair[0]] = pair[1]
    return known


def _config_agent(args: argparse.Namespace) -> dict[str, Any] | None:
    """The config file's [agent] table as written ({} without one); None: no config to read. Read raw: the wizard
    runs where the config may not load whole yet (a token still to set)."""
    config = args.config or os.environ.get("EDGE_CONFIG")
    if not config:
        return None
    try:
        data = tomllib.loads(Path(config).read_text(encoding="utf-8").removeprefix(BOM))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    agent = data.get("agent")
    return agent if isinstance(agent, dict) else {}


def _config_language(args: argparse.Namespace) -> str | None:
    """agent.language as the config file sets it (its default "de" when it does not); None: no config to read."""
    agent = _config_agent(args)
    if agent is None:
        return None
    language = agent.get("language", "de")
    return language if language in LANGUAGE_NAMES else None


def _ask_server(w: _Wizard, provider: Provider | None) -> tuple[str, int, str, str]:
    """(host, port, security, extra CA file). The old CA file is kept only while the server stays the same."""
    args, known = w.args, w.known
    if provider is not None:
        host, port, security = (
            args.host or provider.host,
            provider.port if args.port is None else args.port,
            args.security or provider.security,
        )
        w.say(f"{provider.label}: {host}, port {port}, {security.upper()}")
        if provider.app_password:
            w.say(_APP_PASSWORD_NOTE.format(label=provider.label))
        same_server = host == known.get("EDGE_SMTP_HOST")
        return (
            host,
            _port(str(port)),
            security,
            _ca_file(args.ca_file or (known.get("EDGE_SMTP_CA_FILE", "") if same_server else "")),
        )
    host = w.value(args.host, "EDGE_SMTP_HOST", "SMTP server")
    port = int(
        w.value(None if args.port is None else str(args.port), "EDGE_SMTP_PORT", "Port", "587", check=_port_text)
    )
    # Offered is what the port speaks (Enter at 465 must not mean STARTTLS); the file's only for the file's port.
    security = w.value(
        args.security,
        "EDGE_SMTP_SECURITY",
        "Security: starttls (587), tls (465) or none (local relay)",
        "tls" if port == 465 else "starttls",
        inherit=str(port) == known.get("EDGE_SMTP_PORT"),
        check=_security,
    )
    same_server = host == known.get("EDGE_SMTP_HOST")
    ca_file = w.value(
        args.ca_file,
        "EDGE_SMTP_CA_FILE",
        "Extra CA certificate file (empty: the system's)",
        inherit=same_server,
        check=_ca_file,
    )
    if not host:
        raise _Refused("no SMTP server given (--host)")
    return host, port, security, ca_file


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be a number between 1 and 65535 (got {text!r})")
    return int(text)


def _port_text(text: str) -> str:
    return str(_port(text))


def _security(text: str) -> str:
    """As typed in any case; "ssl", the older name of TLS from the first byte, is tls."""
    word = text.strip().lower()
    word = "tls" if word == "ssl" else word
    if word not in ("starttls", "tls", "none"):
        raise ValueError(f"type starttls, tls or none (got {text!r})")
    return word


def _security_flag(text: str) -> str:
    """--security read as the question reads its answer."""
    try:
        return _security(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _ca_file(text: str) -> str:
    """Empty (the system's CAs), or a file that loads as CA certificates, as the agent's mailer loads it: checked
    here, since with security none no test below reads it, and the agent's start refuses a file it cannot use."""
    if text:
        try:
            verifying_context(Path(text), "smtp.ca_file")
        except ConfigError as err:
            raise ValueError(str(err)) from None
    return text


def _sender(text: str) -> str:
    """One address, with a name if wanted ("Filiale Mitte <edge@example.com>")."""
    if not text:
        raise ValueError("a sender address is needed (name@example.com)")
    address = email.utils.parseaddr(text)[1] or text
    check_address(address)
    smtp_address(address)  # an internationalised domain IDNA refuses is asked again, not met at the first mail
    return text


def _recipients(text: str) -> str:
    recipients = parse_recipients(text)
    for recipient in recipients:
        smtp_address(recipient)
    if not recipients:
        raise ValueError("at least one recipient is needed (name@example.com, comma-separated)")
    return ",".join(recipients)


def _language(text: str) -> str:
    if text.lower() not in LANGUAGE_NAMES:
        raise ValueError(f"type de or en (got {text!r})")
    return text.lower()


def run(
    args: argparse.Namespace,
    *,
    ask: Callable[[str], str] = input,
    ask_secret: Callable[[str], str] = getpass.getpass,
    say: Callable[[str], None] = print,
) -> int:
    """0: the test mail was accepted (or, with --no-test-mail, the login worked) and the file written (or a dry run);
    1: a check or the write failed; 2: an answer or flag cannot be used. Except for 0, nothing was written."""
    try:
        env_path = _env_path(args)
        w = _Wizard(args, _read_known(env_path), ask=ask, ask_secret=ask_secret, say=say)
        host, port, security, ca_file = _ask_server(w, w.choose_provider())
        username = w.value(args.username, "EDGE_SMTP_USERNAME", "User name (usually the e-mail address)")
        password = w.password()
        if username and not password:
            raise _Refused("no password: pipe it with --password-stdin, or set EDGE_SMTP_PASSWORD")
        sender = w.value(args.sender, "EDGE_SMTP_FROM", "Sender address", username, check=_sender)
        recipients = w.value(args.to, "EDGE_ALERT_TO", "Recipients, comma-separated", check=_recipients).split(",")
        # Mails follow agent.language, which is the tickets' and receipts' too: offered is the language the store
        # has now (edge.env's, else edge.toml's), and it is written to edge.env only when it is not edge.toml's.
        configured = _config_language(args)
        language = w.value(
            args.language,
            "EDGE_AGENT_LANGUAGE",
            "Language of the store's tickets, receipts and these mails (de/en)",
            configured or "de",
            check=_language,
        )
    except (_Refused, ValueError) as err:
        say(f"✗ {err}; nothing sent, nothing written.")
        return EXIT_USAGE
    values: dict[str, str | None] = {
        "EDGE_SMTP_HOST": host,
        "EDGE_SMTP_PORT": str(port),
        "EDGE_SMTP_SECURITY": security,
        "EDGE_SMTP_USERNAME": username,
        "EDGE_SMTP_PASSWORD": password,
        "EDGE_SMTP_FROM": sender,
        "EDGE_SMTP_CA_FILE": ca_file or None,
        "EDGE_ALERT_TO": ",".join(recipients),
        "EDGE_AGENT_LANGUAGE": None if language == configured else language,
    }
    if refused := _refused_by_agent_config(args, env_path, values):
        say(f"✗ with these settings the agent would not start: {refused}; nothing sent, nothing written.")
        return EXIT_USAGE

    # Here: `edge` builds this command's parser for every command.
    from edge.alerts.mailer import LoginRefusedError, Mailer
    from edge.alerts.render import AlertRenderer

    for attempt in range(1, PASSWORD_TRIES + 1):
        smtp = SmtpSettings(
            host=host,
            port=port,
            security=security,  # type: ignore[arg-type]
            username=username,
            password=Secret(password),
            sender=sender,
            ca_file=Path(ca_file) if ca_file else None,
            timeout_s=15.0,
        )
        mailer = Mailer(smtp)
        say(f"Testing {host}:{port} ({security}) …")
        try:
            asyncio.run(mailer.check())
            break
        except AlertError as err:
            say(f"✗ {err}")
            # A mistyped password costs that answer again, not every answer (three tries, as sudo gives); a relay
            # that cannot log anyone in just now (454) has not said the password is wrong.
            mistyped = isinstance(err, LoginRefusedError) and err.permanent
            if not (w.interactive and attempt < PASSWORD_TRIES and mistyped):
                say("Nothing was written.")
                return EXIT_FAILED
            password = values["EDGE_SMTP_PASSWORD"] = w.password()
    say("✓ connection and login work")
    try:
        if not args.no_test_mail:
            store_id, store_name = _store(args, values)
            mail = AlertRenderer(language=language, store_name=store_name, store_id=store_id, tz=None).test(
                recipients=recipients
            )
            delivery = asyncio.run(mailer.send(mail))
            say(f"✓ test e-mail accepted by {host} for {', '.join(delivery.accepted)}")
            if not_taken := {**delivery.refused, **delivery.deferred}:
                # An address the relay turns away would never get an alert: written as it is, it fails unnoticed.
                for recipient, reason in not_taken.items():
                    say(f"✗ {host} did not take {recipient}: {reason}")
                say("Correct the address (or ask the provider why it was not taken) and run this again.")
                say("Nothing was written.")
                return EXIT_FAILED
    except AlertError as err:
        say(f"✗ {err}")
        say("Nothing was written.")
        return EXIT_FAILED
    if (
        w.interactive
        and not args.no_test_mail
        and not w.confirm("Did the test e-mail arrive (check the spam folder too)?")
    ):
        say(
            "Then the server accepted it but did not deliver it: check the recipient addresses and the provider's"
            " sent folder. Nothing was written."
        )
        return EXIT_FAILED

    if args.dry_run:
        say(f"Dry run: would write to {env_path}:")
        for key, value in values.items():
            shown = "(removed)" if value is None else "********" if key == "EDGE_SMTP_PASSWORD" and value else value
            say(f"  {key}={shown}")
        return EXIT_OK
    try:
        backup = update_env_file(env_path, values, owner=_new_file_owner(args, env_path))
    except (EnvFileError, OSError) as err:
        say(f"✗ {err}")
        return EXIT_FAILED
    say(f"✓ wrote {env_path} (mode 0600){f'; previous version kept as {backup}' if backup else ''}")
    if configured is not None and language != configured:
        say(
            f'! EDGE_AGENT_LANGUAGE="{language}" in {env_path} overrides agent.language = "{configured}" in'
            f" {args.config or os.environ.get('EDGE_CONFIG')}: tickets and receipts print in"
            f" {LANGUAGE_NAMES[language]} from the agent's restart on"
        )
    _check_agent_config(args, say)
    return EXIT_OK


def _new_file_owner(args: argparse.Namespace, env_path: Path) -> tuple[int, int] | None:
    """An existing secrets file keeps its owner; a new one gets the agent's user's: the owner of agent.data_dir, as
    the agent itself judges it (edge/config/_loader.py, check_agent_reads), else the config file's (install.sh gives
    that to the agent's user). A wizard run as root never leaves a file the agent cannot read, also when the config
    was saved by root."""
    config = args.config or os.environ.get("EDGE_CONFIG")
    if env_path.exists() or not config or not Path(config).exists():
        return None
    owned = [Path(config)]
    if (agent := _config_agent(args)) is not None:
        data_dir = agent.get("data_dir")
        owned.insert(0, Path(data_dir) if isinstance(data_dir, str) else AgentSettings.data_dir)
    info = next(p.stat() for p in owned if p.exists())
    return info.st_uid, info.st_gid


def _store(args: argparse.Namespace, values: dict[str, str | None]) -> tuple[str, str]:
    """The store's id and name from the agent's config as it will read with the new values, the name as the agent's
    alerts give it (the id when none is set); the host name for both when there is no config."""
    config = args.config or os.environ.get("EDGE_CONFIG")
    new = {k: v for k, v in values.items() if v is not None}
    try:
        if config:
            agent = load_settings(Path(config), environ={**os.environ, **new}).agent
            return agent.store_id, agent.store_name or agent.store_id
    except EdgeError:
        pass
    return socket.gethostname(), socket.gethostname()


def _refused_by_agent_config(
    args: argparse.Namespace, env_path: Path, values: dict[str, str | None]
) -> ConfigError | None:
    """The agent's config loaded as `edge config check` loads it, with ``values`` in the secrets file (the loader's own
    rules, none of them repeated here): its error when it is in a setting this wizard writes (a CA file edge.toml still
    names, now used). Another part's error (a token still to set) is not the wizard's: it is named after writing."""
    config = args.config or os.environ.get("EDGE_CONFIG")
    if not config:
        return None
    environ = {k: v for k, v in os.environ.items() if k not in MANAGED}  # the agent has these from the file
    if args.env_file:
        environ["EDGE_ENV_FILE"] = str(env_path)
    try:
        load_settings(Path(config), environ, secrets=values)
    except ConfigError as err:
        return err if err.key.startswith(("smtp.", "alerts.")) or err.key == "agent.language" else None
    return None


def _check_agent_config(args: argparse.Namespace, say: Callable[[str], None]) -> None:
    """Loads the agent's config as it will start (secrets file included) and says whether it will. The database is
    left to the agent, which migrates it at start-up as its own user (a wizard run as root would leave it root's)."""
    config = args.config or os.environ.get("EDGE_CONFIG")
    if not config:
        return
    try:
        load_settings(Path(config))
    except ConfigError as err:
        say(f"! the agent will not start until this is fixed: {err}")
        return
    say(f"✓ the agent's config loads ({config}); restart the agent to use the new settings")


def run_command(args: argparse.Namespace) -> int:
    """`edge setup-notifications` and the script: Ctrl-C or a closed input ends it cleanly, with nothing written. The
    dialogue is the technician's: the mailer's log lines (a coloured "alert_mail_delivered" between two questions)
    stay out of it, errors only."""
    configure_logging(level="error")
    try:
        return run(args)
    except (KeyboardInterrupt, EOFError):
        print("\nAborted; nothing written.", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="setup-notifications", description="Set up e-mail alerts for the store manager."
    )
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
