#!/usr/bin/env bash
# Runs the whole test suite (scripts/test.sh, arguments passed on) from a copy of this checkout
# in a scratch directory with nothing beside it, so the tests prove they need nothing outside
# the repository (no ../shared). CI runs the suite this way.
#
# The copy builds into this checkout's target directory, so no dependency is compiled twice.
# The crate itself must be compiled again, from the copy's path: its tests find their files
# through env!("CARGO_MANIFEST_DIR"), which cargo does not count as a reason to rebuild. A
# per-package profile setting that changes nothing else gives the copy's artifacts names of
# their own, so they sit beside this checkout's instead of replacing them.
set -euo pipefail
cd "$(dirname "$0")/.."

target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/repo"
# What a clone holds, plus files not committed yet (and not ignored). Fresh modification times
# (--touch) make cargo compile the crate from this copy even when an earlier copy, elsewhere,
# left artifacts of the same name.
git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null \
    | tar --touch -xf - -C "$scratch/repo"
echo "testing a copy in $scratch/repo; beside it: $(ls "$scratch")"

cd "$scratch/repo"
CARGO_TARGET_DIR="$target" scripts/test.sh \
    --config 'profile.dev.package.cloudtrail-inspector.codegen-units = 255' "$@"
