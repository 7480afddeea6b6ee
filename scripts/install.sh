#!/usr/bin/env bash
# Installs the edge agent as a systemd service: program in /opt/edge-agent, user edge, /var/lib/edge, /etc/edge.
# Idempotent: a second run changes nothing. --uninstall keeps the data and config; --purge removes them too.
#
#   sudo scripts/install.sh                 install or repair (never overwrites /etc/edge/edge.toml)
#   sudo scripts/install.sh --uninstall     stop and remove the service and the program; keep data and config
#   sudo scripts/install.sh --purge         also remove /var/lib/edge, /etc/edge and the user
#   scripts/install.sh --prefix /tmp/root   everything under a throwaway root (tests); no user, no systemctl
#   sudo scripts/install.sh --prefix /tmp/root --user edge-test   ... owned by a real (created) system user
#   scripts/install.sh --build-only         only build this version beside the program in use (upgrade.sh does)
#
# The one secrets file is /etc/edge/edge.env: owned by the agent's user, mode 0600, a random EDGE_API_TOKEN at first.
# `edge` on PATH is /usr/local/bin/edge, a link to /opt/edge-agent/current/bin/edge (the docs' bare `edge ...`).
# Each version is a venv of its own in /opt/edge-agent/releases/, built beside the one in use; /opt/edge-agent/current
# switches to it in one rename (see scripts/lib.sh). To upgrade a running box, use scripts/upgrade.sh.
# EDGE_PIP_ARGS adds pip options (e.g. "--no-index --find-links /media/usb/wheels" on a box without internet);
# EDGE_VENV_ARGS adds venv options (the tests' builds: --without-pip, with a pip of their own on PYTHONPATH).
set -euo pipefail

SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=""
MODE=install
START=1
PYTHON="${PYTHON:-python3}"
AGENT_USER=edge
USER_GIVEN=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX="${2%/}"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --user) AGENT_USER="$2"; USER_GIVEN=1; shift 2 ;;  # the agent's user; with --prefix, created for real
        --uninstall) MODE=uninstall; shift ;;
        --purge) MODE=purge; shift ;;
        --no-start) START=0; shift ;;  # upgrade.sh starts the agent itself, after migrating
        --build-only) MODE=build; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/lib.sh
source "$SOURCE/scripts/lib.sh"

# Only on the real root: a --prefix run must never touch this machine's users or services.
real_root() { [[ -z "$PREFIX" ]]; }
have_systemd() { real_root && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; }
# The agent's user exists for real on the real root, or under a prefix when --user names one.
manage_user() { real_root || [[ $USER_GIVEN -eq 1 ]]; }

# Sets RELEASE to this checkout's release directory, built unless a complete one is there already. A build cut
# short (no completion mark: a dropped SSH session during pip) is thrown away and done again.
build_release() {
    HID_WANTED="$(hid_wanted)"
    RELEASE="$RELEASES/$(release_id)"
    if [[ -f "$RELEASE/$COMPLETE" ]]; then
        return
    fi
    rm -rf "$RELEASE"
    mkdir -p "$RELEASES"
    check_room
    local free_before_kb
    free_before_kb="$(free_kb "$RELEASES")"
    # A build that fails or is interrupted (pip on a full card, a dropped SSH session) goes at once: on the agent's
    # SD card it would keep the agent from writing orders until the next run.
    trap 'rm -rf "$RELEASE"' EXIT
    # pip's messages (--quiet: warnings and errors) are kept to be read for a failed evdev build, then shown as they are
    local errors="" built=1
    # shellcheck disable=SC2086  # EDGE_VENV_ARGS and EDGE_PIP_ARGS are lists of options on purpose
    if ! "$PYTHON" -m venv ${EDGE_VENV_ARGS:-} "$RELEASE"; then
        built=0
    elif ! { errors="$("$RELEASE/bin/python" -m pip install --quiet --disable-pip-version-check ${EDGE_PIP_ARGS:-} \
        "$SOURCE${HID_WANTED:+[hid]}" 2>&1 >&3)"; } 3>&1; then
        built=0
    fi
    if [[ -n "$errors" ]]; then
        printf '%s\n' "$errors" >&2
    fi
    if [[ $built -eq 0 ]]; then
        build_failed "$free_before_kb" "$errors"
    fi
    sync -f "$RELEASE"  # on disk before it counts as complete: a power cut must not leave a marked, empty venv
    touch "$RELEASE/$COMPLETE"
    trap - EXIT
    say "installed edge-agent $(source_version) in $RELEASE${HID_WANTED:+, with evdev for hid scanners ($HID_WANTED)}"
}

free_kb() { df -Pk "$1" | awk 'NR == 2 { print $4 }'; }

# The room check cannot see a first install coming (no release in use to measure), and a card can fill while pip
# runs: pip then ends in its own words (Errno 28, "Can't roll back"). Where the disk is full, the last line says what
# that means for the box and what to do; so it does where evdev could not be compiled (no compiler or headers: pip's
# last words are "Failed to build installable wheels"); any other failure keeps pip's reason as the last word.
# (The EXIT trap removes the half-built release.)
FULL_KB=4096  # less than this left while the build stood: no release's next file would have fit
build_failed() {
    local free_before_kb="$1" errors="$2" written_kb
    written_kb="$(du -sk "$RELEASE" 2>/dev/null | cut -f1)"
    if (( $(free_kb "$RELEASES") < FULL_KB )); then
        echo "$ME: the disk of $RELEASES filled up building the release ($(( ${written_kb:-0} / 1024 )) MB written," \
            "$(( free_before_kb / 1024 )) MB were free); nothing was installed: free some space (old logs, files in" \
            "the data directory's backups) and run again" >&2
    elif [[ "$errors" =~ wheels?\ for\ evdev ]]; then  # pip: "Building wheel for evdev", "Failed building wheel for"
        echo "$ME: evdev, which hid scanners are read through, could not be built (needed: $HID_WANTED);" \
            "it is compiled here and needs a C compiler and the kernel's and Python's headers: install them" \
            "(Debian, Raspberry Pi OS: apt install gcc linux-libc-dev python3-dev) and run again; nothing was installed" >&2
    fi
    exit 1
}

# A release is built while the agent in use takes orders, usually on the same SD card: it must leave the agent the
# free space it keeps (alerts.disk_free_min_mb, on the disk of its data). A release takes about what the one in use
# takes; with none in use there is no agent to keep room for.
check_room() {
    local in_use need_kb reserve_kb room_kb
    in_use="$(current_target)"
    [[ -n "$in_use" ]] || return 0
    need_kb="$(du -sk "$OPT/$in_use" | cut -f1)"
    reserve_kb="$("$PYTHON" - "$ETC/edge.toml" "$RELEASES" <<'PY'
import os
import sys
import tomllib

try:
    with open(sys.argv[1], "rb") as f:
        config = tomllib.load(f)
except (OSError, tomllib.TOMLDecodeError):
    config = {}
data = config.get("agent", {}).get("data_dir", "/var/lib/edge")
reserve_mb = config.get("alerts", {}).get("disk_free_min_mb", 200)
try:
    same_disk = os.stat(data).st_dev == os.stat(sys.argv[2]).st_dev
except OSError:
    same_disk = False
print(int(reserve_mb) * 1024 if same_disk else 0)
PY
)"
    room_kb="$(free_kb "$RELEASES")"
    if (( room_kb < need_kb + reserve_kb )); then
        echo "$ME: not enough space in $RELEASES: a release takes about $(( need_kb / 1024 )) MB and the agent" \
            "keeps $(( reserve_kb / 1024 )) MB free (alerts.disk_free_min_mb); $(( room_kb / 1024 )) MB are free." \
            "Nothing was changed; free some space (old logs, files in the data directory's backups) and run again" >&2
        exit 1
    fi
}

# The docs' bare `edge ...` (sudo's secure_path and a login's PATH have /usr/local/bin): one link to current/, made in
# one rename like current itself, so it never has to change at an upgrade or a rollback. A program of another origin
# there (a pip install) is left alone and named.
link_command() {
    local target="$CURRENT/bin/edge"
    [[ "$(readlink "$COMMAND" 2>/dev/null)" == "$target" ]] && return
    if [[ -e "$COMMAND" && ! -L "$COMMAND" ]]; then
        say "left $COMMAND alone (not ours): run the agent's commands as $target"
        return
    fi
    mkdir -p "${COMMAND%/*}"
    ln -sfn "$target" "${COMMAND%/*}/.edge.new.$$"
    mv -T "${COMMAND%/*}/.edge.new.$$" "$COMMAND"
    sync "${COMMAND%/*}"
    say "linked $COMMAND to $target"
}

do_install() {
    if real_root && [[ $EUID -ne 0 ]]; then
        echo "install.sh: run as root (sudo), or use --prefix DIR" >&2
        exit 1
    fi
    if real_root && [[ "$AGENT_USER" != edge ]]; then
        echo "install.sh: --user is for --prefix installs; the units in /etc/systemd/system run as edge" >&2
        exit 2
    fi
    if manage_user && [[ $EUID -ne 0 ]]; then
        echo "install.sh: --user needs root (it creates a system user)" >&2
        exit 1
    fi
    if manage_user && ! getent passwd "$AGENT_USER" >/dev/null; then
        useradd --system --user-group --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin "$AGENT_USER"
        say "created user $AGENT_USER"
    fi
    if real_root; then
        for group in lp dialout; do
            if getent group "$group" >/dev/null && ! id -nG "$AGENT_USER" | tr ' ' '\n' | grep -qx "$group"; then
                usermod -aG "$group" "$AGENT_USER"
                say "added $AGENT_USER to group $group"
            fi
        done
    fi

    mkdir -p "$OPT" "$DATA" "$ETC" "$UNITS"
    chmod 0750 "$DATA"
    if manage_user; then
        chown "$AGENT_USER:$AGENT_USER" "$DATA"
    fi

    local previous
    previous="$(current_target)"
    build_release
    if switch_current "releases/${RELEASE##*/}"; then
        prune_releases "$previous"
    fi
    link_command
    put "$SOURCE/README.md" "$OPT/README.md" 0644
    local page  # the pages the README links to, beside it on the box, where the checkout is not
    for page in "$SOURCE"/docs/*.md; do
        put "$page" "$OPT/docs/${page##*/}" 0644
    done

    # The config is the technician's: written once from the example, never overwritten.
    # Each written whole and synced (lib.sh durable_mv): a power cut right after the install must not leave it empty.
    # One that is empty all the same (left so by an install from before these writes were synced) is written anew.
    if [[ ! -s "$ETC/edge.toml" ]]; then
        install -m 0600 "$SOURCE/edge.example.toml" "$ETC/.edge.toml.new.$$"
        durable_mv "$ETC/.edge.toml.new.$$" "$ETC/edge.toml"
        say "wrote $ETC/edge.toml from the example: set store_id, printers and the token"
    fi
    # The one secrets file: read by systemd (EnvironmentFile=) and by every edge command, which runs as the agent's
    # user; so it is that user's, mode 0600. A new one gets a random API token (the example's change-me is refused).
    if [[ ! -s "$ETC/edge.env" ]]; then
        local token
        token="$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')"
        install -m 0600 /dev/null "$ETC/.edge.env.new.$$"
        printf '%s\n' \
            '# The secrets file: EDGE_<SECTION>_<KEY>="value", read by systemd and the agent alike (docs/configuration.md).' \
            '# The API token the central backend sends as Authorization: Bearer ...; setup-notifications adds the mail keys.' \
            "EDGE_API_TOKEN=$token" >"$ETC/.edge.env.new.$$"
        durable_mv "$ETC/.edge.env.new.$$" "$ETC/edge.env"
        say "wrote $ETC/edge.env (the secrets file) with a new random EDGE_API_TOKEN: give it to the central backend"
    fi
    chmod 0600 "$ETC/edge.env"
    if manage_user; then
        chown "$AGENT_USER:$AGENT_USER" "$ETC/edge.toml" "$ETC/edge.env"
    fi

    local changed=0 unit
    for unit in "${UNIT_FILES[@]}"; do
        if ! cmp -s "$SOURCE/systemd/$unit" "$UNITS/$unit" 2>/dev/null; then
            changed=1
        fi
        put "$SOURCE/systemd/$unit" "$UNITS/$unit" 0644
    done
    if have_systemd; then
        if [[ $changed -eq 1 ]]; then
            systemctl daemon-reload
        fi
        systemctl enable --quiet edge-agent.service "${TIMERS[@]}"
        if [[ $START -eq 1 ]]; then
            systemctl start edge-agent.service "${TIMERS[@]}"
        fi
    else
        say "systemd not managed here (--prefix or no systemd): units copied, not enabled"
    fi
    say "done: edge-agent $(source_version) in $OPT"
}

do_uninstall() {
    local unit
    if have_systemd; then
        systemctl disable --now --quiet edge-agent.service "${TIMERS[@]}" 2>/dev/null || true
    fi
    for unit in "${UNIT_FILES[@]}"; do
        rm -f "$UNITS/$unit"
    done
    if have_systemd; then
        systemctl daemon-reload
    fi
    if [[ "$(readlink "$COMMAND" 2>/dev/null)" == "$CURRENT/bin/edge" ]]; then
        rm -f "$COMMAND"
    fi
    rm -rf "$OPT"
    say "removed the program, $COMMAND and the units; kept $DATA and $ETC"
    if [[ "$MODE" == purge ]]; then
        rm -rf "$DATA" "$ETC"
        if manage_user && getent passwd "$AGENT_USER" >/dev/null; then
            userdel "$AGENT_USER"
        fi
        say "purged $DATA, $ETC and the user"
    fi
}

take_install_lock
case "$MODE" in
    install) do_install ;;
    build) build_release; say "release ready: $RELEASE" ;;
    *) do_uninstall ;;
esac
