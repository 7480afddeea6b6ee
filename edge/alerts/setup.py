"""The setup-notifications wizard for a technician on site: provider, login test, test mail, .env written safely, migrations."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from dotenv import dotenv_values

from edge.alerts.envfile import update_env_file
from edge.alerts.mailer import Mailer
from edge.alerts.render import AlertRenderer
from edge.config import Secret, SmtpSettings, load_settings, resolve_config_path
from edge.errors import AlertError, ConfigError, EdgeError
from edge.ops.owner import act_as_data_owner
from edge.store import Database
from edge.store.migrations import latest_version, load_migrations


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="agent config file (default: $EDGE_CONFIG); its folder holds the .env, its database gets migrated",
    )
    parser.add_argument(
        "--env-file", help="the .env file to write (default: $EDGE_ENV_FILE, else .env beside the config, else ./.env)"
    )
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="ask nothing: take flags and EDGE_SMTP_* / EDGE_ALERT_TO from the environment",
    )
    parser.add_argument("--dry-run", action="store_true", help="test and show what would be written, write nothing")
    parser.add_argument("--provider", choices=list(PROVIDERS))
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--security", choices=["starttls", "tls", "none"])
    parser.add_argument("--username")
    parser.add_argument("--from", dest="sender", help="sender address (default: the user name)")
    parser.add_argument("--to", help="recipients, comma-separated")
    parser.add_argument("--language", choices=["de", "en"])
    parser.add_argument("--ca-file", help="extra CA certificate to trust (a relay with its own CA)")
    parser.add_argument("--no-test-mail", action="store_true", help="only test connection and login")
    # No --password flag on purpose: it would sit in the shell history. Non-interactive runs read EDGE_SMTP_PASSWORD.


class _Wizard:
    def __init__(
        self,
        args: argparse.Namespace,
        *,
        ask: Callable[[str], str],
        ask_secret: Callable[[str], str],
        say: Callable[[str], None],
    ) -> None:
        self.args = args
        self._ask, self._ask_secret, self.say = ask, ask_secret, say
        self.interactive = not args.non_interactive

    def value(self, flag: str | None, env: str, known: dict[str, str], question: str, default: str = "") -> str:
        """Flag, then environment, then the current .env, then asking (or the default when nobody may be asked)."""
        current = flag or os.environ.get(env) or known.get(env) or default
        if not self.interactive:
            return current
        answer = self._ask(f"{question}{f' [{current}]' if current else ''}: ").strip()
        return answer or current

    def choose_provider(self) -> Provider | None:
        if self.args.provider or not self.interactive:
            return PROVIDERS.get(self.args.provider or "custom")
        names = list(PROVIDERS)
        menu = "  ".join(
            f"[{n}] {(PROVIDERS[name].label if PROVIDERS[name] else 'Custom')}" for n, name in enumerate(names, 1)
        )  # type: ignore[union-attr]
        while True:
            answer = self._ask(f"E-mail provider: {menu}\nChoose 1-{len(names)}: ").strip().lower()
            if answer.isdigit() and 1 <= int(answer) <= len(names):
                return PROVIDERS[names[int(answer) - 1]]
            if answer in PROVIDERS:
                return PROVIDERS[answer]
            self.say(f"Please type a number from 1 to {len(names)}.")

    def confirm(self, question: str) -> bool:
        return self._ask(f"{question} [y/n]: ").strip().lower() in ("y", "yes", "j", "ja")


def _env_path(args: argparse.Namespace) -> Path:
    if args.env_file:
        return Path(args.env_file)
    if os.environ.get("EDGE_ENV_FILE"):
        return Path(os.environ["EDGE_ENV_FILE"])
    config = args.config or os.environ.get("EDGE_CONFIG")
    return Path(config).parent / ".env" if config else Path(".env")


def run(
    args: argparse.Namespace,
    *,
    ask: Callable[[str], str] = input,
    ask_secret: Callable[[str], str] = getpass.getpass,
    say: Callable[[str], None] = print,
) -> int:
    """Returns the exit code: 0 written (or dry run fine), 1 a check failed and nothing was written."""
    w = _Wizard(args, ask=ask, ask_secret=ask_secret, say=say)
    env_path = _env_path(args)
    known = (
        {k: v for k, v in dotenv_values(env_path, interpolate=False).items() if v is not None}
        if env_path.is_file()
        else {}
    )

    provider = w.choose_provider()
    if provider is not None:
        host, port, security = (
            args.host or provider.host,
            args.port or provider.port,
            args.security or provider.security,
        )
        say(f"{provider.label}: {host}, port {port}, {security.upper()}")
        if provider.app_password:
            say(_APP_PASSWORD_NOTE.format(label=provider.label))
        ca_file = args.ca_file or ""
    else:
        host = w.value(args.host, "EDGE_SMTP_HOST", known, "SMTP server")
        port_text = w.value(str(args.port) if args.port else None, "EDGE_SMTP_PORT", known, "Port", "587")
        security = w.value(
            args.security,
            "EDGE_SMTP_SECURITY",
            known,
            "Security: starttls (587), tls (465) or none (local relay)",
            "starttls",
        )
        ca_file = w.value(args.ca_file, "EDGE_SMTP_CA_FILE", known, "Extra CA certificate file (empty: the system's)")
        if not port_text.isdigit() or security not in ("starttls", "tls", "none"):
            say(
                f"✗ port must be a number and security one of starttls, tls, none (got {port_text!r}, {security!r}); nothing written."
            )
            return 1
        port = int(port_text)
    if not host:
        say("✗ no SMTP server given; nothing written.")
        return 1
    username = w.value(args.username, "EDGE_SMTP_USERNAME", known, "User name (usually the e-mail address)")
    # Hidden input; empty keeps the password already in .env. Non-interactive runs take it from the environment.
    typed = ask_secret("Password (not shown): ") if w.interactive else os.environ.get("EDGE_SMTP_PASSWORD", "")
    password = typed or known.get("EDGE_SMTP_PASSWORD", "")
    sender = w.value(args.sender, "EDGE_SMTP_FROM", known, "Sender address", username)
    to = w.value(args.to, "EDGE_ALERT_TO", known, "Recipients, comma-separated")
    language = w.value(args.language, "EDGE_AGENT_LANGUAGE", known, "Language of the mails (de/en)", "de")
    recipients = [r.strip() for r in to.split(",") if r.strip()]
    if not recipients or language not in ("de", "en") or not (sender or username):
        say("✗ recipients, a sender address and a language (de or en) are needed; nothing written.")
        return 1

    values = {
        "EDGE_SMTP_HOST": host,
        "EDGE_SMTP_PORT": str(port),
        "EDGE_SMTP_SECURITY": security,
        "EDGE_SMTP_USERNAME": username,
        "EDGE_SMTP_PASSWORD": password,
        "EDGE_SMTP_FROM": sender or username,
        "EDGE_ALERT_TO": ",".join(recipients),
        "EDGE_AGENT_LANGUAGE": language,
    }
    if ca_file:
        values["EDGE_SMTP_CA_FILE"] = ca_file
    smtp = SmtpSettings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=Secret(password),
        sender=sender,  # type: ignore[arg-type]
        ca_file=Path(ca_file) if ca_file else None,
        timeout_s=15.0,
    )
    mailer = Mailer(smtp)
    say(f"Testing {host}:{port} ({security}) …")
    try:
        asyncio.run(mailer.check())
        say("✓ connection and login work")
        if not args.no_test_mail:
            store_id = _store_id(args, values)
            mail = AlertRenderer(language=language, store_name=store_id, store_id=store_id, tz=None).test(
                recipients=recipients
            )
            asyncio.run(mailer.send(mail))
            say(f"✓ test e-mail sent to {', '.join(recipients)}")
    except AlertError as err:
        say(f"✗ {err}")
        say("Nothing was written.")
        return 1
    if (
        w.interactive
        and not args.no_test_mail
        and not w.confirm("Did the test e-mail arrive (check the spam folder too)?")
    ):
        say(
            "Then the server accepted it but did not deliver it: check the recipient addresses and the provider's sent folder. Nothing was written."
        )
        return 1

    if args.dry_run:
        say(f"Dry run: would write to {env_path}:")
        for key, value in values.items():
            say(f"  {key}={'********' if key == 'EDGE_SMTP_PASSWORD' and value else value}")
        return 0
    backup = update_env_file(env_path, values)
    say(f"✓ wrote {env_path} (mode 0600){f'; previous version kept as {backup}' if backup else ''}")
    return _migrate(args, say)


def _store_id(args: argparse.Namespace, values: dict[str, str]) -> str:
    """From the agent's config as it will read with the new values; the host name when there is none."""
    try:
        return load_settings(resolve_config_path(args.config), environ={**os.environ, **values}).agent.store_id
    except EdgeError:
        return socket.gethostname()


def _migrate(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    try:
        settings = load_settings(resolve_config_path(args.config))
    except ConfigError as err:
        if err.key == "--config":
            say("No agent config given (--config or EDGE_CONFIG): the database is migrated when the agent starts.")
            return 0
        say(f"✗ the agent's config does not load with these settings: {err}")
        return 1

    act_as_data_owner(settings.agent.data_dir)  # the last step: as root, create the database as the agent's user

    async def migrate() -> None:
        db = await Database.open(settings.agent.db_path)  # migrates to the latest schema
        await db.close()

    try:
        asyncio.run(migrate())
    except EdgeError as err:
        say(f"✗ database {settings.agent.db_path}: {err}")
        return 1
    say(f"✓ database {settings.agent.db_path} is at schema version {latest_version(load_migrations())}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """`edge setup-notifications` and the script: Ctrl-C or a closed input ends it cleanly, with nothing written."""
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
