#!/usr/bin/env bash
# Runs README's walk-through as written: the shell blocks marked `<!-- walkthrough -->`, in
# order, in one shell, in a scratch directory that sees the checkout's samples/ and target/.
# Two changes only, both to save CI a release build: `cargo build --release` is done here as
# the debug build the tests already made, and `target/release` is `target/debug`. curl fails
# on HTTP errors (--fail-with-body), so a refused request stops the walk-through. The
# service's port 8080 is the README's, in a network namespace of its own when one can be made
# (as root), so nothing else on the machine can hold it. Needs jq, installed if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

if ! command -v jq >/dev/null 2>&1; then
    echo "installing jq (the walk-through reads JSON with it)" >&2
    (apt-get install -y -qq jq >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq jq; }) >&2
fi
cargo build --quiet --bin cloudtrail-inspector

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$repo/samples" "$work/samples"
ln -s "$repo/target" "$work/target"

# The marked blocks, each the ```sh fence after a marker.
blocks="$(awk '
    /^<!-- walkthrough -->$/ { marked = 1; next }
    marked && /^```sh$/ { inside = 1; marked = 0; n++; print "echo \"== walk-through block " n "\" >&2"; next }
    inside && /^```$/ { inside = 0; next }
    inside { print }
' README.md)"
count="$(grep -c '^<!-- walkthrough -->$' README.md)"
[ "$count" -ge 4 ] || { echo "README has $count walk-through blocks" >&2; exit 1; }
grep -q '^cargo build --release ' <<<"$blocks" || { echo "the walk-through no longer builds with cargo build --release" >&2; exit 1; }
blocks="$(sed -e 's|^cargo build --release |true |' -e 's|target/release|target/debug|g' <<<"$blocks")"

cat >"$work/walkthrough.sh" <<SCRIPT
set -euo pipefail
# Fail on HTTP errors, unless the step chose how (curl refuses -f with --fail-with-body).
curl() {
    case " \$* " in *" -f"*|*" --fail"*) command curl "\$@" ;; *) command curl --fail-with-body "\$@" ;; esac
}
# Whatever the walk-through left running ends with it, also when a step fails.
trap 'kill \$(jobs -p) 2>/dev/null || true; wait' EXIT
$blocks
SCRIPT

# stderr goes through a pipe, not straight to a file: the steps write headers to /dev/stderr,
# and opening a file there again would truncate it.
netns=""
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    netns="unshare -n"
fi
status=0
(
    cd "$work"
    if [ -n "$netns" ]; then
        { unshare -n bash -c 'ip link set lo up 2>/dev/null || true; exec bash walkthrough.sh' 2>&1 1>&3 \
            | cat >err.txt; exit "${PIPESTATUS[0]}"; } 3>out.txt
    else
        { bash walkthrough.sh 2>&1 1>&3 | cat >err.txt; exit "${PIPESTATUS[0]}"; } 3>out.txt
    fi
) || status=$?
if [ "$status" -ne 0 ]; then
    echo "the walk-through failed (exit $status); its output:" >&2
    cat "$work/out.txt" "$work/err.txt" >&2
    echo "the service's log:" >&2
    tail -20 "$work/cti.log" >&2 || true
    exit 1
fi

# What README says the steps show.
check() { jq -e "$2" "$work/$1" >/dev/null || { echo "walk-through: $1 does not satisfy $2:" >&2; cat "$work/$1" >&2; exit 1; }; }
check inspection.json '.name == "sample" and .source.kind == "files"'
check run.json '.status == "succeeded" and .records_scanned == 2000 and .clusters_new > 0'
grep -q 'location: /api/v1/inspections/' "$work/err.txt" || { echo "no Location of the new inspection shown" >&2; exit 1; }
grep -q 'location: /api/v1/runs/' "$work/err.txt" || { echo "no Location of the started run shown" >&2; exit 1; }
grep -q '"clusters_new": 0' "$work/out.txt" || { echo "the dry run found new clusters" >&2; exit 1; }
if grep -q '"level":"ERROR"\| ERROR ' "$work/cti.log"; then
    echo "the service logged errors:" >&2
    cat "$work/cti.log" >&2
    exit 1
fi
echo "README walk-through: $count blocks ran as written${netns:+ (in a network namespace of their own)}"
