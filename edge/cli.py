"""The `edge` command: run, demo, migrate, config check, reprint, retry, jobs, simulators."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

from edge.config import Settings, load_settings, resolve_config_path
from edge.errors import ConfigError, EdgeError
from edge.log import configure_logging

EXIT_CONFIG = 2


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(resolve_config_path(args.config))


def _setup_logging(settings: Settings | None, *, level: str | None = None) -> None:
    if settings is None:
        configure_logging(level=level or "info")
    else:
        configure_logging(fmt=settings.agent.log_format, level=level or settings.agent.log_level, secrets=settings.secrets())


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args)
    from edge.app import Agent, run_until_signal

    _setup_logging(settings)
    asyncio.run(run_until_signal(Agent(settings)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.sim.demo import run_demo

    configure_logging(level="warning" if not args.verbose else "info")
    return asyncio.run(run_demo(Path(args.data_dir), once=args.once, port=args.port, orders=args.orders))


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = _load(args)
    print(f"config {settings.source}: ok ({len(settings.printers)} printers, stations: {', '.join(settings.stations) or 'none'})")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from edge.store import migrations
    from edge.store.db import connect_writer

    settings = _load(args)
    _setup_logging(settings, level="warning")

    async def go() -> tuple[int, int]:
        conn = await connect_writer(settings.agent.db_path)
        try:
            return await migrations.migrate(conn, migrations.load_migrations(), args.to)
        finally:
            await conn.close()

    before, after = asyncio.run(go())
    print(f"database {settings.agent.db_path}: schema version {before} -> {after}")
    return 0


async def _api_call(settings: Settings, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    host = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host
    url = f"http://{host}:{settings.api.port}{path}"
    headers = {"Authorization": f"Bearer {settings.api.token.get()}"}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(method, url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise EdgeError(f"agent API at {url} did not answer ({err or type(err).__name__}); is the agent running?") from None


def _api_command(args: argparse.Namespace, method: str, path: str, body: Any = None) -> int:
    settings = _load(args)
    status, answer = asyncio.run(_api_call(settings, method, path, body))
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 0 if status < 400 else 1


def cmd_reprint(args: argparse.Namespace) -> int:
    body = {"station": args.station} if args.station else None
    return _api_command(args, "POST", f"/api/v1/orders/{args.order}/reprint", body)


def cmd_retry(args: argparse.Namespace) -> int:
    return _api_command(args, "POST", f"/api/v1/jobs/{args.job}/retry")


def cmd_jobs(args: argparse.Namespace) -> int:
    query = "?state=dead" if args.failed else (f"?state={args.state}" if args.state else "")
    return _api_command(args, "GET", f"/api/v1/jobs{query}")


def cmd_sim_printer(args: argparse.Namespace) -> int:
    from edge.sim.printer import serve

    configure_logging(level="info")
    try:
        asyncio.run(serve(args.name, args.port, Path(args.out) if args.out else None))
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file (default: $EDGE_CONFIG)")

    parser = argparse.ArgumentParser(prog="edge", description="Store edge agent")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", parents=[common], help="run the agent (production)").set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", parents=[common], help="run with simulated printers and sample orders, all on loopback")
    demo.add_argument("--data-dir", default="demo-data", help="where the demo keeps its database and printed .bin files")
    demo.add_argument("--port", type=int, default=8765, help="API port (0 = any free port)")
    demo.add_argument("--orders", type=int, default=3, help="sample orders to push")
    demo.add_argument("--once", action="store_true", help="exit when the sample tickets are printed")
    demo.add_argument("--verbose", action="store_true", help="show the agent's log lines")
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_sub.add_parser("check", parents=[common], help="validate the config and exit").set_defaults(func=cmd_config_check)

    migrate = sub.add_parser("migrate", parents=[common], help="migrate the database schema (to latest, or --to N)")
    migrate.add_argument("--to", type=int, default=None, help="target version (lower = down)")
    migrate.set_defaults(func=cmd_migrate)

    reprint = sub.add_parser("reprint", parents=[common], help="print copies of an order's tickets (marked COPY)")
    reprint.add_argument("order")
    reprint.add_argument("--station", default=None)
    reprint.set_defaults(func=cmd_reprint)

    retry = sub.add_parser("retry", parents=[common], help="re-queue a failed or dead print job")
    retry.add_argument("job", type=int)
    retry.set_defaults(func=cmd_retry)

    jobs = sub.add_parser("jobs", parents=[common], help="list print jobs")
    jobs.add_argument("--failed", action="store_true", help="only dead jobs (gave up; need a person)")
    jobs.add_argument("--state", default=None)
    jobs.set_defaults(func=cmd_jobs)

    sim = sub.add_parser("sim", help="simulators for tests and demos")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="WHAT")
    printer = sim_sub.add_parser("printer", help="a network ESC/POS printer on loopback")
    printer.add_argument("--port", type=int, default=9100)
    printer.add_argument("--name", default="sim")
    printer.add_argument("--out", default=None, help="write each printed job as a .bin file here")
    printer.set_defaults(func=cmd_sim_printer)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"edge: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except EdgeError as err:
        print(f"edge: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as err:  # e.g. the API port is taken: one line, not a traceback
        print(f"edge: {err}", file=sys.stderr)
        return 1

