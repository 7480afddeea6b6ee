"""The alert catalogue and the pure throttle rules: what a group's next mail is, when it is due, what holds it back."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import math
from collections.abc import Iterable

from edge.config import AlertSettings, parse_hours

CRITICAL, WARNING = "critical", "warning"


@dataclasses.dataclass(frozen=True)
class AlertType:
    name: str
    severity: str
    # Alert types (by name) whose firing group with the same subject ("*": any subject) holds this one back:
    # the manager is told the cause, not every symptom of it.
    inhibited_by: tuple[tuple[str, bool], ...] = ()
    remind: bool = True  # False: each occurrence is the whole story (mailed once, with later ones as news)
    # True: a person's doing (a cover opened to change the roll, a scanner's cable pulled to move it), short by nature:
    # news only once one episode outlasts the grace, counted from its own start, not for being done again and again
    # within it, as a device's flapping is
    by_hand: bool = False
    # True: a condition the checks look at every check_interval_s, not an event: how long it lasted is known to a look
    sampled: bool = False


_SAME_SUBJECT, _ANY_SUBJECT = True, False
# Not an alert of its own: the cause the alerter names among the firing keys while central is out of reach and nothing
# says central itself is in trouble (the store's line, most likely: central_unreachable's own words).
STORE_LINE_DOWN = "store_line_down"

TYPES: dict[str, AlertType] = {
    t.name: t
    for t in (
        AlertType("printer_offline", CRITICAL),
        AlertType("printer_paper_out", CRITICAL, inhibited_by=(("printer_offline", _SAME_SUBJECT),)),
        AlertType("printer_cover_open", WARNING, inhibited_by=(("printer_offline", _SAME_SUBJECT),), by_hand=True),
        # Stopped by an error it reports (DLE EOT 3: a cutter jam, an overheated head…): reachable, not offline.
        AlertType("printer_error", CRITICAL, inhibited_by=(("printer_offline", _SAME_SUBJECT),)),
        # The FEED button held a minute (alerter.FEED_HELD_S) while the printer answers: a stuck button, not an outage.
        AlertType("printer_feed_held", CRITICAL, inhibited_by=(("printer_offline", _SAME_SUBJECT),)),
        AlertType(
            "printer_paper_low",
            WARNING,
            inhibited_by=(("printer_offline", _SAME_SUBJECT), ("printer_paper_out", _SAME_SUBJECT)),
        ),
        AlertType("print_job_failed", CRITICAL),
        AlertType(
            "print_job_held",
            WARNING,
            inhibited_by=(("printer_offline", _SAME_SUBJECT), ("printer_error", _SAME_SUBJECT)),
        ),
        AlertType("print_job_unrouted", WARNING),  # held: its printer left the config and nothing serves the station
        AlertType("station_unrouted", WARNING),  # held: an order's station (or receipt) no printer was ever set up for
        AlertType(
            "queue_backlog",
            WARNING,
            inhibited_by=(("printer_offline", _ANY_SUBJECT), ("printer_paper_out", _ANY_SUBJECT)),
            sampled=True,
        ),
        AlertType("central_unreachable", WARNING),
        # A configured scanner unplugged, or its port missing: its scans (the scanner still beeps) mark nothing ready.
        AlertType("scanner_offline", WARNING, by_hand=True),
        # Central refuses an order's status events (not for good): they wait, the other orders' go; one group per order.
        AlertType("central_refused_events", WARNING),
        # Central refused status events for good (never sent again): one group, one item per event.
        AlertType("central_rejected_events", WARNING, remind=False),
        # At a start: the database ran in another box until now (a cloned or moved card). Told once, never resolved.
        AlertType("database_moved", WARNING, remind=False),
        AlertType("recovery_failed", CRITICAL, inhibited_by=(("central_unreachable", _ANY_SUBJECT),)),
        AlertType("storage_problem", CRITICAL),
        # The nightly backup has not succeeded for backup.stale_after_h: a failing card has no copy to restore.
        AlertType("backup_stale", WARNING),
        # Found by recovery; grouped per kind, one item per order. Resolved by a later run that finds none.
        AlertType("recovery_conflict", WARNING),  # the local version was printed; the backend's differs
        AlertType("recovery_invalid", CRITICAL),  # the backend has an order this store never printed
        AlertType("order_totals_mismatch", WARNING, remind=False),
        # A sender reused an order's revision for other content (pushed, or over MQTT): refused, one item per order.
        AlertType("order_conflict", WARNING, remind=False),
        # A cancel at or below the stored open revision: not applied, the kitchen makes the order; one item per order.
        AlertType("cancel_refused", WARNING, remind=False),
        # Text a printer's code page cannot show, printed as "?": one group per printer, one item per order it was in.
        AlertType("text_unprintable", WARNING, remind=False),
        # MQTT intake: the broker refuses our login or certificate (orders over MQTT stop), and messages on the
        # orders topic that were not a valid order (acked and kept; central must send them right).
        AlertType("mqtt_refused", CRITICAL),
        # The broker out of reach for mqtt_down_min (down, or the store's line): no order comes over MQTT meanwhile.
        # With central out of reach too for want of the line (not central's own trouble: its errors, its host turning
        # connections away), the store's line is the likely cause, and central's mail tells it.
        AlertType("mqtt_unreachable", WARNING, inhibited_by=((STORE_LINE_DOWN, _ANY_SUBJECT),)),
        AlertType("mqtt_events_refused", WARNING),
        # Orders come by recovery though the link is subscribed: the broker delivers nothing on the orders topic (its
        # ACL). Critical like a refusal: every order comes up to a schedule's interval late, or not at all.
        AlertType("mqtt_not_delivering", CRITICAL),
        # Orders pushed over HTTP refused for their token or signature: none comes in until a person sets them alike.
        AlertType("push_refused", CRITICAL),
        AlertType("mqtt_invalid", CRITICAL, remind=False),
        # The broker lost the store's session and no [central] link can fetch what was published meanwhile.
        AlertType("mqtt_session_lost", CRITICAL, remind=False),
    )
}


def in_window(window: tuple[dt.time, dt.time], local: dt.datetime) -> bool:
    start, end = window
    now = local.time()
    if start == end:
        return True
    return start <= now < end if start < end else now >= start or now < end


@dataclasses.dataclass(frozen=True)
class Due:
    """The mail a group owes the manager now: kind firing | resolved | reminder, or drop (cleared before any mail)."""

    kind: str
    extra: int  # occurrences since the last mail that this mail reports ("37 weitere Male")


def _listed(group: dict) -> int:
    """How many of the occurrences since the last mail the mail lists by name (at most the newest 20 items are kept):
    those it tells by listing them; the rest it counts."""
    return min(group["new_items"], len(group["details"].get("items", [])))


def due_mail(group: dict, now: float, cfg: AlertSettings, *, alarm_unreached: bool = False) -> Due | None:
    """Alertmanager's timers for one group: group_wait before the first mail, group_interval for news, repeat_interval;
    a rise to critical is news at once, and a critical group whose news went to the digest (storm guard) is mailed
    again when its storm window ends if it still fires. ``alarm_unreached``: its alarm still waits in the outbox,
    delivered to nobody (the relay turned it away)."""
    state, notified, fires = group["state"], group["notified"], group["fires_since_mail"]
    if notified == "resolved":
        if fires == 0:
            return None
        wait = group_wait(group, cfg)
        if TYPES[group["type"]].by_hand and state == "resolved" and group["changed_at"] - group["first_at"] < wait:
            # Over within the grace: closed at once, so the next one is an episode of its own, told from its own start
            # (a scanner back within the delay and pulled again was mailed the delay after the first pull, "since"
            # then, "once more": the mqtt77 probe, F1 and F2).
            return Due("drop", 0)
        if now < group["first_at"] + wait:
            return None
        # A look's time too for a condition the checks sample: one seen for the grace was over at the look that would
        # have mailed it, and its all-clear went alone (the rush79 probe, F1)
        grace = wait + (cfg.check_interval_s if TYPES[group["type"]].sampled else 0.0)
        if state == "resolved" and fires == 1 and group["changed_at"] - group["first_at"] <= grace:
            return Due("drop", 0)  # came and went within group_wait: nobody needs to hear about it
        if TYPES[group["type"]].by_hand:
            # A cover opened for seconds again and again (a roll changed) was closed each time: its alarm went while
            # it was closed, then its all-clear, 4 mails in 5 minutes (the mailbox76 probe, F2).
            if state == "firing" and now < group["changed_at"] + wait:
                return None
            if state == "resolved" and fires > 1:
                return Due("drop", 0)
        if state == "resolved" and fires == 1:
            # One outage over before anyone could be told (its occurrences held while the disk was full): the
            # all-clear alone says since and until when, not an alarm about what works again, then its all-clear; that
            # outage is the one it tells, not one more. A flapping device's alarm still goes first: it carries how
            # often.
            return Due("resolved", 0)
        # The occurrences it lists (a held ticket each) are what it tells, not more of it: three tickets held at once
        # are one alarm listing three, not "2 more times since the last mail" (the months73 probe, M4).
        return Due("firing", max(0, fires - max(1, _listed(group))))
    if state == "resolved":
        # Over while its alarm reached nobody: the all-clear goes now, in its place ("over before anyone was told"),
        # not after group_interval, by when the relay may have taken the alarm about what works again.
        due = alarm_unreached or now >= group["last_sent_at"] + cfg.group_interval_s
        return Due("resolved", fires) if due else None
    if group["severity"] == CRITICAL and group["notified_severity"] != CRITICAL:
        return Due("firing", max(0, fires - 1))  # escalated: the manager was told a warning
    if group["severity"] == CRITICAL and group["mailed"] != "firing" and not storm_guarded(group, now, cfg):
        return Due("firing", fires)  # its last mail said resolved, its news since went to the digest
    if group["new_items"] and now >= group["last_sent_at"] + cfg.group_interval_s:
        return Due("firing", max(0, fires - _listed(group)))
    if TYPES[group["type"]].remind and now >= group["last_sent_at"] + cfg.repeat_interval_s:
        return Due("reminder", fires)
    return None


def group_wait(group: dict, cfg: AlertSettings) -> float:
    """Seconds a group waits before its first mail; one over by then is dropped. A scanner waits scanner_down_min: a
    cable pulled and put back is no news."""
    if group["type"] == "scanner_offline":
        return cfg.scanner_down_min * 60
    return cfg.critical_group_wait_s if group["severity"] == CRITICAL else cfg.group_wait_s


def storm_guarded(group: dict, now: float, cfg: AlertSettings) -> bool:
    """Within critical_storm_s of its last critical mail, a device's next episodes go into the digest: critical ones,
    and those that start as warnings (found down with nothing waiting) and may turn critical, which are the same
    flapping device. Not one critical for STILL_DOWN_S: that is an outage, not a flap, and the manager's last word
    about the device was its all-clear."""
    if group["state"] == "firing" and group["severity"] == CRITICAL and now - group["changed_at"] >= STILL_DOWN_S:
        return False
    return storm_guard_left(group["critical_mail_at"], now, cfg) > 0


# A device's episode within the storm window that is critical this long is mailed (a flap lasts seconds or a minute).
STILL_DOWN_S = 600.0


def storm_guard_left(critical_mail_at: float | None, now: float, cfg: AlertSettings) -> float:
    """Seconds the storm guard has left after a critical mail at ``critical_mail_at`` (0 or less: over, or none)."""
    return -math.inf if critical_mail_at is None else critical_mail_at + cfg.critical_storm_s - now


def silenced(key: str, matchers: Iterable[str]) -> str | None:
    """The silence matcher that covers this group key, if any ('printer_offline' covers every printer)."""
    type_name = key.split(":", 1)[0]
    for matcher in matchers:
        if fnmatch.fnmatchcase(key, matcher) or fnmatch.fnmatchcase(type_name, matcher):
            return matcher
    return None


def inhibited(group: dict, firing_keys: set[str]) -> str | None:
    """The firing group that explains this one (its cause), if any."""
    for cause, same_subject in TYPES[group["type"]].inhibited_by:
        if same_subject:
            if f"{cause}:{group['subject']}" in firing_keys:
                return f"{cause}:{group['subject']}"
        else:
            for key in firing_keys:
                if key.startswith(cause + ":"):
                    return key
    return None


def held_by_hours(severity: str, local: dt.datetime, cfg: AlertSettings) -> str | None:
    """Quiet hours and the time outside opening_hours hold warnings; critical alerts are never held by the clock."""
    if severity == CRITICAL:
        return None
    quiet = parse_hours(cfg.quiet_hours)
    if quiet and in_window(quiet, local) and quiet[0] != quiet[1]:
        return "quiet_hours"
    if not in_opening_hours(local, cfg):
        return "outside_hours"
    return None


def in_opening_hours(local: dt.datetime, cfg: AlertSettings) -> bool:
    """No opening_hours set: always open."""
    opening = parse_hours(cfg.opening_hours)
    return opening is None or in_window(opening, local)
