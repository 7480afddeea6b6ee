"""The "agent down" alert that `edge health --alert` (the health-check timer) mails from outside the agent.

It is critical, so like the agent's own critical alerts it passes quiet hours and the hourly cap and has a storm
guard: one mail, and an agent that keeps falling over within alerts.critical_storm_s is counted, not mailed each
time; still down when the window ends, it is mailed again with the count. It goes straight to the relay: the agent
and its outbox are what is down. Its state lives in a small file between the timer's runs; a mail goes only once
that state is written (to the runtime directory if the data directory refuses), so it is never repeated every run.
After the relay refused the login for good, it keeps the rest the agent's outbox keeps (edge.alerts.login_rest).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from edge.alerts.login_rest import LOGIN_HOLD_S, begin_rest, rest_until
from edge.clock import SYSTEM_CLOCK, Clock, shown_at
from edge.config import Settings
from edge.durable import runtime_dir, write_durably
from edge.errors import AlertError
from edge.store.alerts import LoginRest, Mail

if TYPE_CHECKING:
    from edge.alerts.mailer import Delivery

log = structlog.get_logger()

FAILURES_BEFORE_ALERT = 2  # one missed minute is a restart, two is a problem
_STATE_FILE = "health-state.json"


@dataclasses.dataclass
class HealthState:
    failures: int = 0  # failed checks in a row
    since: float | None = None  # wall time of the first of them, for the mail ...
    # ... and its monotonic time and boot: in this boot the mail tells it on the clock as it is now (NTP may have set
    # a 1970 clock since: "down since 1970", the boot83 probe, F8)
    since_mono: float | None = None
    since_boot: str = ""
    alerted: bool = False  # the last mail said: down
    mailed_mono: float | None = None  # monotonic time of the last "down" mail: the storm guard's window ...
    boot_id: str = ""  # ... which means something only within the same boot
    guarded: int = 0  # outages the storm guard kept from the manager since the last mail
    # Recipients the relay deferred (4xx, e.g. greylisting) the last mail for, and that mail: tried at each run.
    owed: list[str] = dataclasses.field(default_factory=list)
    owed_mail: dict[str, str] | None = None
    # The relay's rest after it refused the login for good (a LoginRest): this timer's refusal, or the agent's taken
    # over; and the salt of the agent's rest last taken over, not taken again (with the wall clock set back since,
    # it would seem to begin anew at every run).
    login_rest: dict[str, Any] | None = None
    agent_rest: str = ""


def _state_paths(settings: Settings) -> list[Path]:
    """The data directory first; the runtime directory (tmpfs) when the data directory cannot be written."""
    return [settings.agent.data_dir / _STATE_FILE, runtime_dir() / f"edge-{settings.agent.store_id}-{_STATE_FILE}"]


def agent_down_mail(settings: Settings, *, healthy: bool, reason: str, since: float, more: int) -> Mail:
    store = f"{settings.agent.store_name or settings.agent.store_id} ({settings.agent.store_id})"
    when = shown_at(since, settings.agent.timezone)  # the store's time, as every mail says it
    if settings.agent.language == "de":
        subject = f"[{store}] {'BEHOBEN: Edge-Agent läuft wieder' if healthy else 'STÖRUNG: Edge-Agent läuft nicht'}"
        text = f"Der Edge-Agent der Filiale {store} " + (
            "ist wieder bereit."
            if healthy
            else f"ist seit {when} nicht bereit: {reason}\nBestellungen werden nicht angenommen oder gedruckt."
            " Bitte den Techniker informieren (edge doctor)."
        )
        times = "ein weiteres Mal" if more == 1 else f"{more} weitere Male"
        extra = f"\nSeit der letzten Mail {times} ausgefallen." if more else ""
    else:
        subject = f"[{store}] {'RESOLVED: edge agent is back' if healthy else 'ALERT: edge agent is not running'}"
        text = f"The edge agent of store {store} " + (
            "is ready again."
            if healthy
            else f"has not been ready since {when}: {reason}\nOrders are not taken or printed."
            " Please call the technician (edge doctor)."
        )
        extra = f"\nDown {more} more times since the last mail." if more else ""
    text += extra
    recipients = list(dict.fromkeys([*settings.alerts.to, *settings.alerts.critical_to]))
    html = "<p>" + text.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>") + "</p>"
    return Mail(recipients=recipients, subject=subject, text=text, html=html)


class AgentDownAlert:
    def __init__(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._settings = settings
        self._clock = clock

    def _load(self) -> HealthState:
        for path in reversed(_state_paths(self._settings)):  # the runtime file is newer when it exists
            try:
                return HealthState(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
        return HealthState()

    async def _save(self, state: HealthState) -> bool:
        return await asyncio.to_thread(self._write, state)

    def _write(self, state: HealthState) -> bool:
        """Durably (whole, fsynced, before the mail it records goes): a state written in place and never synced came
        back empty or not at all after a power cut, and the manager told "down" never got the all-clear."""
        text = json.dumps(dataclasses.asdict(state)).encode()
        data_file, runtime_file = _state_paths(self._settings)
        try:
            write_durably(data_file, text)
            runtime_file.unlink(missing_ok=True)  # the data directory takes writes again: one place only
            return True
        except OSError as err:
            log.error("health_state_not_written", path=str(data_file), error=str(err))
        try:
            write_durably(runtime_file, text)  # tmpfs: gone with the power anyway, whole until then
            return True
        except OSError as err:
            log.error("health_state_not_written", path=str(runtime_file), error=str(err))
            return False

    def _in_storm_window(self, state: HealthState) -> bool:
        return self._clock.noted_within(
            state.boot_id or None, state.mailed_mono, self._settings.alerts.critical_storm_s
        )

    async def observe(self, healthy: bool, reason: str) -> None:
        """One check's outcome: mails the manager when the agent stays down and when it is back, by the rules."""
        state = self._load()
        if state.owed and not (healthy and state.alerted):  # an owed "down" mail is superseded by the all-clear
            await self._send_owed(state)
        if healthy:
            back = dataclasses.replace(state, failures=0, since=None, since_mono=None, since_boot="", alerted=False)
            if state.alerted:  # the last mail said down
                await self._send(told=back, untold=state, healthy=True, reason=reason, since=self._clock.wall())
            elif back != state:  # unchanged, it is not written again: the timer runs every minute, on an SD card
                await self._save(back)
            return
        state.failures += 1
        if state.since is None:
            state.since, state.since_mono, state.since_boot = (
                self._clock.wall(),
                self._clock.mono(),
                self._clock.boot() or "",
            )
        log.error("agent_unhealthy", reason=reason, failures=state.failures)
        if state.alerted or state.failures < FAILURES_BEFORE_ALERT:
            await self._save(state)
            return
        if self._in_storm_window(state):
            if state.failures == FAILURES_BEFORE_ALERT:  # a new outage, counted once
                state.guarded += 1
                log.warning("agent_down_storm_guarded", outages=state.guarded)
            await self._save(state)
            return
        told = dataclasses.replace(
            state, alerted=True, mailed_mono=self._clock.mono(), boot_id=self._clock.boot() or "", guarded=0
        )
        await self._send(told=told, untold=state, healthy=False, reason=reason, since=self._since(state))

    def _since(self, state: HealthState) -> float:
        """When the outage began, on the wall clock as it is now where this boot's monotonic clock tells it."""
        assert state.since is not None
        if state.since_mono is not None and state.since_boot and state.since_boot == self._clock.boot():
            return self._clock.wall_at(state.since_mono)
        return state.since

    async def _send(self, *, told: HealthState, untold: HealthState, healthy: bool, reason: str, since: float) -> None:
        mail = agent_down_mail(self._settings, healthy=healthy, reason=reason, since=since, more=untold.guarded)
        if not self._settings.smtp.host or not mail.recipients:
            log.warning("health_alert_not_mailed", reason="smtp.host or alerts.to not configured", healthy=healthy)
            await self._save(untold)
            return
        if (resting := await self._resting(untold)) is not None:
            log.warning("health_alert_not_mailed", reason=resting, healthy=healthy)
            await self._save(untold)  # still owed: it goes at the first run after the rest
            return
        # Written before it is sent: a state that cannot be written would send this mail again at every run.
        told = dataclasses.replace(told, owed=[], owed_mail=None, login_rest=None, agent_rest=untold.agent_rest)
        if not await self._save(told):
            log.error("health_alert_not_mailed", reason="its state cannot be written anywhere", healthy=healthy)
            return
        try:
            delivery = await self._deliver(mail)
        except AlertError as err:
            log.error("health_alert_mail_failed", error=str(err))
            await self._save(await self._refused(untold, err))  # the next run tries again, or the one after the rest
            return
        if delivery.deferred:
            told.owed = list(delivery.deferred)
            told.owed_mail = {"subject": mail.subject, "text": mail.text, "html": mail.html}
            await self._save(told)
        log.info(
            "health_alert_mailed",
            healthy=healthy,
            recipients=len(delivery.accepted),
            deferred=list(delivery.deferred),
            refused=delivery.refused,
        )

    async def _deliver(self, mail: Mail) -> Delivery:
        from edge.alerts.mailer import Mailer  # here: the check of a running agent, every minute, mails nothing

        return await Mailer(self._settings.smtp).send_without_outbox(mail)

    async def _resting(self, state: HealthState) -> str | None:
        """Why the relay is not tried now, None when it may be: it refused the login for these smtp settings less
        than an hour ago, to this timer or to the agent before it went down (the same relay and account: the rest
        in its alert store). Keeps in ``state`` the rest as it stands (never ending later than an hour from now)."""
        from edge.store.files import login_rest_of_file  # here: only a mail about to go reads the agent's store

        now, smtp = self._clock.wall(), self._settings.smtp
        try:
            own = LoginRest(**state.login_rest) if state.login_rest else None
            until = None if own is None else await rest_until(own, smtp, now)
        except TypeError:  # not a rest this version wrote
            own = until = None
        agent = await asyncio.to_thread(login_rest_of_file, self._settings.agent.db_path)
        if agent is not None and agent.salt != state.agent_rest:
            agent_until = await rest_until(agent, smtp, now)
            if agent_until is not None and (until is None or agent_until > until):
                own, until, state.agent_rest = agent, agent_until, agent.salt
        if own is None or until is None:
            state.login_rest = None
            return None
        state.login_rest = dataclasses.asdict(dataclasses.replace(own, until=until))
        return (
            f"{own.error}; not tried again before {shown_at(until, self._settings.agent.timezone)} (changed smtp"
            " settings are tried at once)"
        )

    async def _refused(self, state: HealthState, err: AlertError) -> HealthState:
        """``state`` with the relay's rest, when it refused the login for good: every try is one more failed login
        toward the provider's lockout."""
        from edge.alerts.mailer import LoginRefusedError

        if not (isinstance(err, LoginRefusedError) and err.permanent):
            return state
        rest = await begin_rest(self._settings.smtp, str(err), self._clock.wall() + LOGIN_HOLD_S)
        return dataclasses.replace(state, login_rest=dataclasses.asdict(rest))

    async def _send_owed(self, state: HealthState) -> None:
        """The last mail, to those the relay deferred it for; whoever it defers again waits for the next run."""
        assert state.owed_mail is not None
        mail = Mail(recipients=state.owed, **state.owed_mail)
        kept = (state.login_rest, state.agent_rest)
        if (resting := await self._resting(state)) is not None:
            log.warning("health_alert_not_mailed", reason=resting, recipients=state.owed)
            if (state.login_rest, state.agent_rest) != kept:  # a healthy agent's run saves no unchanged state
                await self._save(state)
            return
        try:
            delivery = await self._deliver(mail)
        except AlertError as err:
            log.error("health_alert_mail_failed", error=str(err), recipients=state.owed)
            state.login_rest = (await self._refused(state, err)).login_rest
            await self._save(state)
            return
        state.login_rest = None
        state.owed = list(delivery.deferred)
        state.owed_mail = state.owed_mail if state.owed else None
        await self._save(state)
        log.info(
            "health_alert_mailed",
            subject=mail.subject,
            recipients=len(delivery.accepted),
            deferred=state.owed,
            refused=delivery.refused,
        )
