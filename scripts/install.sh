#!/usr/bin/env bash
# Installs the edge agent as a systemd service: venv in /opt/edge-agent, user edge, /var/lib/edge, /etc/edge.
# Idempotent: a second run changes nothing. --uninstall keeps the data and config; --purge removes them too.
#
#   sudo scripts/install.sh                 install or repair (never overwrites /etc/edge/edge.toml)
#   sudo scripts/install.sh --uninstall     stop and remove the service and the program; keep data and config
#   sudo scripts/install.sh --purge         also remove /var/lib/edge, /etc/edge and the user
#   scripts/install.sh --prefix /tmp/root   everything under a throwaway root (tests); no user, no systemctl
#
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
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

OPT="$PREFIX/opt/edge-agent"
VENV="$OPT/venv"
DATA="$PREFIX/var/lib/edge"
ETC="$PREFIX/etc/edge"
UNITS="$PREFIX/etc/systemd/system"
UNIT_FILES=(edge-agent.service edge-health-check.service edge-health-check.timer edge-backup.service edge-backup.timer)
TIMERS=(edge-health-check.timer edge-backup.timer)

say() { echo "install.sh: $*"; }

# Only on the real root: a --prefix run must never touch this machine's users or services.
real_root() { [[ -z "$PREFIX" ]]; }
have_systemd() { real_root && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; }

# Copies only when the content differs, so a second run leaves every file (and its mtime) alone.
put() {
    local src="$1" dst="$2" mode="$3"
    if [[ -f "$dst" ]] && cmp -s "$src" "$dst"; then
        return
    fi
    install -D -m "$mode" "$src" "$dst"
    say "wrote $dst"
}

installed_version() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -I -c 'import importlib.metadata as m; print(m.version("edge-agent"))' 2>/dev/null || true
}

source_version() {
    sed -n 's/^version = "\(.*\)"/\1/p' "$SOURCE/pyproject.toml" | head -1
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

    if [[ ! -x "$VENV/bin/python" ]]; then
        "$PYTHON" -m venv "$VENV"
        say "created $VENV"
    fi
    local want have
    want="$(source_version)"
    have="$(installed_version)"
    if [[ "$have" != "$want" ]]; then
        # shellcheck disable=SC2086  # EDGE_PIP_ARGS is a list of options on purpose
        "$VENV/bin/pip" install --quiet --disable-pip-version-check ${EDGE_PIP_ARGS:-} "$SOURCE"
        say "installed edge-agent $want (was: ${have:-none})"
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

if [[ "$MODE" == install ]]; then
    do_install
else
    do_uninstall
fi
