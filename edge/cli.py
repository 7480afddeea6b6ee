"""The `edge` command: run, demo, migrate, config check, reprint, retry, jobs, simulators."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import json
import os
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.api.client import call_agent, not_the_agent
from edge.config import Settings, load_settings, load_settings_around_faults, resolve_config_path
from edge.errors import (
    ConfigError,
    EdgeError,
    SchemaTooNewError,
    SchemaTooOldError,
    StoreDamagedError,
    StoreError,
    StoreNotWritableError,
    StoreReadOnlyError,
)
from edge.heap import share_arenas
from edge.log import LogStream, configure_logging, known_secrets, without_secrets

if TYPE_CHECKING:
    from edge.store.rows import PrintableJob

EXIT_CONFIG = 2
# At the agent's exit its last log lines get this long: a reader that stopped reading must not hold a restart.
_LOG_CLOSE_S = 2.0


def _load(args: argparse.Namespace, *, printing: bool = False) -> Settings:
    """The settings, the process then acting as the data dir's owner. ``printing``: load what printing these settings
    imports (jinja2; python-escpos and Pillow for images) first, while still root; they import lazily, and after this
    every file they read must be readable by the agent's user."""
    from edge.ops.owner import act_as_data_owner

    settings = load_settings(resolve_config_path(args.config))
    known_secrets(settings.secrets())  # scrubbed from a traceback too, should one come
    if printing:
        from edge.printing.check import load_libraries

        load_libraries(settings)
    act_as_data_owner(settings.agent.data_dir)  # as root: become the agent's user before touching its files
    return settings


def _keep_escpos_cache(folder: Path) -> None:
    """python-escpos parses its printer database (YAML, ~0.1-0.2 s) on import and pickles it into a fresh temporary
    folder every time: each start paid the parse and left a 70 KB file behind in /tmp. In a folder that stays, the next
    start loads the pickle instead. Only for `edge run` (the process is the agent: the variable must not outlive it in
    a caller, as in a test calling main(); escpos fails to import when the folder has gone), set before anything
    imports escpos; an operator's own setting wins."""
    if "ESCPOS_CAPABILITIES_PICKLE_DIR" in os.environ:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # not ours to create (read-only data dir): escpos falls back to its temporary folder
    if os.access(folder, os.W_OK):  # escpos cannot import when it cannot write its pickle there
        os.environ["ESCPOS_CAPABILITIES_PICKLE_DIR"] = str(folder)


def _setup_logging(settings: Settings | None, *, level: str | None = None, lines: LogStream | None = None) -> None:
    if settings is None:
        configure_logging(level=level or "info", lines=lines)
    else:
        configure_logging(
            fmt=settings.agent.log_format,
            level=level or settings.agent.log_level,
            secrets=settings.secrets(),
            lines=lines,
        )


def cmd_run(args: argparse.Namespace) -> int:
    from edge.ops import last_failure
    from edge.ops.lock import AgentRunningError

    share_arenas()  # before the first thread
    settings = _load(args)
    data_dir = settings.agent.data_dir
    last_failure.forget(data_dir)
    try:
        return _run(settings)
    except StoreDamagedError as err:
        from edge.ops.backup import restore_advice

        damaged = StoreDamagedError(f"{err}; stop here and {restore_advice(settings)}")
        last_failure.record(data_dir, str(damaged))
        raise damaged from err
    except AgentRunningError:
        raise  # says nothing of the agent that runs: nothing to tell the health check
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            # Exit 1, not a config error: the holder may be an agent still stopping, gone when systemd tries again.
            port = settings.api.port
            taken = EdgeError(
                f"api.port {port} on {settings.api.host} is in use by another program"
                f" (see `ss -ltnp 'sport = :{port}'`); stop it, or set another api.port"
            )
            last_failure.record(data_dir, str(taken))
            raise taken from err
        if not (problem := _api_host_problem(settings.api.host, err)):
            last_failure.record(data_dir, str(err))
            raise
        refused = ConfigError("api.host", problem)  # a config error: exit 2, so systemd does not restart it in a loop
        last_failure.record(data_dir, str(refused))
        raise refused from err
    except EdgeError as err:
        last_failure.record(data_dir, str(err))
        raise


def _api_host_problem(host: str, err: OSError) -> str:
    """What keeps the agent from listening on api.host, from the error its start ended with ("" if another). The
    start's only name lookup is the API's bind: one that fails is api.host's."""
    from edge.dns import unresolved

    if found := unresolved(err, host):
        return f"{found} (it is the address the agent listens on: 127.0.0.1, 0.0.0.0 for all, or one of this box's)"
    if err.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this box (see `ip -brief address`; 0.0.0.0 listens on all of them)"
    return ""


def _run(settings: Settings) -> int:
    _keep_escpos_cache(settings.agent.data_dir / "cache")
    from edge.app import EXIT_RESTART, Agent, run_until_signal, threads_left

    # Its lines are written by a thread of their own: a log reader that stops reading must not stop the agent.
    lines = LogStream(sys.stderr)
    _setup_logging(settings, lines=lines)
    try:
        # The loop's executor (asyncio's own size), kept to be shut down without waiting: see threads_left.
        executor = concurrent.futures.ThreadPoolExecutor(
            min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="asyncio"
        )
        with asyncio.Runner() as runner:
            runner.get_loop().set_default_executor(executor)
            stopped = runner.run(run_until_signal(Agent(settings)))
            status = EXIT_RESTART if stopped.restart else 0
            executor.shutdown(wait=False)
            # Stopped by a second signal, or threads still busy: the database is closed and the lock released, but a
            # job may still be going out on a printer thread that Python cannot interrupt, or a thread hangs in a name
            # lookup (no internet, the router's DNS does not answer), and leaving normally would wait for them.
            if stopped.forced or threads_left():
                lines.close(_LOG_CLOSE_S)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
    finally:
        lines.close(_LOG_CLOSE_S)
    return status


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.sim.demo import run_demo

    # The agent's log is --verbose's: a warning the demo's story brings (the line is down as it starts) is told by the
    # demo in words, not as a raw log line before its banner. An error still shows.
    configure_logging(level="error" if not args.verbose else "info")
    return asyncio.run(run_demo(Path(args.data_dir), once=args.once, port=args.port, orders=args.orders))


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge.ops.technician import check_startable

    settings = _load(args, printing=True)
    _setup_logging(settings, level="warning")  # the printing check's own info line is not the command's answer
    check_startable(settings)
    # As an unknown key in the config file: the setting meant is not set. The file's first, then the environment's.
    in_file = [v.problem() for v in settings.unknown_variables if v.line is not None]
    if in_file:
        raise ConfigError(str(settings.secrets_file), "; ".join(in_file))
    if in_environment := [v.problem() for v in settings.unknown_variables if v.line is None]:
        raise ConfigError(
            "environment",
            f"{'; '.join(in_environment)}; it is set in the process environment (a systemd drop-in's Environment=,"
            " a shell export): correct or remove it there",
        )
    for line in settings.overridden:
        print(line)
    for unsafe in settings.unsafe:  # works, so not refused; the doctor and the start's log say it too
        print(unsafe)
    if unmailed := settings.unmailed_alerts:
        print(unmailed)
    if unserved := settings.receipts.unserved:
        print(unserved)
    try:  # a data_dir moved to a folder made for it, without its edge.db, strands its orders (config80 F6)
        moved = settings.agent.data_dir.is_dir() and not settings.agent.db_path.exists()
    except OSError:  # not this user's to look into: the start's own checks say so
        moved = False
    if moved:
        print(
            f"agent.data_dir {settings.agent.data_dir} holds no database yet: the first start makes a new, empty one;"
            " if this box took orders before, stop the agent and move its edge.db* here first",
            file=sys.stderr,  # a note beside the answer, which scripts read on stdout
        )
    stations = ", ".join(settings.stations) or "none"
    print(f"config {settings.source}: ok ({len(settings.printers)} printers, stations: {stations})")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from edge.ops.backup import backup_database
    from edge.ops.lock import DataDirLock
    from edge.store.files import schema_of_file
    from edge.store.migrations import latest_version, load_migrations
    from edge.store.schema import migrate_file

    settings = _load(args)
    _setup_logging(settings, level="warning")
    if args.to is not None and args.to < 1:
        # Schema 0 is no database: every order, job and remembered order id dropped (a typo for 10 did it).
        print(
            f"edge migrate --to {args.to}: refused, that drops every order, print job and remembered order id;"
            f" to start a box over, stop the agent and move {settings.agent.db_path} away",
            file=sys.stderr,
        )
        return 2

    # Never under a running agent: a step down would drop tables and columns the agent is using.
    lock = DataDirLock.acquire(settings.agent.data_dir, purpose="edge migrate")
    try:
        path = settings.agent.db_path
        schema, known = schema_of_file(path) or 0, latest_version(load_migrations())
        if schema > known:
            # Refused before the backup: each refused try's backup pushed a real one out of backup.keep (upgrade82 F1).
            raise SchemaTooNewError(_newer_release_step(path, schema, known, args.to))
        if args.to is not None and args.backup and schema > args.to:
            # What the down parts drop (rows of tables an older schema has not) can be had back from this.
            try:
                backup = asyncio.run(backup_database(settings, label="-before-migrate"))
            except StoreError as err:
                raise StoreError(
                    f"{err}; the step down is not done: make room, or with a backup of your own run it with --no-backup"
                ) from None
            print(f"backup before the step down: {backup}")
        migrating = migrate_file(path, args.to, store_id=settings.agent.store_id, now=time.time())
        before, after = asyncio.run(migrating)
    finally:
        lock.release()
    print(f"database {settings.agent.db_path}: schema version {before} -> {after}")
    return 0


def _newer_release_step(path: Path, schema: int, known: int, to: int | None) -> str:
    """`edge migrate` of this release on a database a newer one wrote: the step is the newer release's to take, with its
    own `edge` (the one on PATH may be this one: its advice, run here, came back to the same refusal)."""
    from edge import __version__

    target = known if to is None else min(to, known)
    here = Path(sys.prefix).resolve()
    others = []
    if here.parent.name == "releases":  # install.sh's layout: each release a venv of its own beside the others
        with contextlib.suppress(OSError):
            others = sorted(
                str(p / "bin" / "edge") for p in here.parent.iterdir() if p != here and (p / "bin" / "edge").exists()
            )
    where = f" (releases on this box besides this one: {', '.join(others)})" if others else ""
    return (
        f"database {path} is at schema {schema}, which a newer release wrote; this edge ({__version__}, {here}) knows"
        f" up to schema {known}: refused, nothing written. Run the newer release's own `edge migrate --to {target}`"
        f" with its bin/edge{where}, not the `edge` that answered this"
    )


def _api_command(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    *,
    then: Callable[[Any], None] | None = None,
    in_config: Callable[[Settings], bool] | None = None,
) -> int:
    """The agent's answer printed; ``then`` is given a good answer, to add a word of its own. ``in_config``: whether
    what a 404 did not find is in the config file now (added since the agent started: a restart takes it up)."""
    settings = _load(args)
    status, answer = asyncio.run(call_agent(settings, method, path, body))
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    if then is not None and status < 400:
        then(answer)
    refused_by_old_config = status == 401 or (status == 404 and in_config is not None and in_config(settings))
    if refused_by_old_config and (hint := _restart_hint(settings)):
        print(hint, file=sys.stderr)
    return 0 if status < 400 else 1


def _restart_hint(settings: Settings) -> str:
    from edge.ops.technician import restart_hint

    return restart_hint(settings)


def cmd_reprint(args: argparse.Namespace) -> int:
    body = {"station": args.station} if args.station else None
    # A person means the number on the ticket in hand: today's order with it wins over an older order whose id it is
    # (a till's integer ids meet its daily numbers); the API would ask which. Quoted whole: a "?" in a number typed is
    # the number's, not the query's.
    path = f"/api/v1/orders/{urllib.parse.quote(args.order, safe='')}/reprint?by={'id' if args.by_id else 'number'}"
    return _api_command(args, "POST", path, body)


def cmd_retry(args: argparse.Namespace) -> int:
    return _api_command(args, "POST", f"/api/v1/jobs/{args.job}/retry")


# The most GET /api/v1/jobs lists at once: the held and dead lists ask for this many, not the API's default 100. The
# status page lists 50 of each and sends a person here for the rest: with 200 held, #51-#100 were listed nowhere.
_JOBS_LISTED = 1000


def cmd_jobs(args: argparse.Namespace) -> int:
    if not (args.held or args.failed):
        return _api_command(args, "GET", f"/api/v1/jobs?state={args.state}" if args.state else "/api/v1/jobs")
    state = "held" if args.held else "dead"
    # Held ones oldest first, as the status page lists them (the order they waited and would print in): the page's
    # first 50 and these are the same, so none is listed nowhere however many wait.
    order = "oldest" if args.held else "newest"

    def tell_the_rest(answer: Any) -> None:
        jobs = answer.get("jobs") if isinstance(answer, dict) else None
        if isinstance(jobs, list) and len(jobs) >= _JOBS_LISTED:
            print(
                f"edge jobs: the agent lists at most {_JOBS_LISTED} {state} jobs, the {order}; the others are not"
                " shown (release or discard some, then ask again)",
                file=sys.stderr,
            )

    query = f"/api/v1/jobs?state={state}&limit={_JOBS_LISTED}&order={order}"
    return _api_command(args, "GET", query, then=tell_the_rest)


def cmd_release(args: argparse.Namespace) -> int:
    if args.all and args.job is not None:
        raise EdgeError("release: give a job id or --all, not both")
    if not args.all and args.job is None:
        raise EdgeError("release: give a job id (see `edge jobs --held`) or --all")
    return _api_command(args, "POST", "/api/v1/jobs/release-held" if args.all else f"/api/v1/jobs/{args.job}/release")


def cmd_discard(args: argparse.Namespace) -> int:
    return _api_command(args, "POST", f"/api/v1/jobs/{args.job}/discard")


def cmd_printer_test(args: argparse.Namespace) -> int:
    return _api_command(
        args, "POST", f"/api/v1/printers/{args.name}/test", in_config=lambda settings: args.name in settings.printers
    )


def cmd_preview(args: argparse.Namespace) -> int:
    """Straight from the database, read-only: works whether or not the agent runs, and builds no agent."""
    from edge.printing.check import operator_files
    from edge.printing.decode import preview, preview_png
    from edge.printing.jobs import JobRenderer
    from edge.printing.profiles import DEFAULT_WIDTH, line_width
    from edge.store.files import order_jobs

    settings = _load(args, printing=True)
    jobs = order_jobs(settings.agent.db_path, args.order, by_id=args.by_id)
    if not jobs:
        raise EdgeError(f"order {args.order!r} has no print jobs (or does not exist)")
    renderer = JobRenderer(settings, files=operator_files(settings))
    print(f"order {jobs[0].order_id}, number {jobs[0].order_number}")
    for job in jobs:
        printer = settings.printers.get(job.printer)
        width = line_width(printer) if printer else DEFAULT_WIDTH
        what = f"{job.kind} {job.station or ''}".strip()
        print(f"=== job {job.id}: {what} on {job.printer}, {job.state}{', copy' if job.copy else ''} ===")
        if note := _printed_otherwise(job, renderer.rendered_with(job), settings.agent.timezone):
            print(note)
        data = renderer.render(job)
        print(preview(data, width=width))
        if args.png:
            path = Path(args.png) / f"job-{job.id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(preview_png(data, width=width))
            print(f"(image: {path})")
    return 0


def _printed_otherwise(job: PrintableJob, now: str, timezone: str) -> str | None:
    """A line for a job whose paper was shaped by other settings than today's (JobRenderer.rendered_with): the preview
    renders it again with today's, not what went out (the receipt80 probe, R6). None: the same, or not printed yet."""
    from edge.clock import store_zone
    from edge.states import JobState

    if job.rendered_with is None:
        # Printed with no record: by a release before the column, or before a step down dropped it (upgrade82 F3).
        if job.state != JobState.PRINTED or job.printed_at is None:
            return None
        printed = datetime.fromtimestamp(job.printed_at, store_zone(timezone))
        return (
            f"(note: printed {printed:%Y-%m-%d %H:%M} with settings not recorded (by an earlier version, or before a"
            " downgrade): the paper may differ from this preview)"
        )
    if job.rendered_with == now:
        return None
    then_language, then_width, then_rest = [*job.rendered_with.split(" "), "", "", ""][:3]
    now_language, now_width, now_rest = now.split(" ")
    changed = [f"language {then_language}"] if then_language != now_language else []
    changed += [f"{then_width} columns"] if then_width != now_width else []
    changed += (
        ["another store name, footer, template, logo, time zone or printer option"] if then_rest != now_rest else []
    )
    when = (
        f"printed {datetime.fromtimestamp(job.printed_at, store_zone(timezone)):%Y-%m-%d %H:%M}"
        if job.printed_at is not None
        else "sent to the printer"
    )
    return f"(note: {when} with other settings ({', '.join(changed)}): the paper may differ from this preview)"


def cmd_status(args: argparse.Namespace) -> int:
    from edge.ops.technician import render_status

    settings = _load(args)
    status, answer = asyncio.run(call_agent(settings, "GET", "/api/v1/status"))
    if status >= 400:
        hint = _restart_hint(settings) if status == 401 else ""  # a token changed since the agent started
        raise EdgeError(
            f"status: the agent answered {status}: {answer.get('reason', answer)}{f'; {hint}' if hint else ''}"
        )
    if not {"store_id", "version", "printers"} <= answer.keys():  # another program's JSON on api.port
        raise EdgeError(not_the_agent(f"127.0.0.1:{settings.api.port}", status, str(answer)[:100]))
    print(
        json.dumps(answer, indent=2, ensure_ascii=False)
        if args.json
        else render_status(answer, colour=sys.stdout.isatty(), zone=settings.agent.timezone)
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge.ops.technician import doctor, render_checks

    settings = _load(args, printing=True)
    _setup_logging(settings, level="error")
    checks = asyncio.run(doctor(settings, call_agent))
    print(render_checks(checks, colour=sys.stdout.isatty()))
    return 1 if any(c.level == "fail" for c in checks) else 0


def cmd_health(args: argparse.Namespace) -> int:
    from edge.ops.health import health
    from edge.ops.owner import act_as_data_owner

    # The check that tells the manager the agent is down must not be stopped by what stopped the agent: a printer's
    # or a station's broken settings are left out (agent, API and mail settings are what it needs).
    settings, broken = load_settings_around_faults(
        resolve_config_path(args.config), needed=("agent", "api", "smtp", "alerts")
    )
    act_as_data_owner(settings.agent.data_dir)
    _setup_logging(settings)
    if broken is not None:
        print(f"edge: {broken} (checked with the rest of the config)", file=sys.stderr)
    problem = None if broken is None else str(broken)
    healthy, reason = asyncio.run(health(settings, call_agent, alert=args.alert, config_problem=problem))
    print(f"{'healthy' if healthy else 'UNHEALTHY'}: {reason}")
    return 0 if healthy else 1


def cmd_backup(args: argparse.Namespace) -> int:
    from edge.ops.backup import backup_database

    settings = _load(args)
    _setup_logging(settings, level="warning")
    print(f"backup written: {asyncio.run(backup_database(settings))}")
    return 0


def _utc(at: float | None) -> str:
    return "unknown" if at is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def cmd_restore(args: argparse.Namespace) -> int:
    from edge.ops.backup import restore_database
    from edge.ops.technician import CLOCK_BEHIND_MAX_S

    settings = _load(args)
    _setup_logging(settings, level="warning")
    restored = asyncio.run(restore_database(settings, Path(args.file), force=args.force))
    print(
        f"restored {args.file} into {settings.agent.db_path}"
        + (f"; the database it replaced is kept as {restored.safety}" if restored.safety else "")
    )
    if restored.replaced_none:
        print(
            "no database was here: this box cannot know what the box before it took after the backup"
            f" ({_utc(restored.backup_until)}, its newest order): recovery brings back what central has, those created"
            " before now marked COPY; orders a till sent straight to that box since then are lost unless resent: have"
            " the till (or central) resend them"
        )
    if restored.backup_until is not None and restored.at < restored.backup_until - CLOCK_BEHIND_MAX_S:
        named = (
            f": the copy of the replaced database is named by it ({restored.safety.name})" if restored.safety else ""
        )
        print(
            f"this box's clock ({_utc(restored.at)}) is behind the backup's newest order"
            f" ({_utc(restored.backup_until)}): it looks wrong{named}; let NTP set it before the agent starts"
        )
    if restored.lacking:
        n = restored.lacking
        print(
            f"{n} order{'s' if n != 1 else ''} taken since the backup {'are' if n != 1 else 'is'} not in it: recovery"
            " brings back what central has; a sender's resend prints marked COPY (it may be on paper)"
        )
    if restored.moved_from is not None:
        print(
            f"moved from store {restored.moved_from or '(unknown)'} to {settings.agent.store_id}: "
            "the recovery cursor starts over, so the next recovery fetches this store's orders from the first"
        )
    return 0


def cmd_sim_printer(args: argparse.Namespace) -> int:
    from edge.sim.printer import PaperSpeed, serve

    configure_logging(level="info")
    speed = None if args.instant else PaperSpeed()
    try:
        asyncio.run(serve(args.name, args.port, Path(args.out) if args.out else None, serial=args.serial, speed=speed))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_recovery(args: argparse.Namespace) -> int:
    if args.action == "run":
        return _api_command(args, "POST", "/api/v1/recovery/runs")
    return _api_command(args, "GET", "/api/v1/recovery/status")


def cmd_sim_central(args: argparse.Namespace) -> int:
    from edge.sim.central import serve as serve_central

    configure_logging(level="info")
    try:
        asyncio.run(serve_central(port=args.port, store_id=args.store, orders=args.orders, token=args.token))
    except KeyboardInterrupt:
        pass
    return 0


def build_parser(*, only_run: bool = False) -> argparse.ArgumentParser:
    """Every command's parser; with ``only_run``, `edge run`'s alone (systemd's start of the agent): the others and
    the alerts commands' modules took ~7 ms and 0.3 MB of every start of the agent."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file (default: $EDGE_CONFIG)")

    parser = argparse.ArgumentParser(prog="edge", description="Store edge agent")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", parents=[common], help="run the agent (production)").set_defaults(func=cmd_run)
    if only_run:
        return parser

    demo = sub.add_parser(
        "demo", parents=[common], help="run with simulated printers and sample orders, all on loopback"
    )
    demo.add_argument(
        "--data-dir", default="demo-data", help="where the demo keeps its database and printed .bin files"
    )
    demo.add_argument("--port", type=int, default=8765, help="API port (0 = any free port)")
    demo.add_argument("--orders", type=int, default=3, help="sample orders to push")
    demo.add_argument("--once", action="store_true", help="exit when the sample tickets are printed")
    demo.add_argument("--verbose", action="store_true", help="show the agent's log lines")
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_sub.add_parser("check", parents=[common], help="validate the config and exit").set_defaults(
        func=cmd_config_check
    )

    migrate = sub.add_parser("migrate", parents=[common], help="migrate the database schema (to latest, or --to N)")
    migrate.add_argument("--to", type=int, default=None, help="target version (lower = down)")
    migrate.add_argument(
        "--no-backup",
        dest="backup",
        action="store_false",
        help="no backup before a step down (upgrade.sh took one after the agent stopped)",
    )
    migrate.set_defaults(func=cmd_migrate)

    reprint = sub.add_parser("reprint", parents=[common], help="print copies of an order's tickets (marked COPY)")
    reprint.add_argument(
        "order",
        help="the number on its ticket (today's order with it; if none of today's has it, the order with that id),"
        " or its id",
    )
    reprint.add_argument(
        "--by-id",
        action="store_true",
        help="ORDER is the order's id, not a ticket number: for an older order whose id is also a number on one of"
        " today's tickets (edge jobs shows ids)",
    )
    reprint.add_argument("--station", default=None)
    reprint.set_defaults(func=cmd_reprint)

    retry = sub.add_parser("retry", parents=[common], help="re-queue a failed or dead print job")
    retry.add_argument("job", type=int)
    retry.set_defaults(func=cmd_retry)

    jobs = sub.add_parser("jobs", parents=[common], help="list print jobs")
    jobs.add_argument("--failed", action="store_true", help="only dead jobs (gave up; need a person)")
    jobs.add_argument(
        "--held",
        action="store_true",
        help="every held job, oldest first (stale tickets waiting for release or discard)",
    )
    jobs.add_argument("--state", default=None)
    jobs.set_defaults(func=cmd_jobs)

    release = sub.add_parser("release", parents=[common], help="print a held (stale) job after all, or every held job")
    release.add_argument("job", type=int, nargs="?")
    release.add_argument("--all", action="store_true", help="release every held job")
    release.set_defaults(func=cmd_release)

    discard = sub.add_parser("discard", parents=[common], help="never print a held, failed or dead job")
    discard.add_argument("job", type=int)
    discard.set_defaults(func=cmd_discard)

    preview = sub.add_parser("preview", parents=[common], help="show an order's tickets and receipt as text")
    preview.add_argument("order", help="the number on its ticket (the latest order with it), or its id")
    preview.add_argument("--by-id", action="store_true", help="ORDER is the order's id, not a ticket number")
    preview.add_argument("--png", metavar="DIR", default=None, help="also write each job as DIR/job-ID.png")
    preview.set_defaults(func=cmd_preview)

    printer_cmd = sub.add_parser("printer", help="printers")
    printer_sub = printer_cmd.add_subparsers(dest="printer_command", required=True, metavar="ACTION")
    printer_test = printer_sub.add_parser("test", parents=[common], help="print a test page and show the status read")
    printer_test.add_argument("name")
    printer_test.set_defaults(func=cmd_printer_test)

    status = sub.add_parser(
        "status", parents=[common], help="one screen: printers, queue, dead jobs, central link, recovery, alerts"
    )
    status.add_argument("--json", action="store_true", help="the raw answer of GET /api/v1/status")
    status.set_defaults(func=cmd_status)
    sub.add_parser(
        "doctor", parents=[common], help="check config, database, disk, printers, SMTP, central API, clock"
    ).set_defaults(func=cmd_doctor)
    health = sub.add_parser("health", parents=[common], help="is the agent ready? (exit 1 if not)")
    health.add_argument("--alert", action="store_true", help="mail the manager when it stays down (systemd timer)")
    health.set_defaults(func=cmd_health)
    sub.add_parser("backup", parents=[common], help="online backup of the database into backup.dir").set_defaults(
        func=cmd_backup
    )
    restore = sub.add_parser("restore", parents=[common], help="replace the database with a backup (agent stopped)")
    restore.add_argument("file", help="one backup file (`edge backup` writes them to backup.dir)")
    restore.add_argument(
        "--force",
        action="store_true",
        help="take another store's backup (a deliberate move); resets the recovery cursor",
    )
    restore.set_defaults(func=cmd_restore)

    from edge.alerts.commands import add_commands  # `alerts …` and `setup-notifications` live with the alerts

    add_commands(sub, common)

    sim = sub.add_parser("sim", help="simulators for tests and demos")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="WHAT")
    printer = sim_sub.add_parser("printer", help="a network ESC/POS printer on loopback")
    printer.add_argument("--port", type=int, default=9100)
    printer.add_argument("--name", default="sim")
    printer.add_argument("--out", default=None, help="write each printed job as a .bin file here")
    printer.add_argument(
        "--serial", action="store_true", help="on a pseudo-terminal instead of TCP; logs the device to configure"
    )
    printer.add_argument(
        "--instant", action="store_true", help="paper out at once, not at 250 mm/s like an 80 mm thermal printer"
    )
    printer.set_defaults(func=cmd_sim_printer)
    central = sim_sub.add_parser(
        "central", help="the central API with ready-made orders for one store; logs every status event"
    )
    central.add_argument("--port", type=int, default=8780)
    central.add_argument("--store", required=True, help="the store id the agent is configured with (agent.store_id)")
    central.add_argument("--orders", type=int, default=10, help="orders waiting for the store")
    central.add_argument(
        "--token", default="sim-central-token", help="bearer token it expects (the agent's central.token)"
    )
    central.set_defaults(func=cmd_sim_central)

    recovery = sub.add_parser(
        "recovery", parents=[common], help="reconcile with the central API through the running agent"
    )
    recovery.add_argument(
        "action",
        choices=("run", "status"),
        help="run: start a recovery run (or join the active one); status: link, cursor, runs",
    )
    recovery.set_defaults(func=cmd_recovery)
    return parser


def _open_std_streams() -> None:
    """/dev/null in place of a standard stream the process was started without (a supervisor's `2>&-`, a helper that
    closes every descriptor): Python leaves None there, the agent's log stream cannot be made, and the next file
    opened (the database, a printer's device) would take the descriptor stray writes go to."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        if getattr(sys, name) is None:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 (the process's own, for its whole life)


def main(argv: list[str] | None = None) -> int:
    _open_std_streams()
    args = build_parser(only_run=(sys.argv[1:] if argv is None else argv)[:1] == ["run"]).parse_args(argv)
    try:
        return args.func(args)
    except (
        ConfigError,
        StoreDamagedError,
        StoreReadOnlyError,
        StoreNotWritableError,
        SchemaTooNewError,
        SchemaTooOldError,
    ) as err:
        # Exit 2: a person must act; systemd does not restart the agent in a loop (RestartPreventExitStatus=2).
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
    except Exception:
        # A failure nothing expected: its traceback is for a bug report, but may quote a secret (a header value with
        # the token in it: the security81 probe, F6), so it is scrubbed as log lines are.
        print(without_secrets(traceback.format_exc()), end="", file=sys.stderr)
        return 1
