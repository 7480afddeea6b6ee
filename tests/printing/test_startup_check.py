"""The start-up printing check runs as a real process would meet it: a restart with the same inputs skips the renders
(python-escpos, Pillow and jinja2 are not even imported before READY, and are warmed after it), and any input changed
between two runs on the same data dir — a template, a logo's bytes, a profile — still stops the start with one line."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from edge.config import Settings, parse_settings
from edge.printing import check, labels
from edge.printing.layout import DEFAULT_OPTIONS
from edge.printing.render import Renderer
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from tests.helpers import EXAMPLE, agent_process, api_client, config_dict, fresh, imported_modules, post, wait_until

# Third-party packages only the renders need: none may load before READY when the cache says "passed". Nor may
# pyserial and pyusb with network printers only (python-escpos' printer classes load them after READY).
_RENDER_PACKAGES = ("escpos", "PIL", "jinja2", "qrcode", "barcode")
_DEVICE_PACKAGES = ("serial", "usb")


def _agent(
    tmp_path: Path, printers: dict[str, SimPrinter], *, logo: Path | None = None, import_log: bool = False
) -> AgentProcess:
    """The agent with operator templates in tmp_path/templates, info logs and, if given, a logo on the receipt printer;
    ``import_log``: Python's import log on stderr (the same file as the agent's log lines, in order; its starts exec
    Python, as only a fresh interpreter writes it)."""
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    agent = agent_process(
        tmp_path,
        printers,
        env={"PYTHONPROFILEIMPORTTIME": "1"} if import_log else None,
        log_level="info",
        extra=f'\n[printing]\ntemplate_dir = "{templates}"\n',
    )
    if logo is not None:
        text = agent.config.read_text(encoding="utf-8")
        agent.config.write_text(text.replace("[printers.front]\n", f'[printers.front]\nlogo = "{logo}"\n'), "utf-8")
    return agent


async def _start_and_stop(agent: AgentProcess) -> str:
    """One good run: READY, then a clean stop. Returns what this run wrote to the log."""
    before = agent.log.stat().st_size if agent.log.exists() else 0
    await agent.start()
    assert await agent.terminate() == 0
    return agent.log.read_bytes()[before:].decode(errors="replace")


async def _refused(agent: AgentProcess) -> list[str]:
    """A start that must fail: exit code 2 and the lines this run wrote that are not Python's import log."""
    before = agent.log.stat().st_size if agent.log.exists() else 0
    with pytest.raises(RuntimeError, match="agent exited with 2"):
        await agent.start()
    text = agent.log.read_bytes()[before:].decode(errors="replace")
    return [line for line in text.splitlines() if not line.startswith("import time:")]


def _before_ready(log: str) -> str:
    return log[: log.index('"agent_ready"')]


def _surely_before_ready(log: str) -> str:
    """What was written before READY, less the import lines after the last log line before "agent_ready": the agent's
    log lines are written by a thread of their own (edge/log.py), Python's import log at once, so the warm-up's
    imports right after READY can come before the READY line in the file (one loaded CI run). Those just before it
    may be either; all earlier ones are surely from before READY."""
    before = _before_ready(log)
    before = before[: before.rfind("\n{") + 1]  # up to the READY line
    return before[: before.find("\n", before.rfind("\n{") + 1) + 1]  # up to the end of the log line before it


def _render_imports(text: str, packages: tuple[str, ...] = _RENDER_PACKAGES) -> list[str]:
    return [name for name in imported_modules(text) if name.split(".")[0] in packages]


async def test_restart_with_nothing_changed_does_not_render_before_ready(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The first start renders every template and each printer's options before READY (python-escpos is imported then);
    a restart with the same inputs imports none of python-escpos, Pillow, jinja2, qrcode or python-barcode before READY,
    and loads them right after READY in the background (warm-up). With network printers only, pyserial and pyusb do not
    load before READY either."""
    logo = tmp_path / "logo.png"
    Image.new("L", (200, 50), 0).save(logo)
    agent = _agent(tmp_path, printers, logo=logo, import_log=True)
    try:
        first = await _start_and_stop(agent)
        assert "escpos.printer" in _render_imports(_before_ready(first))
        before = agent.log.stat().st_size
        await agent.start()

        def since_start() -> str:
            return agent.log.read_bytes()[before:].decode(errors="replace")

        assert _render_imports(_surely_before_ready(since_start()), _RENDER_PACKAGES + _DEVICE_PACKAGES) == []
        await wait_until(lambda: '"printing_warmed"' in since_start(), what="the warm-up after READY")
        after_ready = since_start()[since_start().index('"agent_ready"') :]
        assert "escpos.printer" in _render_imports(after_ready)
        assert await agent.terminate() == 0
    finally:
        await agent.close()


async def test_template_broken_after_a_good_start_stops_the_next_start(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """An operator template that fails when it renders, put in place after a good start, stops the next start with one
    readable line naming printing.template_dir and the template (exit 2), although nothing else changed."""
    agent = _agent(tmp_path, printers)
    try:
        await _start_and_stop(agent)
        (tmp_path / "templates" / "receipt.j2").write_text("{{ order.totals.nothing }}\n", encoding="utf-8")
        lines = await _refused(agent)
        assert len(lines) == 1 and lines[0].startswith("edge: config printing.template_dir: receipt.j2: "), lines
        assert "nothing" in lines[0]
    finally:
        await agent.close()


@pytest.mark.parametrize(("language", "starts"), [("en", False), ("de", True)])
async def test_a_template_that_fails_only_in_english_stops_an_english_store_not_a_german_one(
    tmp_path: Path, printers: dict[str, SimPrinter], language: str, starts: bool
) -> None:
    """The check renders the templates in the language the store prints in: an override whose English branch fails
    stops an English store's start (exit 2, one line) instead of failing every ticket after it (before: the check
    rendered German only); a German store, which never prints that branch, starts as it did."""
    agent = _agent(tmp_path, printers)
    try:
        text = agent.config.read_text(encoding="utf-8")
        agent.config.write_text(text.replace("[agent]\n", f'[agent]\nlanguage = "{language}"\n', 1), "utf-8")
        (tmp_path / "templates" / "ticket.j2").write_text(
            '{% if language == "en" %}{{ order.nmber }}{% else %}{{ order.number }}{% endif %}\n', encoding="utf-8"
        )
        if starts:
            await _start_and_stop(agent)
            return
        lines = await _refused(agent)
        assert len(lines) == 1 and lines[0].startswith("edge: config printing.template_dir: ticket.j2: "), lines
        assert "nmber" in lines[0]
    finally:
        await agent.close()


@pytest.mark.parametrize(
    ("template", "text", "field"),
    [
        ("ticket.j2", "{{ order.number }} {{ order.customer.name }}\n", "name"),
        ("ticket.j2", "{{ order.number }} {{ order.fulfilment.due_at.strftime('%H:%M') }}\n", "strftime"),
        ("receipt.j2", "{{ order.number }} {{ order.payment.method }}\n", "method"),
    ],
)
async def test_a_template_that_fails_for_an_order_without_an_optional_field_stops_the_start(
    tmp_path: Path, printers: dict[str, SimPrinter], template: str, text: str, field: str
) -> None:
    """An operator template that reads an optional field as if every order had it (the customer's name, the due time,
    the payment) stops the start with one line naming the template, instead of passing the check (whose sample order
    has them all) and then killing the ticket of the first order without it (before: started; a phone order with no
    customer was rendered five times, failed each time and was dead, never printed)."""
    agent = _agent(tmp_path, printers)
    try:
        (tmp_path / "templates" / template).write_text(text, encoding="utf-8")
        lines = await _refused(agent)
        assert len(lines) == 1 and lines[0].startswith(f"edge: config printing.template_dir: {template}: "), lines
        assert field in lines[0] and "line 1" in lines[0], lines
    finally:
        await agent.close()


async def test_logo_replaced_by_garbage_after_a_good_start_stops_the_next_start(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The logo file overwritten with bytes that are no image (same path, same config) stops the next start with one
    line naming the printer (exit 2)."""
    logo = tmp_path / "logo.png"
    Image.new("L", (200, 50), 0).save(logo)
    agent = _agent(tmp_path, printers, logo=logo)
    try:
        await _start_and_stop(agent)
        logo.write_bytes(b"not an image at all")
        lines = await _refused(agent)
        assert len(lines) == 1 and lines[0].startswith(
            "edge: config printers.front: cannot print with these options"
        ), lines
    finally:
        await agent.close()


async def test_unknown_profile_after_a_good_start_stops_the_next_start(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A printer's profile changed to one python-escpos does not know stops the next start with one line naming
    printers.front.profile (exit 2)."""
    agent = _agent(tmp_path, printers)
    try:
        await _start_and_stop(agent)
        text = agent.config.read_text(encoding="utf-8")
        agent.config.write_text(
            text.replace("[printers.front]\n", '[printers.front]\nprofile = "NO-SUCH-1"\n'), "utf-8"
        )
        lines = await _refused(agent)
        assert len(lines) == 1 and lines[0].startswith(
            "edge: config printers.front.profile: unknown python-escpos profile"
        )
    finally:
        await agent.close()


async def _claim_passed(agent: AgentProcess, cache: Path) -> None:
    """Records the agent's present inputs as passed, as a fingerprint blind to a change would; computed by the same
    interpreter in a process of its own (its sys.path is the agent's, not pytest's)."""
    program = (
        "import sys; from pathlib import Path; from edge.config import load_settings; "
        "from edge.printing.check import fingerprint; print(fingerprint(load_settings(Path(sys.argv[1]))))"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", program, str(agent.config), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    (cache / check.CACHE_FILE).write_text(out.decode().strip(), encoding="ascii")


async def test_a_check_that_fails_after_ready_drops_the_cache_and_the_next_start_stops(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The last line of defence: a cached start whose check then fails after READY (an input the fingerprint missed)
    logs it as an error and drops the cache, so the next start checks before READY and stops with the one line."""
    agent = _agent(tmp_path, printers)
    cache = tmp_path / "data" / "cache"
    try:
        await _start_and_stop(agent)
        (tmp_path / "templates" / "receipt.j2").write_text("{{ order.totals.nothing }}\n", encoding="utf-8")
        await _claim_passed(agent, cache)
        before = agent.log.stat().st_size
        await agent.start()
        await wait_until(
            lambda: '"printing_check_failed_after_ready"' in agent.log.read_bytes()[before:].decode(errors="replace"),
            what="the failed check after READY in the log",
        )
        assert not (cache / check.CACHE_FILE).exists()
        assert await agent.terminate() == 0
        lines = await _refused(agent)
        assert len(lines) == 1 and lines[0].startswith("edge: config printing.template_dir: receipt.j2: "), lines
    finally:
        await agent.close()


async def test_a_damaged_or_unwritable_cache_only_means_checking_again(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A cache file full of garbage, or a cache folder that cannot be written (a file in its place), does not stop a
    start: the check simply runs before READY again (its templates compiled before READY), at every start."""
    agent = _agent(tmp_path, printers, import_log=True)
    try:
        await _start_and_stop(agent)
        cache = tmp_path / "data" / "cache"
        for path in cache.iterdir():
            if path.name.startswith("printing-check"):
                path.write_bytes(b"\x00garbage")
        damaged = await _start_and_stop(agent)
        assert "jinja2" in _render_imports(_before_ready(damaged))
        shutil.rmtree(cache)
        cache.write_bytes(b"")  # a file where the folder should be: nothing can be written in it, not even by root
        unwritable = await _start_and_stop(agent)
        assert "jinja2" in _render_imports(_before_ready(unwritable))
        again = await _start_and_stop(agent)
        assert "jinja2" in _render_imports(_before_ready(again))
    finally:
        await agent.close()


async def test_the_first_ticket_after_a_cached_start_prints(tmp_path: Path, printers: dict[str, SimPrinter]) -> None:
    """After a restart that skipped the renders, an order pushed at once (before the warm-up may have finished) still
    prints its kitchen ticket."""
    agent = _agent(tmp_path, printers)
    try:
        await _start_and_stop(agent)
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, fresh(EXAMPLE)))[0] == 201
        await asyncio.wait_for(printers["kitchen"].wait_for_printed(1), 10)
        assert await agent.terminate() == 0
    finally:
        await agent.close()


async def test_a_template_edited_between_runs_is_what_prints_and_a_damaged_template_cache_is_ignored(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """Compiled templates are kept in data/cache/templates across starts; an operator's ticket.j2 edited between two
    runs is what the next ticket shows (never the compiled old one), and cache files full of garbage are recompiled,
    not a reason to stop."""
    agent = _agent(tmp_path, printers)
    ticket = tmp_path / "templates" / "ticket.j2"
    ticket.write_text("FIRST {{ order.number }}\n{{ cut }}\n", encoding="utf-8")
    try:
        await _start_and_stop(agent)
        compiled = list((tmp_path / "data" / "cache" / "templates").iterdir())
        assert compiled, "no compiled templates were kept"
        ticket.write_text("SECOND {{ order.number }}\n{{ cut }}\n", encoding="utf-8")
        for path in compiled:
            path.write_bytes(b"\x00garbage")
        await agent.start()
        async with api_client(agent.port) as api:
            assert (await post(api, fresh(EXAMPLE)))[0] == 201
        (printed,) = await printers["kitchen"].wait_for_printed(1)
        assert b"SECOND A-1042" in printed and b"FIRST" not in printed
        assert await agent.terminate() == 0
    finally:
        await agent.close()


def _fingerprint_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Settings], dict[str, Any]]:
    """Settings (in a one-item list, replaced by a change) with a template folder, a logo and a capabilities file, the
    agent's code tree and a site folder as copies in tmp_path, and one way per input to change it."""
    code, site, templates = tmp_path / "edge", tmp_path / "site", tmp_path / "templates"
    for folder in (code / "printing", site, templates):
        folder.mkdir(parents=True)
    (code / "__init__.py").write_text("", encoding="utf-8")
    (code / "printing" / "layout.py").write_text("WIDTH = 48\n", encoding="utf-8")
    (site / "python_escpos-3.1.dist-info").mkdir()
    (templates / "ticket.j2").write_text("{{ order.number }}\n", encoding="utf-8")
    logo, capabilities = tmp_path / "logo.png", tmp_path / "capabilities.json"
    Image.new("L", (20, 20), 0).save(logo)
    capabilities.write_text("{}", encoding="utf-8")
    monkeypatch.setattr(check, "edge", types.SimpleNamespace(__file__=str(code / "__init__.py")))
    monkeypatch.setattr(sys, "path", [str(site)])
    monkeypatch.setenv("ESCPOS_CAPABILITIES_FILE", str(capabilities))
    ports: Any = {name: types.SimpleNamespace(port=9100) for name in ("kitchen", "front")}
    raw = config_dict(tmp_path / "data", ports)
    raw["printing"] = {"template_dir": str(templates)}
    raw["printers"]["front"]["logo"] = str(logo)
    current = [parse_settings(raw, source="test")]
    settings = current[0]
    front = settings.printers["front"]

    def touch_code() -> None:  # an edit of the same size: only the modification time tells
        path = code / "printing" / "layout.py"
        mtime = path.stat().st_mtime_ns
        path.write_text("WIDTH = 42\n", encoding="utf-8")
        os.utime(path, ns=(mtime, mtime + 1_000_000))

    changes: dict[str, Any] = {
        "template bytes": lambda: (templates / "ticket.j2").write_text("{{ order.id }}\n", encoding="utf-8"),
        "new template": lambda: (templates / "receipt.j2").write_text("x\n", encoding="utf-8"),
        "logo bytes": lambda: logo.write_bytes(b"garbage"),
        "code": touch_code,
        "distribution upgraded": lambda: (site / "python_escpos-3.1.dist-info").rename(
            site / "python_escpos-3.2.dist-info"
        ),
        "capabilities file": lambda: capabilities.write_text('{"profiles": {}}', encoding="utf-8"),
        "python": lambda: monkeypatch.setattr(sys, "version", sys.version + "+"),
    }
    for name, agent in {
        "language": dataclasses.replace(settings.agent, language="en"),
        "timezone": dataclasses.replace(settings.agent, timezone="Europe/Berlin"),
    }.items():
        changes[name] = lambda agent=agent: current.__setitem__(0, dataclasses.replace(settings, agent=agent))
    for name, printer in {
        "profile": dataclasses.replace(front, profile="TM-T88V"),
        "width": dataclasses.replace(front, width=42),
        "cut": dataclasses.replace(front, cut="partial"),
        "codepage": dataclasses.replace(front, codepage="cp437"),
        "logo path": dataclasses.replace(front, logo=tmp_path / "other.png"),
    }.items():
        printers = {**settings.printers, "front": printer}
        changes[name] = lambda printers=printers: current.__setitem__(
            0, dataclasses.replace(settings, printers=printers)
        )
    return current, changes


@pytest.mark.parametrize(
    "change",
    [
        "template bytes",
        "new template",
        "logo bytes",
        "code",
        "distribution upgraded",
        "capabilities file",
        "python",
        "language",
        "timezone",
        "profile",
        "width",
        "cut",
        "codepage",
        "logo path",
    ],
)
def test_every_input_of_the_check_changes_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The same inputs give the same fingerprint twice; changing any one input of the start-up check gives another."""
    settings, changes = _fingerprint_inputs(tmp_path, monkeypatch)
    before = check.fingerprint(settings[0])
    assert check.fingerprint(settings[0]) == before
    changes[change]()
    assert check.fingerprint(settings[0]) != before


def test_a_template_saved_during_the_check_is_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's template saved in the instant between the fingerprint and the renders: what passed is not what
    was fingerprinted, so nothing is cached and the next start checks before READY again."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "ticket.j2").write_text("{{ order.number }}\n", encoding="utf-8")
    ports: Any = {name: types.SimpleNamespace(port=9100) for name in ("kitchen", "front")}
    raw = config_dict(tmp_path / "data", ports, printing={"template_dir": str(templates)})
    settings = parse_settings(raw, source="test")
    checked = check.PrintingCheck._check

    def saved_meanwhile(self: check.PrintingCheck) -> Renderer:
        (templates / "ticket.j2").write_text("{{ order.id }}\n", encoding="utf-8")
        return checked(self)

    monkeypatch.setattr(check.PrintingCheck, "_check", saved_meanwhile)
    cache = tmp_path / "data" / "cache"
    check.PrintingCheck(settings, cache_dir=cache).remember()
    assert not (cache / check.CACHE_FILE).exists()
    monkeypatch.setattr(check.PrintingCheck, "_check", checked)
    check.PrintingCheck(settings, cache_dir=cache).remember()
    assert check.PrintingCheck(settings, cache_dir=cache).cached  # and without the change, it is


def test_an_agent_made_again_in_the_same_process_takes_the_checked_renderer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second agent in one process with the same printing inputs (another data dir) does not render every template
    again: it takes the renderer that passed. Other inputs are checked as ever."""
    # What other tests in this worker's process checked is not this test's (an agent in English, say: CI's run once)
    monkeypatch.setattr(check, "_PASSED", {})
    ports: Any = {name: types.SimpleNamespace(port=9100) for name in ("kitchen", "front")}
    first = check.PrintingCheck(parse_settings(config_dict(tmp_path / "a", ports), source="test"), cache_dir=None)
    renders: list[str] = []
    checked = check.PrintingCheck._check

    def counted(self: check.PrintingCheck) -> Renderer:
        renders.append(self._settings.agent.language)
        return checked(self)

    monkeypatch.setattr(check.PrintingCheck, "_check", counted)
    again = check.PrintingCheck(parse_settings(config_dict(tmp_path / "b", ports), source="test"), cache_dir=None)
    assert again.renderer() is first.renderer() and renders == []
    english = parse_settings(config_dict(tmp_path / "c", ports, agent={"language": "en"}), source="test")
    assert check.PrintingCheck(english, cache_dir=None).renderer() is not first.renderer() and renders == ["en"]


def _built_in(tmp_path: Path, printers: dict[str, SimPrinter], *, front: str = "") -> AgentProcess:
    """The agent with the built-in templates and no logo (nothing printed that the store supplied), info logs and
    Python's import log; ``front``: more lines for the receipt printer's section."""
    agent = agent_process(tmp_path, printers, env={"PYTHONPROFILEIMPORTTIME": "1"}, log_level="info")
    text = agent.config.read_text(encoding="utf-8")
    agent.config.write_text(text.replace("[printers.front]\n", f"[printers.front]\n{front}"), "utf-8")
    return agent


async def test_a_first_start_with_the_built_in_templates_renders_them_after_ready_and_prints_at_once(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """A box's very first start (no cache) with the built-in templates and no logo does not import jinja2 before READY
    (the built-in templates are the agent's own, rendered by its tests in every language): it renders them right after
    READY, an order pushed at once prints, and the check's verdict is cached then, for the next start."""
    agent = _built_in(tmp_path, printers)
    try:
        await agent.start()
        log = agent.log.read_bytes().decode(errors="replace")
        assert _render_imports(_surely_before_ready(log)) == []
        async with api_client(agent.port) as api:
            assert (await post(api, fresh(EXAMPLE)))[0] == 201
        await asyncio.wait_for(printers["kitchen"].wait_for_printed(1), 10)
        await wait_until(lambda: '"printing_warmed"' in agent.log.read_text(errors="replace"), what="the warm-up")
        assert await agent.terminate() == 0
        assert (tmp_path / "data" / "cache" / check.CACHE_FILE).exists()
        again = await _start_and_stop(agent)
        assert '"result": "cached"' in again
    finally:
        await agent.close()


@pytest.mark.parametrize(
    ("front", "setting", "says"),
    [
        ('profile = "NO-SUCH-1"\n', "printers.front.profile", "unknown python-escpos profile"),
        ('profile = "TM-U220"\ncodepage = "cp1252"\n', "printers.front", "has no code page CP1252"),
    ],
)
async def test_a_first_start_with_the_built_in_templates_still_stops_before_ready_on_a_printer_setting(
    tmp_path: Path, printers: dict[str, SimPrinter], front: str, setting: str, says: str
) -> None:
    """Deferring the built-in templates' render does not defer the printer's own settings: an unknown profile, or a
    code page the profile lacks, stops the first start with one line naming the setting (exit 2)."""
    agent = _built_in(tmp_path, printers, front=front)
    try:
        lines = await _refused(agent)
        assert len(lines) == 1 and lines[0].startswith(f"edge: config {setting}"), lines
        assert says in lines[0], lines
    finally:
        await agent.close()


@pytest.mark.parametrize("language", sorted(labels.LABELS))
def test_the_built_in_templates_pass_the_check_in_every_language_at_every_width(language: str) -> None:
    """What a first start with the built-in templates leaves for after READY (every template rendered, each printer's
    options tried) passes in each language the agent speaks, from the narrowest paper the config allows to the
    widest: that render is the agent's own, not the store's."""
    renderer = Renderer(language=language)  # renders every template once, in that language
    for width in (24, 25, 32, 42, 48, 63, 64):
        renderer.check_options("front", DEFAULT_OPTIONS, width=width)
