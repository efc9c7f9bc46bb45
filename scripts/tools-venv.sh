#!/usr/bin/env bash
# Makes a set of pinned Python tools ready in one virtualenv, exactly as pinned, and prints the
# virtualenv's path. It is built again from nothing when the pins or the Python interpreter
# change. Two sets: scripts/tools-requirements.txt (the default; TOOLS_VENV chooses where,
# default <target dir>/tools-venv), and with the argument `api`
# scripts/api-tools-requirements.txt (API_TOOLS_VENV, default <target dir>/api-tools-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
case "${1:-}" in
    "") req=scripts/tools-requirements.txt venv="${TOOLS_VENV:-$target/tools-venv}" ;;
    api) req=scripts/api-tools-requirements.txt venv="${API_TOOLS_VENV:-$target/api-tools-venv}" ;;
    *) echo "usage: $0 [api]" >&2; exit 2 ;;
esac
stamp="$(python3 --version 2>&1; cat "$req")"

# Lower case, `-` for `_` and `.`: how pip compares names.
pins() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e 's/[[:space:]]//g' | tr 'A-Z_.' 'a-z--' | sed 's/==/ /' | sort; }

if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$stamp" ]; then
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
        echo "$venv exists and is not a virtualenv; choose another place for it" >&2
        exit 1
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$req" >&2
    # --no-deps installs what the file names and nothing more: a dependency the file lacks
    # fails here, rather than being resolved to whatever is newest today.
    "$venv/bin/pip" check >&2 || { echo "$req does not hold a complete dependency set" >&2; exit 1; }
    extra="$(diff <("$venv/bin/pip" freeze --disable-pip-version-check | pins) <(pins <"$req") || true)"
    if [ -n "$extra" ]; then
        echo "the virtualenv $venv differs from $req:" >&2
        echo "$extra" >&2
        exit 1
    fi
    printf '%s' "$stamp" >"$venv/.pins"
fi
echo "$venv"
