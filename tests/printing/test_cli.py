"""`edge printer test`, `edge preview`, `edge jobs --held`, `edge release`, `edge discard` against a running agent."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from PIL import Image

import edge as edge_package
from edge import cli
from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import load_settings
from edge.printing.decode import decode
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from edge.sim.process import write_config as write_agent_config
from edge.store import migrations
from tests.helpers import (
    TOKEN,
    agent_process,
    api_client,
    asap,
    edge,
    eventually,
    ids_meet_numbers,
    job_rows,
    post,
    reconfigure,
    wait_until,
)


def write_config(tmp_path: Path, printers: dict[str, SimPrinter], *, port: int = 0, stale_min: float = 45) -> Path:
    path = tmp_path / "edge.toml"
    lines = [
        "[agent]",
        'store_id = "test-store"',
        f'data_dir = "{tmp_path / "data"}"',
        'log_format = "json"',
        "[api]",
        f"port = {port}",
        f'token = "{TOKEN}"',
        "[printing]",
        f"stale_ticket_min = {stale_min}",
        "[stations]",
        'kitchen = "kitchen"',
        "[receipts]",
        'printer = "front"',
    ]
    for name, sim in printers.items():
        lines += [
            f"[printers.{name}]",
            'type = "network"',
            'host = "127.0.0.1"',
            f"port = {sim.port}",
            "status_timeout = 0.5",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The real `edge` entry point; in a thread, since it runs its own event loop."""
    capsys.readouterr()  # drop the agent's log lines so far
    code = await asyncio.to_thread(cli.main, list(argv))
    return code, capsys.readouterr().out


def answer(out: str) -> dict:
    """The JSON the command printed (the agent in this process logs to the same stdout)."""
    return json.JSONDecoder().raw_decode(out[out.index("{") :])[0]


@pytest.fixture
async def running(
    tmp_path: Path, printers: dict[str, SimPrinter], make_agent: Callable[..., Awaitable[Agent]]
) -> tuple[Agent, Path]:
    """The agent started from a config file on a fixed free port, so the CLI can reach it with the same file."""
    path = write_config(tmp_path, printers, stale_min=1)
    agent = await make_agent(load_settings(path, environ={}), clock=SteppedClock())
    path = write_config(tmp_path, printers, port=agent.port, stale_min=1)
    return agent, path


async def test_printer_test_page_through_the_agent(
    running, printers: dict[str, SimPrinter], capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge printer test kitchen`: a test page with name, profile, umlauts, €, a QR code and a cut; the status read is
    shown."""
    _, config = running
    code, out = await run_cli(capsys, "printer", "test", "kitchen", "--config", str(config))
    assert code == 0
    body = answer(out)
    assert (body["printer"], body["status"], body["printed"], body["confirmed"]) == ("kitchen", "online", True, True)
    page = decode((await printers["kitchen"].wait_for_printed(1))[0])
    assert "kitchen" in page.text and "Profil: default" in page.text and "ÄÖÜ ß €" in page.text
    assert page.qr_codes == ["edge:test:kitchen"] and page.cuts == 1

    printers["kitchen"].paper_out = True
    code, out = await run_cli(capsys, "printer", "test", "kitchen", "--config", str(config))
    assert code == 1 and answer(out)["status"] == "paper_out" and "paper out" in answer(out)["error"]
    code, out = await run_cli(capsys, "printer", "test", "nope", "--config", str(config))
    assert code == 1 and "not configured" in answer(out)["reason"]


async def held_tickets(
    agent: Agent, printers: dict[str, SimPrinter], example_order: dict, order_ids: list[str]
) -> None:
    """Kitchen tickets of these orders (numbers N-0, N-1, …), each held as stale: the printer was off longer than the
    stale age."""
    printers["kitchen"].set_offline(True)
    async with api_client(agent) as api:
        for n, order_id in enumerate(order_ids):
            order = asap(dict(example_order, id=order_id, number=f"N-{n}", print_receipt=False))
            assert (await post(api, order))[0] == 201
    assert isinstance(agent.clock, SteppedClock)
    await wait_until(lambda: agent.spoolers["kitchen"].state.value == "offline")  # the spool saw it off
    agent.clock.advance(61)  # the printer stays off longer than the stale age
    printers["kitchen"].set_offline(False)
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["held"] * len(order_ids))


async def test_held_jobs_listed_released_and_discarded_from_the_cli(
    running, printers: dict[str, SimPrinter], example_order: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge jobs --held` lists stale tickets; `edge release JOB` prints one, `edge discard JOB` drops the other,
    `edge release` without a job or --all is refused."""
    agent, config = running
    await held_tickets(agent, printers, example_order, [f"ord_{n}" for n in range(2)])

    code, out = await run_cli(capsys, "jobs", "--held", "--config", str(config))
    held = answer(out)["jobs"]
    assert code == 0 and sorted(j["order_id"] for j in held) == ["ord_0", "ord_1"]
    ids = {j["order_id"]: j["id"] for j in held}
    assert (await run_cli(capsys, "release", str(ids["ord_0"]), "--config", str(config)))[0] == 0
    assert (await run_cli(capsys, "discard", str(ids["ord_1"]), "--config", str(config)))[0] == 0
    await printers["kitchen"].wait_for_printed(1)
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["printed", "discarded"])
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["release", "--config", str(config)])
    said = capsys.readouterr().err
    assert code == 1 and "give a job id (see `edge jobs --held`) or --all" in said and "not both" not in said, said


async def test_preview_shows_an_orders_jobs_as_text(
    running, printers: dict[str, SimPrinter], example_order: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge preview A-1042` reads the database and shows the ticket and the receipt as they look on paper."""
    agent, config = running
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    code, out = await run_cli(capsys, "preview", "A-1042", "--config", str(config))
    assert code == 0
    assert "=== job 1: ticket kitchen on kitchen" in out and "=== job 2: receipt on front" in out
    assert "[QR edge:v1:ord_7f3a9c21:kitchen]" in out and "Summe" in out and "A - 1 0 4 2" in out
    code, _ = await run_cli(capsys, "preview", "no-such-order", "--config", str(config))
    assert code == 1


async def test_the_preview_of_a_printed_receipt_says_when_the_settings_that_shaped_its_paper_changed(
    tmp_path: Path, printers: dict[str, SimPrinter], example_order: dict
) -> None:
    """The receipt printed in German on 48 columns; then the store's language, name and the front printer's width
    changed, and the agent restarted. `edge preview` renders it again with today's settings; it now says that the
    paper was printed with other ones, and which (the kitchen ticket: only the language). Unchanged settings: no such
    line. Before stop 81 the preview showed `Total` under the new name at 32 columns without a word, while the
    guest's paper read `Summe` (the receipt80 probe, R6)."""
    agent = agent_process(tmp_path, printers)
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, example_order))[0] == 201
        assert "Summe" in decode((await printers["front"].wait_for_printed(1))[0]).text
        await printers["kitchen"].wait_for_printed(1)
        await agent.terminate()  # the printed marks recorded
        same = await edge("preview", "A-1042", "--config", str(agent.config))
        assert same.returncode == 0 and same.stdout.count(", printed ===") == 2, same.stdout
        assert "may differ" not in same.stdout, same.stdout
        text = agent.config.read_text()
        text = text.replace("[agent]\n", '[agent]\nlanguage = "en"\nstore_name = "Neuer Name GmbH"\n')
        text = text.replace("[printers.front]\n", "[printers.front]\nwidth = 32\n")
        ticket, receipt = await _preview_after(agent, lambda: agent.config.write_text(text))
    finally:
        await agent.close()
    assert "Total" in receipt and "Neuer Name GmbH" in receipt  # today's rendering, as before
    assert re.search(
        r"\(note: printed \d{4}-\d\d-\d\d \d\d:\d\d with other settings \(language de, 48 columns, another store"
        r" name, footer, template, logo, time zone or printer option\): the paper may differ from this preview\)",
        receipt,
    ), receipt
    assert "with other settings (language de): the paper may differ" in ticket, ticket


async def _preview_after(agent: AgentProcess, change: Callable[[], object]) -> tuple[str, str]:
    """``change`` made to the stopped agent's files, a start, and `edge preview` of A-1042: the kitchen ticket's part of
    its output and the receipt's."""
    change()
    await agent.start()
    done = await edge("preview", "A-1042", "--config", str(agent.config))
    assert done.returncode == 0, done.stderr
    ticket, receipt = done.stdout.split("=== job 2: receipt on front")
    return ticket, receipt


@pytest.mark.parametrize("change", ["template", "timezone"])
async def test_the_preview_says_the_paper_differs_after_a_template_edited_in_place_or_a_new_time_zone(
    tmp_path: Path, printers: dict[str, SimPrinter], example_order: dict, change: str
) -> None:
    """The kitchen ticket printed with the store's own ticket template; then the template file was edited in place (a
    new line), or `agent.timezone` changed, and the agent restarted. `edge preview` now shows the new line or another
    order time than the paper's: it says the paper was printed with other settings. Nothing changed: no such line.
    Before stop 81 the note hashed the template folder's path, not its files, and not the time zone: the preview
    showed a line the paper never had, or "Bestellt 08:14" for a ticket that read 13:14, without a word (the verify81
    probe, F4)."""
    templates = tmp_path / "templates"
    templates.mkdir()
    ticket_template = templates / "ticket.j2"
    ticket_template.write_text(
        (Path(edge_package.__file__).parent / "printing" / "templates" / "ticket.j2").read_text()
    )
    agent = agent_process(tmp_path, printers, extra=f'\n[printing]\ntemplate_dir = "{templates}"\n')
    try:
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, example_order))[0] == 201
        await printers["kitchen"].wait_for_printed(1)
        await printers["front"].wait_for_printed(1)
        await agent.terminate()  # the printed marks recorded
        await agent.start()  # a restart with nothing changed
        await agent.terminate()
        same = await edge("preview", "A-1042", "--config", str(agent.config))
        assert same.returncode == 0 and "may differ" not in same.stdout, same.stdout
        if change == "template":
            edit, text = ticket_template, ticket_template.read_text() + "NEU: Allergene beachten\n"
        else:
            edit, text = (
                agent.config,
                agent.config.read_text().replace("[agent]\n", '[agent]\ntimezone = "America/New_York"\n'),
            )
        ticket, _ = await _preview_after(agent, lambda: edit.write_text(text))
    finally:
        await agent.close()
    assert "with other settings (another store name, footer, template" in ticket, ticket


async def test_preview_writes_png_images(
    running, example_order: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`edge preview ORDER --png DIR`: one PNG per job, a paper strip as wide as the printer's columns, with ink on
    it."""
    agent, config = running
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    code, out = await run_cli(
        capsys, "preview", "ord_7f3a9c21", "--png", str(tmp_path / "png"), "--config", str(config)
    )
    assert code == 0 and "job-1.png" in out
    with Image.open(tmp_path / "png" / "job-1.png") as image:
        assert image.format == "PNG" and image.width == 48 * 10 + 24
        assert image.convert("L").getextrema() == (0, 255)  # black text on white paper
    assert (tmp_path / "png" / "job-2.png").is_file()


async def test_edge_jobs_held_lists_every_held_ticket_oldest_first_as_the_page_points_to(
    running,
    printers: dict[str, SimPrinter],
    example_order: dict,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 held: the page lists the oldest 50 and sends a person to `edge jobs --held` for the 150 more, which listed
    the newest 100: #51-#100 appeared nowhere, so none of them could be discarded one by one. It lists all 200,
    oldest first as the page does, and the page says so."""
    agent, config = running
    await held_tickets(agent, printers, example_order, [f"ord_{n:03d}" for n in range(200)])

    code, out = await run_cli(capsys, "jobs", "--held", "--config", str(config))
    assert code == 0
    assert [j["order_id"] for j in answer(out)["jobs"]] == [f"ord_{n:03d}" for n in range(200)]
    async with api_client(agent) as api, api.get("/api/v1/status/panel") as response:
        panel = await response.text()
    assert "… and 150 more, newer (<code>edge jobs --held</code> lists every held ticket, oldest first" in panel
    # More held than the command lists at once (1000; 120 here): the oldest, those after the page's 50 among them, and
    # a word on stderr. Before (newfeat probe F3), the newest: the page's 50 and these left a gap listed nowhere.
    monkeypatch.setattr("edge.cli._JOBS_LISTED", 120)
    code, out = await run_cli(capsys, "jobs", "--held", "--config", str(config))
    assert [j["order_id"] for j in answer(out)["jobs"]] == [f"ord_{n:03d}" for n in range(120)]


async def test_edge_reprint_takes_the_number_on_todays_ticket_and_an_older_orders_id_with_by_id(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A till whose integer ids meet its daily numbers: order id 57 (number 3) is two days old, today's ticket 57 is
    order 912. `edge reprint 57`, the cook with ticket 57 in hand: a COPY of today's 57. `edge reprint 57 --by-id`:
    the old order 57. Before: `edge reprint 57` gave the kitchen a COPY of the two-day-old order (number 3), and ticket
    57 was not reprinted."""
    agent = await ids_meet_numbers(make_agent)
    config = write_config(tmp_path, printers, port=agent.port or 0)
    code, out = await run_cli(capsys, "reprint", "57", "--config", str(config))
    assert (code, answer(out).get("order_id")) == (0, "912"), out
    copy = decode((await printers["kitchen"].wait_for_printed(6))[5])  # five originals, then this COPY
    assert "KOPIE / COPY" in copy.text and copy.qr_codes == ["edge:v1:912:kitchen"], copy.text
    code, out = await run_cli(capsys, "reprint", "57", "--by-id", "--config", str(config))
    assert (code, answer(out).get("order_id")) == (0, "57"), out
    copy = decode((await printers["kitchen"].wait_for_printed(7))[6])
    assert "KOPIE / COPY" in copy.text and copy.qr_codes == ["edge:v1:57:kitchen"], copy.text


async def test_edge_preview_shows_the_one_order_a_person_names_not_every_order_with_that_number_or_id(
    make_agent: Callable[..., Awaitable[Agent]],
    printers: dict[str, SimPrinter],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Order id 57 (number 3) is two days old, today's ticket 57 is order 912. `edge preview 57` shows today's ticket
    57 alone, as `edge reprint 57` copies it; `--by-id` the old order 57 alone. Before: the jobs of both orders one
    after the other (and of every order ever numbered 57, in a till whose numbers restart daily)."""
    agent = await ids_meet_numbers(make_agent)
    config = write_config(tmp_path, printers, port=agent.port or 0)
    assert agent.settings.agent.data_dir == tmp_path / "data"
    code, out = await run_cli(capsys, "preview", "57", "--config", str(config))
    assert code == 0 and "[QR edge:v1:912:kitchen]" in out and "edge:v1:57:" not in out, out
    assert out.count("=== job") == 1, out
    code, out = await run_cli(capsys, "preview", "57", "--by-id", "--config", str(config))
    assert code == 0 and "[QR edge:v1:57:kitchen]" in out and "edge:v1:912:" not in out, out


# The schema before rendered_with (022), pulse_lost (023): upgrade.sh's previous release in the upgrade82 probe.
_BEFORE_RENDERED_WITH = 21


async def _printed_then_stepped_down(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], example_order: dict, tmp_path: Path
) -> Path:
    """A-1042's receipt printed (its kitchen ticket waiting for the kitchen printer, off), the agent stopped and the
    database stepped down to schema 21 with `edge migrate --to 21` (upgrade.sh's rollback): its config file."""
    config = write_config(tmp_path, printers)
    printers["kitchen"].set_offline(True)
    agent = await make_agent(load_settings(config, environ={}))
    async with api_client(agent) as api:
        assert (await post(api, example_order))[0] == 201
    await printers["front"].wait_for_printed(1)
    await eventually(lambda: job_rows(agent), lambda rows: [r[0] for r in rows] == ["queued", "printed"])
    await agent.stop()
    down = await edge("migrate", "--to", str(_BEFORE_RENDERED_WITH), "--no-backup", "--config", str(config))
    assert down.returncode == 0, down.stderr
    return config


async def test_the_preview_of_a_database_at_an_older_schema_says_in_one_line_to_migrate_it(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], example_order: dict, tmp_path: Path
) -> None:
    """`edge preview` on a database still at an older schema (a pre-upgrade backup restored before the agent's start
    migrated it, or between upgrade.sh's install and migrate): one line as the doctor's, the version it is at, the one
    this agent expects and `edge migrate`, exit 2; migrated, the preview answers. Before stop 82 it said only `edge:
    database …/edge.db: no such column: e.pulse_lost`, exit 1 (the upgrade82 probe, F2)."""
    config = await _printed_then_stepped_down(make_agent, printers, example_order, tmp_path)
    latest = migrations.latest_version(migrations.load_migrations())
    refused = await edge("preview", "A-1042", "--config", str(config))
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout + refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "no such column" not in line, line
    assert f"schema version {_BEFORE_RENDERED_WITH}, this agent expects {latest}: run `edge migrate`" in line, line
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    shown = await edge("preview", "A-1042", "--config", str(config))
    assert shown.returncode == 0 and "=== job 2: receipt on front, printed ===" in shown.stdout, shown.stderr


async def test_the_preview_of_a_job_printed_before_a_step_down_and_back_up_says_its_settings_are_not_known(
    make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter], example_order: dict, tmp_path: Path
) -> None:
    """The receipt printed in German; then `edge migrate --to 21` (upgrade.sh's rollback) and the upgrade again, which
    leave no record of the settings that shaped it, and the store's language changed to English. `edge preview`
    renders it in English; it now says in one line that the settings it printed with are not known, so the paper may
    differ. The kitchen ticket, not printed yet, gets no such line. Before stop 82 the preview said nothing, while the
    guest's paper read `Summe` (the upgrade82 probe, F3)."""
    config = await _printed_then_stepped_down(make_agent, printers, example_order, tmp_path)
    assert (await edge("migrate", "--config", str(config))).returncode == 0
    config.write_text(config.read_text().replace("[agent]\n", '[agent]\nlanguage = "en"\n'))
    shown = await edge("preview", "A-1042", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    ticket, receipt = shown.stdout.split("=== job 2: receipt on front, printed ===")
    assert "Total" in receipt, receipt  # today's rendering, as before
    assert re.search(
        r"\(note: printed \d{4}-\d\d-\d\d \d\d:\d\d with settings not recorded \(by an earlier version, or before a"
        r" downgrade\): the paper may differ from this preview\)",
        receipt,
    ), receipt
    assert "=== job 1: ticket kitchen on kitchen, queued ===" in ticket and "note:" not in ticket, ticket


@pytest.mark.parametrize("change", ["printer added", "token rotated"])
async def test_a_command_refused_for_a_config_the_running_agent_has_not_read_says_to_restart_it(
    tmp_path: Path, printers: dict[str, SimPrinter], change: str
) -> None:
    """The technician adds a printer to the config (or rotates the API token) and tries it before restarting the
    agent: the agent still runs the config it started with, so it answers 404 "not configured" (or 401 "wrong
    token"). The command says so and how to take the change up. Before (the tech77 probe, F6 and F4): only "printer
    'bar2' is not configured" right after `edge config check` listed it, or "wrong token"."""
    agent = agent_process(tmp_path, printers)
    ports = {name: p.port for name, p in printers.items()}
    try:
        await agent.start()
        await asyncio.sleep(0.05)  # the file's change comes after the start, also by the clock's coarsest tick
        if change == "printer added":
            reconfigure(agent, tmp_path / "data", {**ports, "bar2": ports["kitchen"]})
        else:
            token = "a-new-token-" + "x" * 24
            write_agent_config(
                agent.config, data_dir=tmp_path / "data", api_port=agent.port, token=token, printers=ports
            )
        done = await edge(
            "printer", "test", "bar2" if change == "printer added" else "kitchen", "--config", str(agent.config)
        )
        assert done.returncode == 1, done.stdout
        assert "changed after the agent started" in done.stderr and "systemctl restart edge-agent" in done.stderr, (
            done.stderr
        )
    finally:
        await agent.close()


async def test_a_printer_the_config_never_had_is_not_blamed_on_a_restart(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A printer name mistyped: "not configured", and no word of a restart, also when the config was saved since the
    start (a comment changed: a restart would not make "kitchn" a printer). Before (the verify77 probe, V2): every 404
    after any edit of edge.toml said to restart the agent."""
    agent = agent_process(tmp_path, printers)
    try:
        await agent.start()
        await asyncio.sleep(0.05)  # the file's change comes after the start, also by the clock's coarsest tick
        reconfigure(agent, tmp_path / "data", {name: p.port for name, p in printers.items()})
        done = await edge("printer", "test", "kitchn", "--config", str(agent.config))
        assert done.returncode == 1 and "not configured" in done.stdout, done.stdout
        assert "restart" not in done.stderr, done.stderr
    finally:
        await agent.close()
