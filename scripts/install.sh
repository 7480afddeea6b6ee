#!/usr/bin/env bash
# Installs the edge agent as a systemd service: program in /opt/edge-agent, user edge, /var/lib/edge, /etc/edge.
# Idempotent: a second run changes nothing. --uninstall keeps the data and config; --purge removes them too.
#
#   sudo scripts/install.sh                 install or repair (never overwrites /etc/edge/edge.toml)
#   sudo scripts/install.sh --uninstall     stop and remove the service and the program; keep data and config
#   sudo scripts/install.sh --purge         also remove /var/lib/edge, /etc/edge and the user
#   scripts/install.sh --prefix /tmp/root   everything under a throwaway root (tests); no user, no systemctl
#   scripts/install.sh --build-only         only build this version beside the program in use (upgrade.sh does)
#
# Each version is a venv of its own in /opt/edge-agent/releases/, built beside the one in use; /opt/edge-agent/current
# switches to it in one rename (see scripts/lib.sh). To upgrade a running box, use scripts/upgrade.sh.
# EDGE_PIP_ARGS adds pip options (e.g. "--no-index --find-links /media/usb/wheels" on a box without internet).
set -euo pipefail

SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=""
MODE=install
START=1
PYTHON="${PYTHON:-python3}"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX="${2%/}"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --uninstall) MODE=uninstall; shift ;;
        --purge) MODE=purge; shift ;;
        --no-start) START=0; shift ;;  # upgrade.sh starts the agent itself, after migrating
        --build-only) MODE=build; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/lib.sh
source "$SOURCE/scripts/lib.sh"

# Only on the real root: a --prefix run must never touch this machine's users or services.
real_root() { [[ -z "$PREFIX" ]]; }
have_systemd() { real_root && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; }

# Sets RELEASE to this checkout's release directory, built unless a complete one is there already. A build cut
# short (no completion mark: a dropped SSH session during pip) is thrown away and done again.
build_release() {
    RELEASE="$RELEASES/$(release_id)"
    if [[ -f "$RELEASE/$COMPLETE" ]]; then
        return
    fi
    rm -rf "$RELEASE"
    mkdir -p "$RELEASES"
    "$PYTHON" -m venv "$RELEASE"
    # shellcheck disable=SC2086  # EDGE_PIP_ARGS is a list of options on purpose
    "$RELEASE/bin/pip" install --quiet --disable-pip-version-check ${EDGE_PIP_ARGS:-} "$SOURCE"
    sync -f "$RELEASE"  # on disk before it counts as complete: a power cut must not leave a marked, empty venv
    touch "$RELEASE/$COMPLETE"
    say "installed edge-agent $(source_version) in $RELEASE"
}

do_install() {
    if real_root && [[ $EUID -ne 0 ]]; then
        echo "install.sh: run as root (sudo), or use --prefix DIR" >&2
        exit 1
    fi
    if real_root && ! getent passwd edge >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/edge --no-create-home --shell /usr/sbin/nologin edge
        say "created user edge"
    fi
    if real_root; then
        for group in lp dialout; do
            if getent group "$group" >/dev/null && ! id -nG edge | tr ' ' '\n' | grep -qx "$group"; then
                usermod -aG "$group" edge
                say "added edge to group $group"
            fi
        done
    fi

    mkdir -p "$OPT" "$DATA" "$ETC" "$UNITS"
    chmod 0750 "$DATA"
    if real_root; then
        chown edge:edge "$DATA"
    fi

    local previous
    previous="$(current_target)"
    build_release
    if switch_current "releases/${RELEASE##*/}"; then
        prune_releases "$previous"
    fi
    put "$SOURCE/README.md" "$OPT/README.md" 0644

    # The config is the technician's: written once from the example, never overwritten.
    if [[ ! -f "$ETC/edge.toml" ]]; then
        install -m 0600 "$SOURCE/edge.example.toml" "$ETC/edge.toml"
        say "wrote $ETC/edge.toml from the example: set store_id, printers and the token"
    fi
    if [[ ! -f "$ETC/edge.env" ]]; then
        install -m 0600 /dev/null "$ETC/edge.env"
        echo "# Secrets as EDGE_<SECTION>_<KEY>=value, e.g. EDGE_API_TOKEN=..., EDGE_SMTP_PASSWORD=..." > "$ETC/edge.env"
        say "wrote $ETC/edge.env (secrets go here)"
    fi
    if real_root; then
        # The agent (user edge) reads its config; only systemd (root) reads the secrets file.
        chown edge:edge "$ETC/edge.toml"
        chown root:root "$ETC/edge.env"
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
    rm -rf "$OPT"
    say "removed the program and the units; kept $DATA and $ETC"
    if [[ "$MODE" == purge ]]; then
        rm -rf "$DATA" "$ETC"
        if real_root && getent passwd edge >/dev/null; then
            userdel edge
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
