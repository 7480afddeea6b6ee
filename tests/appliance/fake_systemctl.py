"""A stand-in for `systemctl` for an install under a throwaway root (tests): start, stop, is-active, daemon-reload.

Modelled on systemctl(1) and systemd.service(5) / systemd.exec(5) / systemd.kill(5), for the units in systemd/:

- `start UNIT.service` runs the unit's ExecStart as its user, in a session of its own, with EnvironmentFile= and
  Environment= applied and $NOTIFY_SOCKET set; for Type=notify it returns only once READY=1 arrived (exit 0), and
  fails (exit 1, like "Job for … failed") when the process exits first or TimeoutStartSec= passes. Starting a running
  unit does nothing.
- `stop UNIT.service` sends SIGTERM to the main process, waits up to TimeoutStopSec=, then SIGKILLs the whole process
  group (KillMode=mixed). Stopping a stopped unit does nothing.
- Timers, enable, disable and daemon-reload succeed and do nothing: nothing here runs on a schedule.

Each start's time and the length its log had then are noted (`UNIT.starts`), so fake_journalctl.py can show the lines
written since a time, as `journalctl --since` does.

Where a real box differs: absolute paths in ExecStart= and EnvironmentFile= are taken under $FAKE_SYSTEMD_ROOT; the
unit's User= is replaced by $FAKE_SYSTEMD_USER (a throwaway root has no `edge` user); PYTHONPATH passes through, since
the throwaway install borrows the test venv's libraries. State (pid files, the service's log, the notify socket)
lives in $FAKE_SYSTEMD_STATE.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(os.environ["FAKE_SYSTEMD_ROOT"])
STATE = Path(os.environ["FAKE_SYSTEMD_STATE"])
USER = os.environ["FAKE_SYSTEMD_USER"]


def unit_settings(unit: str) -> dict[str, list[str]]:
    """Every Key=value of the unit file's [Service] section (a key may repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in (ROOT / "etc/systemd/system" / unit).read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def under_root(arg: str) -> str:
    return str(ROOT / arg.lstrip("/")) if arg.startswith("/") else arg


def pid_file(unit: str) -> Path:
    return STATE / f"{unit}.pid"


def running(unit: str) -> int | None:
    """The main pid if the unit's process is alive (a zombie is not)."""
    try:
        pid = int(pid_file(unit).read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    return None if fields[0] in ("Z", "X") else pid


def environment(settings: dict[str, list[str]]) -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    for value in settings.get("Environment", []):
        for pair in shlex.split(value):
            key, _, val = pair.partition("=")
            env[key] = val
    for value in settings.get("EnvironmentFile", []):
        optional = value.startswith("-")
        path = Path(under_root(value.lstrip("-")))
        if path.is_file():
            env.update({k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None})
        elif not optional:
            raise SystemExit(f"Failed to load environment file {path}")
    return env


def start(unit: str) -> int:
    if running(unit):
        return 0
    settings = unit_settings(unit)
    argv = [under_root(a) for a in shlex.split(settings["ExecStart"][0])]
    user = pwd.getpwnam(USER)
    STATE.mkdir(parents=True, exist_ok=True)
    notify_path = STATE / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify_path.chmod(0o666)  # the service runs as its own user and must be able to send to it
    env = environment(settings) | {"NOTIFY_SOCKET": str(notify_path)}
    with (STATE / f"{unit}.log").open("ab") as log, (STATE / f"{unit}.starts").open("a") as starts:
        starts.write(f"{time.time()} {log.tell()}\n")
        # The service writes its own pid file before it becomes the service (exec keeps the pid): systemd tracks a
        # service it started whatever happens to the `systemctl start` that asked for it, and so must we when that
        # client is killed (upgrade.sh's process group getting SIGKILL) between starting the service and noting it.
        process = subprocess.Popen(
            [
                *("sh", "-c", 'echo $$ > "$0" && exec "$@"', str(pid_file(unit))),
                *("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd="/",
        )
    pid_file(unit).write_text(str(process.pid))
    if settings.get("Type", ["simple"])[0] != "notify":
        return 0
    deadline = time.monotonic() + min(float(settings.get("TimeoutStartSec", ["90"])[0]), 60.0)
    notify.settimeout(0.1)
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                return 0
        if process.poll() is not None:
            print(f"Job for {unit} failed because the control process exited with error code.", file=sys.stderr)
            return 1
    stop(unit)
    print(f"Job for {unit} failed because a timeout was exceeded.", file=sys.stderr)
    return 1


def stop(unit: str) -> int:
    pid = running(unit)
    if pid is None:
        pid_file(unit).unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + float(unit_settings(unit).get("TimeoutStopSec", ["90"])[0])
    while running(unit) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running(unit):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while running(unit):
            time.sleep(0.05)
    pid_file(unit).unlink(missing_ok=True)
    return 0


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]  # --quiet, --now …
    if not args:
        return 0
    command, units = args[0], args[1:]
    services = [u for u in units if u.endswith(".service")]
    if command == "start":
        return max([start(u) for u in services], default=0)
    if command == "stop":
        return max([stop(u) for u in services], default=0)
    if command == "restart":
        return max([stop(u) or start(u) for u in services], default=0)
    if command == "is-active":
        active = all(running(u) for u in services)
        print("active" if active else "inactive")
        return 0 if active else 3
    return 0  # daemon-reload, enable, disable, timers


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
