"""`edge health --alert` (the health-check timer) mails "agent down" by the alert rules: a storm guard per agent,
durations that survive clock steps, and no mail sent again every minute when its state cannot be written."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.api.client import call_agent
from edge.clock import Clock, SteppedClock, shown_at
from edge.config import Settings
from edge.ops.health import health
from edge.sim.printer import SimPrinter
from edge.sim.smtp import SmtpSink
from tests.alerts.conftest import SMTP_PASSWORD, FakeClock
from tests.alerts.helpers import WRONG, login_settings, restarted, two_alarms, with_password
from tests.helpers import agent_process, edge
from tests.printing.conftest import YEARS_56

# Not ready for a reason the agent does not alert about itself.
DOWN = (503, {"ready": False, "checks": {"migrations_current": {"ok": False, "detail": "schema 15, agent expects 16"}}})
UP = (200, {"ready": True, "checks": {}})


class FakeAgent:
    """Answers GET /ready like the agent would, down or up as the test says (the real agent's /ready is tested in
    tests/appliance)."""

    def __init__(self) -> None:
        self.answer = DOWN

    async def __call__(self, settings: Settings, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert (method, path) == ("GET", "/ready")
        return self.answer


@pytest.fixture
async def plain_sink() -> Any:
    sink = SmtpSink()
    await sink.start()
    yield sink
    await sink.stop()


def mail_settings(make_settings: Callable[..., Settings], sink: SmtpSink, **alerts: Any) -> Settings:
    settings = make_settings(
        smtp={"host": "127.0.0.1", "port": sink.port, "security": "none", "sender": "edge@store.test"},
        alerts={"to": ["chef@store.test"], **alerts},
        agent={"language": "en"},
    )
    settings.agent.data_dir.mkdir(parents=True, exist_ok=True)  # as the agent (or install) leaves it
    return settings


def subjects(sink: SmtpSink) -> list[str]:
    return [str(m["Subject"]).split("] ", 1)[1] for m in sink.messages]


async def test_flapping_agent_gets_one_alert_then_the_storm_guard(
    make_settings: Callable[..., Settings], plain_sink: SmtpSink
) -> None:
    """An agent that keeps falling over is mailed down once and back once; its next outages within the storm window
    are not mailed one by one; if it is still down when the window ends, one mail says so with the count."""
    settings = mail_settings(make_settings, plain_sink)
    agent, clock = FakeAgent(), SteppedClock()

    async def minute(answer: tuple[int, Any]) -> None:
        agent.answer = answer
        await health(settings, agent, alert=True, clock=clock)
        clock.advance(60)

    for _ in range(4):  # down two minutes, up one, four times
        await minute(DOWN)
        await minute(DOWN)
        await minute(UP)
    assert subjects(plain_sink) == ["ALERT: edge agent is not running", "RESOLVED: edge agent is back"]
    for _ in range(60):  # and now it stays down for an hour
        await minute(DOWN)
    assert subjects(plain_sink)[2:] == ["ALERT: edge agent is not running"]
    # since the RESOLVED mail: three short outages and this one
    assert "Down 4 more times since the last mail" in plain_sink.messages[2].get_body(("plain",)).get_content()


async def test_clock_step_does_not_stretch_the_storm_guard(
    make_settings: Callable[..., Settings], plain_sink: SmtpSink
) -> None:
    """The storm window is measured on the monotonic clock: stepping the wall clock back 8 h does not keep a
    still-down agent from being mailed when the hour is over."""
    settings = mail_settings(make_settings, plain_sink)
    agent, clock = FakeAgent(), SteppedClock()
    for answer in (DOWN, DOWN, UP, DOWN, DOWN):
        agent.answer = answer
        await health(settings, agent, alert=True, clock=clock)
        clock.advance(60)
    assert len(plain_sink.messages) == 2
    clock.step(-8 * 3600)
    clock.advance(3600)
    agent.answer = DOWN
    await health(settings, agent, alert=True, clock=clock)
    assert subjects(plain_sink)[2:] == ["ALERT: edge agent is not running"]


@pytest.fixture
def read_only_data_dir(tmp_path: Path) -> Iterator[Path]:
    """The data directory on a read-only mount (a bind mount, read-only even for root); skipped where mounting is
    not allowed."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "health-state.json").write_text(json.dumps({"failures": 1, "alerted": False, "since": 1.0}))
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount the data directory read-only")
    for args in (["--bind", str(data), str(data)], ["-o", "remount,ro,bind", str(data)]):
        if subprocess.run(["mount", *args], capture_output=True, timeout=10).returncode != 0:
            subprocess.run(["umount", str(data)], capture_output=True, timeout=10)
            pytest.skip("mount not allowed here")
    yield data
    subprocess.run(["umount", str(data)], capture_output=True, timeout=10)


async def test_unwritable_state_does_not_mail_every_minute(
    make_settings: Callable[..., Settings],
    plain_sink: SmtpSink,
    read_only_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the data directory read-only (its health state stuck at one failure), the timer's runs mail the manager
    once, not at every run: the state goes to the runtime directory instead."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    settings = mail_settings(make_settings, plain_sink)
    agent, clock = FakeAgent(), SteppedClock()
    for _ in range(5):
        try:
            await health(settings, agent, alert=True, clock=clock)
        except OSError:
            pass  # the old code: the state write fails after the mail went
        clock.advance(60)
    assert subjects(plain_sink) == ["ALERT: edge agent is not running"]


async def test_a_database_the_agent_alerts_about_itself_is_not_mailed_again_a_locked_one_is(
    make_settings: Callable[..., Settings], plain_sink: SmtpSink
) -> None:
    """Not ready only because its database takes no writes, with the agent's own storage alert named in the check (a
    full disk, a read-only card): the timer mails nothing beside that alert. Locked by another program (no alert of
    the agent's says so): the timer mails, as for any other reason."""
    settings = mail_settings(make_settings, plain_sink)
    agent, clock = FakeAgent(), SteppedClock()
    full = {"ok": False, "detail": "database edge.db: cannot write: disk full", "alert": "storage_problem"}
    locked = {"ok": False, "detail": "database edge.db: database is locked"}
    for check in (full, locked):
        agent.answer = (503, {"ready": False, "checks": {"database_writable": check}})
        for _ in range(3):
            healthy, reason = await health(settings, agent, alert=True, clock=clock)
            assert not healthy and check["detail"] in reason
            clock.advance(60)
        if check is full:
            assert plain_sink.messages == []
    assert subjects(plain_sink) == ["ALERT: edge agent is not running"]


@pytest.mark.parametrize("left", ["", '{"failures": 1, "alerted": tr', "\x00" * 40, "[1]"])
async def test_a_torn_health_state_is_a_fresh_one(
    make_settings: Callable[..., Settings], plain_sink: SmtpSink, left: str
) -> None:
    """The state file as an older agent's in-place write could leave it after a power cut (empty, cut short, zeros,
    not an object): read as no state, so the timer goes on (two failures, then the mail) instead of stopping."""
    settings = mail_settings(make_settings, plain_sink)
    await asyncio.to_thread((settings.agent.data_dir / "health-state.json").write_text, left)
    agent, clock = FakeAgent(), SteppedClock()
    for _ in range(2):
        await health(settings, agent, alert=True, clock=clock)
        clock.advance(60)
    assert subjects(plain_sink) == ["ALERT: edge agent is not running"]


async def test_the_timer_on_a_healthy_agent_writes_nothing_to_the_card(
    tmp_path: Path, printers: dict[str, SimPrinter], plain_sink: SmtpSink
) -> None:
    """The health-check timer runs `edge health --alert` every minute. Against a running, healthy agent it rewrote its
    state (a temporary file, two fsyncs, a rename) at every run though nothing changed: 1,440 times a day on the SD
    card. It writes only when the state changes: after a failure, and once when the agent is back."""
    mail = (
        f'[smtp]\nhost = "127.0.0.1"\nport = {plain_sink.port}\nsecurity = "none"\nsender = "edge@store.test"\n\n'
        '[alerts]\nto = ["chef@store.test"]\n'
    )
    agent = agent_process(tmp_path, printers, extra=mail)
    state = tmp_path / "data" / "health-state.json"
    state.parent.mkdir()  # as the install leaves it

    async def timer_run() -> tuple[str, tuple[int, int] | None]:
        done = await edge("health", "--alert", "--config", str(agent.config), env={"EDGE_AGENT_LANGUAGE": "en"})
        found = await asyncio.to_thread(lambda: state.stat() if state.exists() else None)
        return done.stdout.split()[0].rstrip(":"), None if found is None else (found.st_ino, found.st_mtime_ns)

    assert (await timer_run())[0] == "UNHEALTHY"  # not started yet: a failure is state
    failed = (await timer_run())[1]
    assert failed is not None
    await agent.start()
    try:
        outcome, back = await timer_run()
        assert outcome == "healthy" and back != failed  # back: the count of failures goes
        for _ in range(3):
            assert await timer_run() == ("healthy", back), "a healthy run rewrote the health state"
    finally:
        await agent.close()
    assert [str(m["Subject"]).split("] ", 1)[1] for m in plain_sink.messages] == [
        "ALERT: edge agent is not running",
        "RESOLVED: edge agent is back",
    ]


async def timer_run(settings: Settings, clock: Clock) -> None:
    """One run of the health timer on a box whose agent is not running: its API does not answer."""
    healthy, reason = await health(settings, call_agent, alert=True, clock=clock)
    assert not healthy and "is the agent running?" in reason, reason


async def test_the_health_timer_does_not_log_in_again_for_an_hour_after_the_relay_refused_the_password(
    login_relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """Issue 16: the store's mail password was changed at the provider, and the agent is down. The timer's second run
    mails "not running" and the relay refuses the login for good (535 5.7.8). Before: the next run, a minute later,
    logged in again with the same password, and so every minute the agent stayed down, toward the provider's lockout
    (Microsoft 365 after 10) or fail2ban's ban (after 5), which then stopped the agent's own alerts too once it was
    back. Now one login in the hour, the mail still owed: tried again once the hour is over, and at once with a new
    password in the settings, with which it goes."""
    settings = login_settings(make_settings, login_relay, WRONG)
    settings.agent.data_dir.mkdir(parents=True, exist_ok=True)  # as the agent (or install) leaves it
    for minute in range(61):
        await timer_run(settings, clock)
        assert login_relay.logins == (minute >= 1), f"the run at minute {minute} logged in: {login_relay.logins} logins"
        clock.advance(60)
    await timer_run(settings, clock)
    assert login_relay.logins == 2, "not tried again an hour after the refusal"
    clock.advance(60)
    await timer_run(with_password(settings, SMTP_PASSWORD), clock)
    assert login_relay.logins == 3 and login_relay.failed_logins == 2
    assert subjects(login_relay) == ["STÖRUNG: Edge-Agent läuft nicht"]
    assert WRONG not in (settings.agent.data_dir / "health-state.json").read_text()


@pytest.mark.parametrize("damage", [{"salt": "not hex"}, {"salt": "abc"}, {"until": float("nan")}, {"until": "soon"}])
async def test_a_damaged_rest_in_the_health_state_is_no_rest_and_the_timer_goes_on(
    login_relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock, damage: dict[str, Any]
) -> None:
    """The rest in health-state.json damaged (a hand edit, a card's fault): the timer neither crashes at every run nor
    rests for ever. Before: a salt that is not hex raised ValueError at every run until the rest's end (no "agent
    down" mail could go), and an end of NaN never ended. Now such a rest counts as none: the next mail logs in."""
    settings = login_settings(make_settings, login_relay, WRONG)
    settings.agent.data_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # two failed checks in a row: the mail, refused, and the rest written
        await timer_run(settings, clock)
        clock.advance(60)
    path = settings.agent.data_dir / "health-state.json"
    state = json.loads(path.read_text())
    assert state["login_rest"], state
    state["login_rest"] |= damage
    state["alerted"] = False  # the mail is due again at the next run
    path.write_text(json.dumps(state))
    await timer_run(settings, clock)
    assert login_relay.logins == 2, "a damaged rest was kept"


async def test_the_health_timers_rest_is_no_longer_than_an_hour_whatever_the_wall_clock_did(
    login_relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """NTP sets a box that booted 8 h ahead right after the refusal: the rest, kept as a wall time, would seem to end
    9 h later. It ends an hour after the first run that saw the clock set back."""
    settings = login_settings(make_settings, login_relay, WRONG)
    settings.agent.data_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # two failed checks in a row: the mail, refused
        await timer_run(settings, clock)
        clock.advance(60)
    clock.step(-8 * 3600)
    for _ in range(60):
        await timer_run(settings, clock)
        clock.advance(60)
    assert login_relay.logins == 1, "tried within the hour after the clock was set back"
    await timer_run(settings, clock)
    assert login_relay.logins == 2, "not tried an hour after the clock was set back"


@pytest.mark.parametrize("end", ["stopped", "killed"])
async def test_the_health_timer_keeps_the_rest_the_agent_began_before_it_went_down(
    end: str, login_relay: SmtpSink, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """The agent's outbox was refused the login (its rest in the alert store), then the agent went down, stopped or
    killed: it is the same relay and account, so the timer's "not running" mail waits for the end of that rest too.
    Before: the timer logged in at its second run, a minute after the agent's refusal."""
    settings = login_settings(make_settings, login_relay, WRONG)
    alerter, db = await restarted(settings, settings.agent.db_path, clock)
    try:
        await two_alarms(alerter)
        assert login_relay.logins == 1
        if end == "stopped":
            await alerter.stop()
            await db.close()
        for minute in range(1, 60):
            clock.advance(60)
            await timer_run(settings, clock)
            assert login_relay.logins == 1, f"the run at minute {minute} logged in within the agent's rest"
        clock.advance(60)
        await timer_run(settings, clock)
        assert login_relay.logins == 2, "not tried when the agent's rest was over"
    finally:
        await db.close()


async def test_the_agent_down_mail_says_since_when_in_the_stores_time(
    make_settings: Callable[..., Settings], plain_sink: SmtpSink
) -> None:
    """The health timer's mail says since when the agent is down in the store's time (agent.timezone), with the zone
    named, as every other mail and the docs do; in the hour the autumn night repeats, the zone says which one. Before
    (the clock76 probe, D3): "since 2026-10-25 01:40:00 UTC" for the second 02:40 in Berlin."""
    settings = mail_settings(make_settings, plain_sink)
    settings = dataclasses.replace(settings, agent=dataclasses.replace(settings.agent, timezone="Europe/Berlin"))
    agent = FakeAgent()
    clock = SteppedClock(wall_offset=1792892400.0 - time.time())  # 2026-10-25 01:40:00 UTC: 02:40 CET, the second
    for _ in range(2):
        await health(settings, agent, alert=True, clock=clock)
        clock.advance(60)
    [mail] = plain_sink.messages
    text = mail.get_body(("plain",)).get_content()
    assert "since 2026-10-25 02:40:00 CET" in text, text


async def test_the_agent_down_mail_after_ntp_set_a_1970_clock_says_since_when_on_the_right_clock(
    make_settings: Callable[..., Settings], plain_sink: SmtpSink
) -> None:
    """A box without a battery boots at 1970 and the agent does not come up; the health timer's first failed check
    is at 1970, NTP then sets the clock, and the second check mails: "not ready since" the first check's moment on
    the corrected clock, a minute ago, not 1970. Before stop 83 (the boot83 probe, F8) the mail said "since
    1970-01-01 00:01:00 UTC": the first check's wall time kept as it was read."""
    settings = mail_settings(make_settings, plain_sink)
    agent, clock = FakeAgent(), SteppedClock()
    clock.step(-YEARS_56)
    await health(settings, agent, alert=True, clock=clock)
    clock.advance(60)
    clock.step(YEARS_56)  # NTP
    await health(settings, agent, alert=True, clock=clock)
    [mail] = plain_sink.messages
    text = mail.get_body(("plain",)).get_content()
    zone = settings.agent.timezone
    first = {shown_at(clock.wall() - back, zone) for back in (60, 61)}  # the real time between the two reads
    assert any(f"since {at}" in text for at in first) and "1970" not in text, (text, first)
