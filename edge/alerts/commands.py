"""`edge alerts test|list|silence` and `edge setup-notifications`: the manager's and technician's handles on alerting."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import time
from typing import Any

from edge.alerts.alerter import make_renderer
from edge.alerts.mailer import Mailer
from edge.alerts.rules import TYPES
from edge.alerts.setup import add_arguments, run_command
from edge.config import Settings, load_settings, resolve_config_path
from edge.errors import EdgeError
from edge.log import configure_logging
from edge.ops.owner import act_as_data_owner
from edge.store import Database
from edge.store.alerts import AlertStore

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise EdgeError(f"duration {text!r}: use a number and s, m, h or d, e.g. 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(resolve_config_path(args.config))
    act_as_data_owner(settings.agent.data_dir)  # as root: the database stays the agent's user's
    configure_logging(fmt=settings.agent.log_format, level="warning", secrets=settings.secrets())
    return settings


def _when(at: float | None) -> str:
    return "-" if at is None else dt.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


async def _with_store(settings: Settings, work: Any) -> Any:
    db = await Database.open(settings.agent.db_path)
    try:
        return await work(AlertStore(db))
    finally:
        await db.close()


def cmd_test(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.smtp.host:
        raise EdgeError("smtp.host is not set, so alerts are off: run `edge setup-notifications` first")
    mail = make_renderer(settings).test(recipients=settings.alerts.to)
    asyncio.run(Mailer(settings.smtp).send(mail))
    print(f"test mail sent to {', '.join(settings.alerts.to)} via {settings.smtp.host}:{settings.smtp.port}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def collect(store: AlertStore) -> tuple[Any, Any, Any]:
        return await store.recent(args.limit), await store.mails(args.limit), await store.active_silences(time.time())

    log, mails, silences = asyncio.run(_with_store(_settings(args), collect))
    print("recent alerts (newest first):")
    for r in log:
        print(
            f"  {_when(r['at'])}  {r['group_key']:<32} {r['action']:<10} {r['detail']:<12} x{r['count']}  now {r['state'] or '-'}"
        )
    print("mails:")
    for m in mails:
        status = (
            f"sent {_when(m['sent_at'])}"
            if m["sent_at"]
            else f"waiting ({m['attempts']} attempts{': ' + m['last_error'] if m['last_error'] else ''})"
        )
        print(f"  #{m['id']} {_when(m['created_at'])}  {m['kind']:<9} {status}  {m['subject']}")
    print("active silences:")
    for s in silences:
        print(f"  {s['matcher']} until {_when(s['ends_at'])}{'  ' + s['comment'] if s['comment'] else ''}")
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    type_name = args.matcher.split(":", 1)[0]
    if type_name not in TYPES and not any(c in type_name for c in "*?["):
        raise EdgeError(f"unknown alert type {type_name!r} (known: {', '.join(TYPES)})")
    seconds = parse_duration(args.duration)
    now = time.time()
    silence_id = asyncio.run(
        _with_store(
            _settings(args),
            lambda store: store.add_silence(args.matcher, starts_at=now, ends_at=now + seconds, comment=args.comment),
        )
    )
    print(f"silence #{silence_id}: {args.matcher} until {_when(now + seconds)}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Registers `alerts …` and `setup-notifications` on the `edge` parser."""
    alerts = sub.add_parser("alerts", help="manager e-mail alerts: test mail, recent alerts, silences")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    alerts_sub.add_parser("test", parents=[common], help="send a test mail to alerts.to").set_defaults(func=cmd_test)
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

    setup = sub.add_parser("setup-notifications", help="interactive e-mail setup for the technician (writes .env)")
    add_arguments(setup)
    setup.set_defaults(func=run_command)
