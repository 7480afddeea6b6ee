"""`edge alerts test|outbox|list|silence`, `edge setup-notifications`: the handles on alerting."""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from edge.alerts.rules import TYPES
from edge.alerts.setup import add_arguments, run_command
from edge.api.client import call_agent
from edge.clock import shown_at
from edge.config import Settings, load_settings, resolve_config_path
from edge.errors import EdgeError, NotFoundError, WrongStateError
from edge.log import configure_logging
from edge.ops.lock import AgentRunningError, DataDirLock
from edge.ops.owner import act_as_data_owner

if TYPE_CHECKING:
    from edge.alerts.alerter import Alerter
    from edge.store.alerts import AlertStore

_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    match = _DURATION_RE.fullmatch(text.strip())
    if not match:
        raise EdgeError(f"duration {text!r}: use a number and s, m, h or d, e.g. 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(resolve_config_path(args.config))
    act_as_data_owner(settings.agent.data_dir)  # as root: the database stays the agent's user's
    configure_logging(fmt=settings.agent.log_format, level="warning", secrets=settings.secrets())
    return settings


def _when(at: float | None, zone: str | None) -> str:
    return "-" if at is None else shown_at(at, zone)


async def _with_store(settings: Settings, work: Any) -> Any:
    # The store and the alerter are loaded by the commands that use them: `edge` builds this parser for every command.
    from edge.store.alerts import AlertStore
    from edge.store.db import Database

    db = await Database.open(settings.agent.db_path)
    try:
        return await work(AlertStore(db))
    finally:
        await db.close()


async def _through_agent_or_here(
    settings: Settings, method: str, path: str, here: Callable[[Alerter], Awaitable[dict[str, Any]]]
) -> tuple[int, dict[str, Any]]:
    """The running agent's outbox through its API; with no agent running, the same outbox right here, holding the
    data directory's lock so an agent starting meanwhile cannot deliver the same mail at the same time."""
    if not settings.smtp.host:
        raise EdgeError("smtp.host is not set, so alerts are off: run `edge setup-notifications` first")
    try:
        lock = DataDirLock.acquire(settings.agent.data_dir, purpose="edge alerts")
    except AgentRunningError:
        return await call_agent(settings, method, path)  # the same client every agent command uses
    from edge.alerts.alerter import Alerter
    from edge.alerts.mailer import Mailer
    from edge.events import EventBus
    from edge.store.db import Database

    try:
        db = await Database.open(settings.agent.db_path)
        try:
            alerter = Alerter(settings=settings, db=db, bus=EventBus(), mailer=Mailer(settings.smtp))
            try:
                return 200, await here(alerter)
            except (NotFoundError, WrongStateError) as err:
                return (404 if isinstance(err, NotFoundError) else 409), {"reason": str(err)}
        finally:
            await db.close()
    finally:
        lock.release()


def _mail_line(mail: dict[str, Any], zone: str | None) -> str:
    line = f"#{mail['id']} {_when(mail['created_at'], zone)}  {mail['kind']:<9} {mail['state']:<9} {mail['subject']}"
    if mail["delivered"]:
        line += f"\n      delivered to {', '.join(mail['delivered'])}"
    for recipient, reason in mail["refused"].items():
        line += f"\n      refused for {recipient}: {reason}"
    if mail["last_error"] and not mail["refused"]:
        line += f"\n      {mail['attempts']} attempts, last: {mail['last_error']}"
    return line


def cmd_test(args: argparse.Namespace) -> int:
    """A test mail through the same outbox as every alert; says how it went and what else waits there."""
    settings = _settings(args)

    async def here(alerter: Alerter) -> dict[str, Any]:
        mail = await alerter.send_test()
        status = await alerter.outbox_status()
        return {
            "mail": mail.public(),
            "pending": status.pending,
            "dead": len(status.dead),
            "server_error": status.server_error,
        }

    status, body = asyncio.run(_through_agent_or_here(settings, "POST", "/api/v1/alerts/test", here))
    if status >= 400:
        raise EdgeError(f"alerts test: the agent answered {status}: {body.get('reason', body)}")
    mail = body["mail"]
    via = f"{settings.smtp.host}:{settings.smtp.port}"
    if mail["state"] == "sent":
        print(f"test mail #{mail['id']} sent to {', '.join(mail['delivered'])} via {via}")
    else:
        print(f"test mail #{mail['id']} NOT sent to everyone via {via}:\n  {_mail_line(mail, settings.agent.timezone)}")
        if mail["state"] == "pending":
            print("  it stays in the outbox and is tried again like every alert")
    if body.get("server_error"):  # after a refused password: when alert mail tries again (this test went at once)
        print(f"  the relay: {body['server_error']}")
    print(f"outbox: {body['pending']} waiting, {body['dead']} dead-lettered (see `edge alerts outbox`)")
    return 0 if mail["state"] == "sent" else 1


def cmd_outbox(args: argparse.Namespace) -> int:
    """The outbox: what waits, what was refused for good and what may not have arrived; --retry ID or --discard ID
    acts on one mail."""
    settings = _settings(args)
    if args.retry is not None and args.discard is not None:
        raise EdgeError("alerts outbox: give --retry or --discard, not both")
    mail_id = args.retry if args.retry is not None else args.discard
    if mail_id is not None:
        action = "retry" if args.retry is not None else "discard"

        async def act(alerter: Alerter) -> dict[str, Any]:
            mail = await (alerter.retry_mail(mail_id) if action == "retry" else alerter.discard_mail(mail_id))
            return mail.public()

        path = f"/api/v1/alerts/outbox/{mail_id}/{action}"
        status, body = asyncio.run(_through_agent_or_here(settings, "POST", path, act))
        if status >= 400:
            raise EdgeError(f"alerts outbox: {body.get('reason', body)}")
        print(("retrying " if action == "retry" else "discarded ") + _mail_line(body, settings.agent.timezone))
        return 0

    async def show(alerter: Alerter) -> dict[str, Any]:
        status = await alerter.outbox_status()
        return {
            "pending": status.pending,
            "dead": [m.public() for m in status.dead],
            "unconfirmed": [m.public() for m in status.unconfirmed],
            "unrecorded": status.unrecorded,
            "waiting_signals": status.waiting_signals,
            "server_error": status.server_error,
        }

    status, body = asyncio.run(_through_agent_or_here(settings, "GET", "/api/v1/alerts/outbox", show))
    if status >= 400:
        raise EdgeError(f"alerts outbox: the agent answered {status}: {body.get('reason', body)}")
    print(f"waiting: {body['pending']}")
    if body["server_error"]:
        print(f"mail server: {body['server_error']}")
    if body["unrecorded"] or body["waiting_signals"]:
        held = f"{body['unrecorded']} sent, {body['waiting_signals']} alerts"
        print(f"held in memory until the database takes writes: {held}")
    print(
        f"dead-lettered: {len(body['dead'])}"
        + (" (edge alerts outbox --retry ID | --discard ID)" if body["dead"] else "")
    )
    for mail in body["dead"]:
        print("  " + _mail_line(mail, settings.agent.timezone))
    # Sent as far as the outbox knows, but the relay never said it took them: "did the manager get it?" starts here.
    print(f"taken as delivered, unconfirmed by the relay: {len(body['unconfirmed'])}")
    for mail in body["unconfirmed"]:
        print(f"  {_mail_line(mail, settings.agent.timezone)}\n      Message-ID {mail['message_id']}")
    return 0


# A line that queued a mail says what became of it: "mailed" only once the relay took it.
_MAIL_WORDS = {  # MailState's values (edge.store.alerts, not imported by the CLI's start)
    "pending": "mail waiting",
    "superseded": "mail superseded",
    "dead": "mail failed",
    "discarded": "mail discarded",
}


def cmd_list(args: argparse.Namespace) -> int:
    async def collect(store: AlertStore) -> tuple[Any, Any, Any]:
        return await store.recent(args.limit), await store.mails(args.limit), await store.active_silences(time.time())

    settings = _settings(args)
    zone = settings.agent.timezone
    log, mails, silences = asyncio.run(_with_store(settings, collect))
    print("recent alerts (newest first):")
    for r in log:
        # A dead mail some had (the managers, where only critical_to's address was refused) was no failure to them.
        action = "mailed in part" if r.mail == "dead" and r.mail_delivered else _MAIL_WORDS.get(r.mail or "", r.action)
        print(f"  {_when(r.at, zone)}  {r.group_key:<32} {action:<15} {r.detail:<12} x{r.count}  now {r.state or '-'}")
    print("mails:")
    for m in mails:
        print("  " + _mail_line(m.public(), zone))
    print("active silences:")
    for s in silences:
        print(f"  {s.matcher} until {_when(s.ends_at, zone)}{'  ' + s.comment if s.comment else ''}")
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    type_name = args.matcher.split(":", 1)[0]
    if type_name not in TYPES and not any(c in type_name for c in "*?["):
        raise EdgeError(f"unknown alert type {type_name!r} (known: {', '.join(TYPES)})")
    seconds = parse_duration(args.duration)
    now = time.time()
    settings = _settings(args)
    silence_id = asyncio.run(
        _with_store(
            settings,
            lambda store: store.add_silence(args.matcher, starts_at=now, ends_at=now + seconds, comment=args.comment),
        )
    )
    print(f"silence #{silence_id}: {args.matcher} until {_when(now + seconds, settings.agent.timezone)}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Registers `alerts …` and `setup-notifications` on the `edge` parser."""
    alerts = sub.add_parser("alerts", help="manager e-mail alerts: test mail, recent alerts, silences")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    alerts_sub.add_parser(
        "test", parents=[common], help="send a test mail through the outbox to every alert recipient"
    ).set_defaults(func=cmd_test)
    outbox = alerts_sub.add_parser(
        "outbox",
        parents=[common],
        help="mails waiting, refused for good, or sent unconfirmed by the relay; retry or discard one",
    )
    outbox.add_argument("--retry", type=int, metavar="ID", help="send a waiting or dead-lettered mail again now")
    outbox.add_argument("--discard", type=int, metavar="ID", help="never send this waiting or dead-lettered mail")
    outbox.set_defaults(func=cmd_outbox)
    listing = alerts_sub.add_parser(
        "list", parents=[common], help="recent alerts, sent and suppressed, and mails waiting"
    )
    listing.add_argument("--limit", type=int, default=30)
    listing.set_defaults(func=cmd_list)
    silence = alerts_sub.add_parser(
        "silence", parents=[common], help="hold mails for TYPE[:SUBJECT] for a while, e.g. printer_offline:kitchen 2h"
    )
    silence.add_argument("matcher", help="alert type, or type:subject (shell wildcards allowed)")
    silence.add_argument("duration", help="e.g. 30m, 2h, 1d")
    silence.add_argument("--comment", default="")
    silence.set_defaults(func=cmd_silence)

    setup = sub.add_parser(
        "setup-notifications", help="e-mail setup for the technician (writes the secrets file edge.env)"
    )
    add_arguments(setup)
    setup.set_defaults(func=run_command)
