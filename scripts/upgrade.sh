#!/usr/bin/env bash
# Upgrades an installed agent to this checkout: build beside, check the config, stop, back up, switch, migrate, start,
# health check. Any failure or interruption (Ctrl-C, a dropped SSH session, kill) rolls back: the new version migrates
# the database back down (every order it acknowledged stays, and what it printed is not printed again), the previous
# program and unit files come back and the previous agent starts (the last line says so if it does not). After a
# SIGKILL or a power cut the box runs the old or the new version, and the next run finishes the rollback first, then
# upgrades. Each step is also logged to /var/log/edge-upgrade.log.
#
#   sudo scripts/upgrade.sh
#   scripts/upgrade.sh --prefix /tmp/root [--no-restart]   (tests: a throwaway root; its services are handled by the
#                                                           first `systemctl` and `journalctl` on PATH, simulators)
set -euo pipefail
trap '' PIPE  # output to a closed SSH session must not kill a rollback

SOURCE="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=""
RESTART=1
PASS=()
PYTHON="${PYTHON:-python3}"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX="${2%/}"; PASS+=(--prefix "$PREFIX"); shift 2 ;;
        --python) PYTHON="$2"; PASS+=(--python "$2"); shift 2 ;;
        --no-restart) RESTART=0; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "upgrade.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/lib.sh
source "$SOURCE/scripts/lib.sh"

CONFIG="$ETC/edge.toml"
STATE="$OPT/upgrade"  # while an upgrade is under way: its journal and the unit files it replaced
JOURNAL="$STATE/journal"
LOG="$PREFIX/var/log/edge-upgrade.log"
HEALTH_WAIT_S="${EDGE_HEALTH_WAIT_S:-60}"
STEP=start-up
NEW_VERSION="$(source_version)"
WHY=""  # the failed step's last line, for the last line a technician reads (a full card: what to make room on)

# The edge commands run here see the config as the agent's unit gives it: no EDGE_* variable but those of edge.env,
# which they read beside the config themselves (the unit's EnvironmentFile=). One of the caller's passed checks the
# agent then failed under the unit: EDGE_ENV_FILE, exported here before, skipped the refusal of secrets left in the
# old /etc/edge/.env, and the new version was found broken only after the old one had stopped.
AS_THE_UNIT=(env)
for name in $(compgen -e); do
    if [[ "$name" == EDGE_* ]]; then
        AS_THE_UNIT+=(-u "$name")
    fi
done

edge_cmd() {  # $1: a program directory; the rest: an edge command, on the config, as the unit runs the agent
    local program="$1"
    shift
    "${AS_THE_UNIT[@]}" "$program/bin/edge" "$@" --config "$CONFIG"
}

# What the agent said as it failed since $1 (seconds since 1970): its own last "edge: ..." line from the unit's log (a
# refusal names its cause and fix), else the last line of $2 (systemd's "Job for ... failed", which names neither).
agent_said() {
    local said
    said="$(journalctl _SYSTEMD_UNIT=edge-agent.service --since "@$1" -o cat --no-pager 2>/dev/null |
        grep '^edge: ' | tail -n 1)" || true
    echo "${said:-${2##*$'\n'}}"
}

log() {
    say "$*"
    { mkdir -p "${LOG%/*}" && echo "$(date -u +%FT%TZ) $*" >>"$LOG"; } 2>/dev/null || true
}

service() {  # systemctl, when this run manages the services
    if [[ $RESTART -eq 1 ]]; then
        systemctl "$@"
    fi
}

uptime_s() {  # seconds since boot: deadlines must not move when NTP steps the clock
    local up
    read -r up _ </proc/uptime
    echo "${up%.*}"
}

# journal KEY=VALUE...: what a rollback needs, written whole at every step (temporary file, fsync, rename, directory
# fsync: a power cut leaves the previous journal or this one, never an empty one).
journal() {
    local pair
    for pair in "$@"; do
        printf -v "${pair%%=*}" '%s' "${pair#*=}"
    done
    {
        for pair in OLD_TARGET OLD_VERSION OLD_SCHEMA NEW NEW_VERSION BACKUP STARTED STEP; do
            printf '%s=%q\n' "$pair" "${!pair}"
        done
    } >"$JOURNAL.new"
    durable_mv "$JOURNAL.new" "$JOURNAL"
}

JOURNAL_KEYS=(OLD_TARGET OLD_VERSION OLD_SCHEMA NEW NEW_VERSION BACKUP STARTED STEP)

# Sets the journal's keys, read as data, not run (a power cut may have left any text there); returns 1 and sets
# nothing unless it holds every key a rollback needs, each on a whole line, and names a program to go back to. Before
# journal() synced, a power cut soon after the first write (step stop) could leave it empty or cut short.
read_journal() {
    local line key value
    local -A found=()
    while IFS= read -r line; do  # a last line without its newline was cut short: not read
        key="${line%%=*}"
        value="${line#*=}"
        [[ "$line" == *=* && "$key" =~ ^[A-Z_]+$ && " ${JOURNAL_KEYS[*]} " == *" $key "* ]] || return 1
        if [[ "$value" == "''" ]]; then  # printf %q of an empty value
            value=""
        elif [[ "$value" == *[\'\"\$\`]* ]]; then
            return 1  # not a value journal() writes for our paths, versions and numbers
        else
            # shellcheck disable=SC2162  # without -r: read undoes the backslashes printf %q puts before blanks
            IFS= read value <<<"$value"
        fi
        found[$key]="$value"
    done <"$JOURNAL"
    for key in "${JOURNAL_KEYS[@]}"; do
        [[ -v "found[$key]" ]] || return 1
    done
    [[ -n "${found[OLD_TARGET]}" && -d "$OPT/${found[OLD_TARGET]}" && -n "${found[NEW]}" ]] || return 1
    [[ "${found[OLD_SCHEMA]}" =~ ^[0-9]+$ && "${found[STARTED]}" =~ ^[01]$ ]] || return 1
    for key in "${JOURNAL_KEYS[@]}"; do
        printf -v "$key" '%s' "${found[$key]}"
    done
}

step() {
    journal "STEP=$1"
    log "step: $1"
}

save_units() {
    local unit saved=()
    rm -rf "$STATE/units"
    mkdir -p "$STATE/units"
    for unit in "${UNIT_FILES[@]}"; do
        if [[ -f "$UNITS/$unit" ]]; then
            cp -p "$UNITS/$unit" "$STATE/units/$unit"
            saved+=("$STATE/units/$unit")
        fi
    done
    # On disk before the journal a rollback restores them by: else a power cut can leave them empty, and the rollback
    # would put empty unit files in place of the old ones.
    sync "${saved[@]}" "$STATE/units" "$STATE"
}

restore_units() {
    local unit
    for unit in "${UNIT_FILES[@]}"; do
        if [[ -f "$STATE/units/$unit" ]]; then
            put "$STATE/units/$unit" "$UNITS/$unit" 0644
        else
            rm -f "$UNITS/$unit"  # one the new version added
        fi
    done
    service daemon-reload || true
}

# Starts the agent a rollback leaves installed (edge-agent $1) and its timer. When it does not start either, the box
# takes no orders: the last line says so with the agent's reason, and the script ends with exit 1 (before, it ended
# "rolled back: ... is installed again, with every order" over a box left down).
start_again() {
    local since started
    since="$(date +%s)"
    started="$(service start edge-agent.service edge-health-check.timer 2>&1)" && return
    echo "$started"
    rm -rf "$STATE"
    log "THE BOX IS DOWN, it takes no orders: edge-agent $1 is installed, with every order, but does not start:" \
        "$(agent_said "$since" "$started"); fix that, then run: systemctl start edge-agent.service" \
        "edge-health-check.timer (its log: journalctl -u edge-agent.service)"
    trap - EXIT
    exit 1
}

because() {
    if [[ -n "$WHY" ]]; then
        echo "; it failed on: $WHY"
    fi
}

# The database cannot go back down (and the new version took orders after the backup, or it cannot be restored): the
# new version stays, with all of them.
keep_new() {
    local orders="with every order it took"
    if [[ "$STARTED" != 1 ]]; then
        orders="(it had not run: it starts now, on the schema it migrated to)"
    fi
    log "ROLLBACK NOT POSSIBLE ($1): edge-agent $NEW_VERSION stays installed $orders$(because);" \
        "see the messages above, fix the cause and run upgrade.sh again"
    start_again "$NEW_VERSION"
    rm -rf "$STATE"
}

# Back to OLD_TARGET without losing an order: the new version migrates the database down (its own down parts), so rows
# it wrote stay; one still at OLD_SCHEMA (a climb fails whole) it leaves unwritten, so this works on a full card too.
# Restoring the backup is the last resort, and only when the new version never ran: nothing was acknowledged after it
# was taken, since the agent was stopped. Every step may be interrupted again, so each leaves a box that starts: the
# old or the new program, with the schema that program migrates to by itself.
rollback() {
    trap '' HUP INT TERM
    set +e
    if [[ "$STEP" == stop || "$STEP" == backup ]]; then
        # Nothing switched and the database untouched (a backup only reads it): the old version starts as it was. The
        # new one is not asked to migrate down: it may refuse the very config its backup refused ("ROLLBACK NOT
        # POSSIBLE ... stays installed" was said of a version never switched to).
        start_again "$OLD_VERSION"
        rm -rf "$STATE"
        log "stopped at step $STEP ($1) before anything was changed; edge-agent $OLD_VERSION runs as before$(because)"
        return
    fi
    log "FAILED at step $STEP ($1): rolling back to edge-agent $OLD_VERSION$(because)"
    service stop edge-agent.service
    if [[ -f "$NEW/$COMPLETE" ]] && ! edge_cmd "$NEW" migrate --to "$OLD_SCHEMA" --no-backup; then
        if [[ "$STARTED" != 1 && -f "$BACKUP" ]] && edge_cmd "$OPT/$OLD_TARGET" restore "$BACKUP"; then
            log "the database could not be migrated down; restored $BACKUP (taken after the agent stopped)"
        else
            keep_new "the database cannot be migrated back to schema $OLD_SCHEMA"
            return
        fi
    fi
    switch_current "$OLD_TARGET" || true
    restore_units
    start_again "$OLD_VERSION"
    rm -rf "$STATE"
    log "rolled back: edge-agent $OLD_VERSION is installed again, with every order$(because)"
}

on_exit() {
    local status=$?
    trap '' HUP INT TERM  # a second Ctrl-C must not cut the rollback short
    if [[ $status -ne 0 && -f "$JOURNAL" ]]; then
        rollback "exit $status"
    elif [[ $status -ne 0 ]]; then
        log "stopped at step $STEP (exit $status) before anything was changed; the agent runs as before$(because)"
    fi
}

trap on_exit EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

take_install_lock  # (a second upgrade waits for nobody: it refuses)
mkdir -p "$STATE"
if [[ -f "$JOURNAL" ]] && read_journal; then
    # Since that kill or power cut the box may have run (the next boot starts the old or the new program) and
    # acknowledged orders: the backup, taken before them, is never restored over them, whatever the journal says.
    STARTED=1
    rollback "interrupted by a kill or a power cut"
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
    set -e
elif [[ -f "$JOURNAL" ]]; then
    # Left by an upgrade.sh from before journal() synced, cut by a power cut soon after its first write (step stop:
    # the build done, the agent being stopped, nothing switched). A journal lost from a later step leaves no worse: the
    # program in use is whole (one rename switches it, synced before the migration) and migrates the database to its
    # own schema at start. So: that program stays and starts, and the upgrade goes on from it.
    log "the journal of an interrupted upgrade ($JOURNAL) is empty or cut short (a power cut soon after it was" \
        "written): nothing to roll back by; the program in use stays ($OPT/$(current_target)) and the upgrade goes on"
    rm -rf "$STATE"
    service start edge-agent.service edge-health-check.timer || true
fi

NEW_VERSION="$(source_version)"  # this checkout's again: a journal read above named the interrupted upgrade's
OLD_TARGET="$(current_target)"
if [[ -z "$OLD_TARGET" ]]; then
    echo "upgrade.sh: no installed agent in $OPT; run scripts/install.sh first" >&2
    exit 1
fi
OLD_VERSION="$(version_of "$OPT/$OLD_TARGET")"
# The schema the old version left (it migrates to its latest at start): where a rollback migrates back down to.
OLD_SCHEMA="$(find "$OPT/$OLD_TARGET/share/edge-agent/migrations" -name '[0-9][0-9][0-9]_*.sql' | wc -l)"
HID_WANTED="$(hid_wanted)"  # as install.sh decides it below: the program in use is still the old one
NEW="$RELEASES/$(release_id)"
BACKUP=""
STARTED=0

if [[ "$OPT/$OLD_TARGET" -ef "$NEW" ]]; then
    service start edge-agent.service edge-health-check.timer
    log "edge-agent $NEW_VERSION is installed already"
    exit 0
fi

# A checkout older than the program in use (a technician going back by its upgrade.sh) knows fewer migrations than
# the database has: it cannot run on it, and the database cannot go down without the newer program's down parts. So it
# stops here, before the agent is stopped or anything switched (a power cut at its migrate left a box that refused to
# start at every boot).
NEW_SCHEMA="$(find "$SOURCE/migrations" -name '[0-9][0-9][0-9]_*.sql' | wc -l)"
if ((NEW_SCHEMA < OLD_SCHEMA)); then
    log "this checkout is edge-agent $NEW_VERSION (database schema $NEW_SCHEMA), older than edge-agent $OLD_VERSION in" \
        "use (schema $OLD_SCHEMA), and cannot run on its database; nothing was changed"
    trap - EXIT
    exit 1
fi

STEP=build
log "step: build (edge-agent $NEW_VERSION beside $OLD_VERSION, which keeps running)"
if ! built="$("$SOURCE/scripts/install.sh" --build-only "${PASS[@]}" 2>&1)"; then
    echo "$built"
    WHY="${built##*$'\n'}"  # e.g. what to install for evdev to build: the last line says it
    exit 1
fi
echo "$built" 2>/dev/null || true

# The new version's verdict on the config, as its unit will start it, while the old agent still runs: a refusal (e.g.
# secrets left in the old /etc/edge/.env) stops here with its line, before anything is stopped or changed.
STEP=check
log "step: check (the config, as edge-agent $NEW_VERSION will start on it)"
if ! checked="$(edge_cmd "$NEW" config check 2>&1)"; then
    echo "$checked"
    WHY="${checked##*$'\n'}"
    exit 1
fi
echo "$checked" 2>/dev/null || true

save_units
step stop
service stop edge-health-check.timer edge-agent.service

step backup
if ! written="$(edge_cmd "$NEW" backup 2>&1)" ||
    ! BACKUP="$(sed -n 's/^backup written: //p' <<<"$written")" || [[ ! -f "$BACKUP" ]]; then
    echo "$written"
    WHY="${written##*$'\n'}"
    log "backup failed (see above); not upgrading"
    exit 1
fi
echo "$written" 2>/dev/null || true
journal "BACKUP=$BACKUP"
log "backup $BACKUP"

step install
"$SOURCE/scripts/install.sh" --no-start "${PASS[@]}"

step migrate
if ! migrated="$(edge_cmd "$CURRENT" migrate 2>&1)"; then
    echo "$migrated"
    WHY="${migrated##*$'\n'}"
    exit 1
fi
echo "$migrated" 2>/dev/null || true  # a dropped SSH session: the upgrade goes on

if [[ $RESTART -eq 1 ]]; then
    journal STARTED=1  # from here on the new version may acknowledge orders: never restore the backup
    step start
    since="$(date +%s)"  # the agent's lines from here on say why it fails
    if ! started="$(service start edge-agent.service 2>&1)"; then
        echo "$started"
        WHY="$(agent_said "$since" "$started")"
        exit 1
    fi
    step health
    deadline=$(($(uptime_s) + HEALTH_WAIT_S))
    until answer="$(edge_cmd "$CURRENT" health 2>&1)"; do
        if (($(uptime_s) >= deadline)); then
            WHY="$(agent_said "$since" "$answer")"  # one that stopped says why; one that runs, what /ready fails on
            log "not healthy within ${HEALTH_WAIT_S}s: ${answer##*$'\n'}"
            exit 1
        fi
        sleep 1
    done
    service start edge-health-check.timer
fi

rm -rf "$STATE"  # done: from here on nothing rolls back
prune_releases "$OLD_TARGET"
log "upgraded to edge-agent $NEW_VERSION (the previous version stays in $OPT/$OLD_TARGET until the next upgrade)"
