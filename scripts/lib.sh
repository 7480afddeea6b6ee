# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by install.sh and upgrade.sh
# Shared by install.sh and upgrade.sh (sourced, not run): paths, messages, durable file writes, the program's releases.
#
# The program: each version is a venv of its own in $OPT/releases/<version>-<source hash>, built beside the one in
# use and marked complete only once pip succeeded. $OPT/current points at the one in use (the units start
# $OPT/current/bin/edge) and is switched with one rename, so whatever interrupts an install or an upgrade, the
# program in use is whole: the old one or the new one. A box installed before releases existed has its program in
# $OPT/venv; that directory is left where it is (its scripts name it) until an upgrade no longer needs it.

OPT="$PREFIX/opt/edge-agent"
CURRENT="$OPT/current"
RELEASES="$OPT/releases"
LEGACY_VENV="$OPT/venv"
DATA="$PREFIX/var/lib/edge"
ETC="$PREFIX/etc/edge"
UNITS="$PREFIX/etc/systemd/system"
COMMAND="$PREFIX/usr/local/bin/edge"  # the `edge` on PATH: a link to $CURRENT/bin/edge, so it follows every switch
UNIT_FILES=(edge-agent.service edge-health-check.service edge-health-check.timer edge-backup.service edge-backup.timer)
TIMERS=(edge-health-check.timer edge-backup.timer)
COMPLETE=".edge-release-complete"
ME="$(basename "$0")"

say() { echo "$ME: $*" 2>/dev/null || true; }  # a dropped SSH session must not stop a rollback half way

# Renames the file $1 to $2 so that a power cut leaves $2 whole (the old or the new one): $1's data synced before the
# rename (ext4 may otherwise keep the rename and lose the data: an empty $2; its auto_da_alloc covers only a rename over
# an existing file), the directory synced after it (else the rename itself may be lost). `sync FILE` fsyncs FILE.
durable_mv() {
    sync "$1"
    mv -f "$1" "$2"
    sync "$(dirname "$2")"
}

# Copies only when the content differs, so a second run leaves every file (and its mtime) alone; through a temporary
# file and a durable rename, so neither an interrupted copy nor a power cut leaves half (or none) of a unit file.
put() {
    local src="$1" dst="$2" mode="$3"
    if [[ -f "$dst" ]] && cmp -s "$src" "$dst"; then
        return
    fi
    mkdir -p "$(dirname "$dst")"
    install -m "$mode" "$src" "$dst.new.$$"
    durable_mv "$dst.new.$$" "$dst"
    say "wrote $dst"
}

version_of() {  # $1: a release (venv) directory
    "$1/bin/python" -I -c 'import importlib.metadata as m; print(m.version("edge-agent"))' 2>/dev/null || true
}

source_version() {
    sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SOURCE/edge/__init__.py" | head -1
}

# Why this box needs evdev, the optional part (pip extra) hid scanners are read through; nothing when it does not. A
# scanner with type = "hid" in the config; or the program in use has evdev (put in by hand, or for a scanner set up
# before): what worked keeps working after an upgrade. A config that does not parse asks for nothing: the
# agent's own check names its error.
hid_wanted() {
    local in_use
    if "$PYTHON" - "$ETC/edge.toml" <<'PY'; then
import sys
import tomllib

try:
    with open(sys.argv[1], "rb") as f:
        scanners = tomllib.load(f).get("scanners", {})
except (OSError, tomllib.TOMLDecodeError):
    scanners = {}
hid = isinstance(scanners, dict) and any(isinstance(s, dict) and s.get("type") == "hid" for s in scanners.values())
sys.exit(0 if hid else 1)
PY
        echo "a scanner with type = \"hid\" in $ETC/edge.toml"
        return
    fi
    in_use="$(current_target)"
    # -I: the release's own packages only, not a PYTHONPATH of the caller's
    if [[ -n "$in_use" ]] &&
        "$OPT/$in_use/bin/python" -I -c 'import importlib.metadata as m; m.distribution("evdev")' 2>/dev/null; then
        echo "the program in use ($OPT/$in_use) has it"
    fi
}

# Version plus a hash of what gets installed: a rebuilt checkout of the same version is a release of its own; one
# with evdev is named +hid, so the install.sh run after a hid scanner is added to the config builds it.
release_id() {
    local hash
    hash="$(cd "$SOURCE" && find pyproject.toml README.md edge migrations -type f ! -name '*.pyc' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
    echo "$(source_version)-$hash${HID_WANTED:++hid}"
}

# The program in use: a path relative to $OPT (releases/<id>, or venv on a box from before releases), or nothing.
current_target() {
    if [[ -L "$CURRENT" ]]; then
        readlink "$CURRENT"
    elif [[ -x "$LEGACY_VENV/bin/edge" ]]; then
        echo venv
    fi
}

# Points $CURRENT at $1 (relative to $OPT) in one rename, synced (the next boot starts what it points at, and the
# database a program migrates must not outlive the switch to it); returns 1 when it pointed there already.
switch_current() {
    [[ "$(readlink "$CURRENT" 2>/dev/null)" == "$1" ]] && return 1
    ln -sfn "$1" "$OPT/.current.new.$$"
    mv -T "$OPT/.current.new.$$" "$CURRENT"
    sync "$OPT"
    say "program in use: $OPT/$1"
}

# Only one install or upgrade at a time; upgrade.sh holds the lock for the install.sh it runs.
take_install_lock() {
    if [[ -n "${EDGE_INSTALL_LOCK_HELD:-}" ]]; then
        return
    fi
    mkdir -p "$OPT"
    exec 9>>"$OPT/.install.lock"
    if ! flock -n 9; then
        echo "$ME: another install.sh or upgrade.sh is running on $OPT; wait for it to finish" >&2
        exit 1
    fi
    export EDGE_INSTALL_LOCK_HELD=1
    remove_leftovers
}

# The temporary files put(), switch_current() and the config writes leave when a run is cut off before their rename
# (a power cut, a killed SSH session). Under the install lock no other run owns one; a new run has a new PID, so
# nothing else would ever remove them (one in /etc/edge may hold a token).
remove_leftovers() {
    local left
    for left in "$ETC"/.edge.*.new.* "$OPT"/*.new.* "$OPT"/.current.new.* "$UNITS"/edge-*.new.* \
        "${COMMAND%/*}"/.edge.new.*; do
        if [[ -e "$left" || -L "$left" ]]; then
            rm -f "$left"
            say "removed $left, left by an install or upgrade that was cut off"
        fi
    done
}

# Removes every release but the one in use and $1 (the previous one, kept for a rollback), a legacy venv included.
prune_releases() {
    local keep_previous="${1:-}" in_use dir
    in_use="$(current_target)"
    for dir in "$RELEASES"/* "$LEGACY_VENV"; do
        [[ -e "$dir" ]] || continue
        case "${dir#"$OPT"/}" in
            "$in_use" | "$keep_previous") ;;
            *) rm -rf "$dir" && say "removed $dir" ;;
        esac
    done
}
