#!/usr/bin/env bash
# Upgrades an installed agent to this checkout: backup, stop, new venv, migrate, start, health check.
# Any failure rolls back: the previous venv comes back and the database is restored from the backup just taken.
#
#   sudo scripts/upgrade.sh
#   scripts/upgrade.sh --prefix /tmp/root --no-restart     (tests: a throwaway root, no systemctl)
set -euo pipefail

SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=""
RESTART=1
PASS=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX="${2%/}"; PASS+=(--prefix "$PREFIX"); shift 2 ;;
        --python) PASS+=(--python "$2"); shift 2 ;;
        --no-restart) RESTART=0; shift ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "upgrade.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

OPT="$PREFIX/opt/edge-agent"
VENV="$OPT/venv"
PREVIOUS="$OPT/venv.previous"
CONFIG="$PREFIX/etc/edge/edge.toml"
HEALTH_WAIT_S="${EDGE_HEALTH_WAIT_S:-60}"

say() { echo "upgrade.sh: $*"; }

if [[ ! -x "$VENV/bin/edge" ]]; then
    echo "upgrade.sh: no installed agent in $OPT; run scripts/install.sh first" >&2
    exit 1
fi

BACKUP="$("$VENV/bin/edge" backup --config "$CONFIG" | sed -n 's/^backup written: //p')"
[[ -f "$BACKUP" ]] || { echo "upgrade.sh: backup failed; nothing changed" >&2; exit 1; }
say "backup $BACKUP"

rollback() {
    say "FAILED ($1): rolling back"
    if [[ $RESTART -eq 1 ]]; then systemctl stop edge-agent.service || true; fi
    rm -rf "$VENV"
    mv "$PREVIOUS" "$VENV"  # back at its own path, so its scripts' shebangs are right again
    "$VENV/bin/edge" restore "$BACKUP" --config "$CONFIG"
    if [[ $RESTART -eq 1 ]]; then systemctl start edge-agent.service || true; fi
    say "rolled back to the previous version and the database of $BACKUP"
    exit 1
}

if [[ $RESTART -eq 1 ]]; then systemctl stop edge-agent.service; fi
rm -rf "$PREVIOUS"
mv "$VENV" "$PREVIOUS"
"$SOURCE/scripts/install.sh" --no-start "${PASS[@]}" || rollback "install"
"$VENV/bin/edge" migrate --config "$CONFIG" || rollback "migrate"

if [[ $RESTART -eq 1 ]]; then
    systemctl start edge-agent.service || rollback "start"
    deadline=$((SECONDS + HEALTH_WAIT_S))
    until "$VENV/bin/edge" health --config "$CONFIG" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || rollback "not healthy within ${HEALTH_WAIT_S}s"
        sleep 2
    done
fi
rm -rf "$PREVIOUS"
say "upgraded to $("$VENV/bin/python" -I -c 'import importlib.metadata as m; print(m.version("edge-agent"))')"
