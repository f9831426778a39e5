#!/usr/bin/env bash
# Installs what the driver scripts need, idempotently:
#   * a virtualenv at <repo>/.venv-drivers with python/requirements.txt;
#   * node/node_modules from node/package-lock.json (`npm ci`).
# Each install leaves a stamp keyed on its pinned file and the interpreter
# version, so a second run with nothing changed does no work and no network
# access. Runs serialised (flock on this file): two test runs, or a test and a
# developer, may call it at once. tests/tests/drivers.rs calls it once per run.
# Progress goes to stderr; stdout stays empty.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=$repo/.venv-drivers
python=${PYTHON:-python3}

if command -v flock >/dev/null 2>&1; then
    exec 9<"$here/setup.sh"
    flock 9
fi

log() { echo "drivers/setup.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# --- Python -----------------------------------------------------------------
command -v "$python" >/dev/null 2>&1 || die "$python not found (need Python 3.9+ with venv and pip)"
req="$here/python/requirements.txt"
py_stamp="$(hash_of "$req")-$("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ "$(cat "$venv/.pgdog-stamp" 2>/dev/null)" != "$py_stamp" ]; then
    log "creating virtualenv $venv"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >&2; then
        rm -rf "$venv"
        die "'$python -m venv' failed; on Debian install python3-venv (.ci/run does)"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" >&2 ||
        die "pip install -r $req failed"
    echo "$py_stamp" >"$venv/.pgdog-stamp"
fi

# --- Node -------------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node not found (need Node.js 18+ with npm)"
command -v npm >/dev/null 2>&1 || die "npm not found"
lock="$here/node/package-lock.json"
node_stamp="$(hash_of "$lock" "$here/node/package.json")-$(node --version)"
if [ "$(cat "$here/node/node_modules/.pgdog-stamp" 2>/dev/null)" != "$node_stamp" ]; then
    log "npm ci in $here/node"
    (cd "$here/node" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2) || die "npm ci failed"
    echo "$node_stamp" >"$here/node/node_modules/.pgdog-stamp"
fi
