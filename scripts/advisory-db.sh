#!/usr/bin/env bash
# Gets or refreshes the local copy of the RustSec advisory database that
# `cargo deny --offline check advisories` reads (deny.toml, [advisories] db-path).
#
#   scripts/advisory-db.sh            clone or update it from GitHub (where GitHub is reachable)
#   scripts/advisory-db.sh SOURCE     copy it from SOURCE, a git clone of
#                                     https://github.com/RustSec/advisory-db brought over from
#                                     a machine that reaches GitHub (cloned, or unpacked from a
#                                     `git bundle`)
#   scripts/advisory-db.sh --path     print where the copy lives
#
# cargo-deny refuses a copy last fetched more than 90 days ago (maximum-db-staleness in
# deny.toml): run this again to refresh it.
set -euo pipefail

url="https://github.com/RustSec/advisory-db"
# cargo-deny names the folder after the URL's last path segment and a hash of the URL.
dir="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"

case "${1:-}" in
--path)
    echo "$dir"
    ;;
"")
    if [ -d "$dir/.git" ]; then
        git -C "$dir" fetch --quiet origin main
        git -C "$dir" reset --quiet --hard FETCH_HEAD
    else
        mkdir -p "$(dirname "$dir")"
        git clone --quiet --single-branch --branch main "$url" "$dir"
    fi
    echo "advisory database at $dir: $(git -C "$dir" log -1 --format='%h of %cd' --date=short)"
    ;;
*)
    src="$1"
    if ! git -C "$src" rev-parse --verify --quiet HEAD >/dev/null; then
        echo "advisory-db: $src is not a git clone of $url" >&2
        exit 2
    fi
    if [ ! -d "$src/crates" ]; then
        echo "advisory-db: $src has no crates/ folder; is it the RustSec advisory database?" >&2
        exit 2
    fi
    rm -rf "$dir.new"
    mkdir -p "$(dirname "$dir")"
    git clone --quiet --no-hardlinks "$src" "$dir.new"
    rm -rf "$dir"
    mv "$dir.new" "$dir"
    echo "advisory database at $dir: $(git -C "$dir" log -1 --format='%h of %cd' --date=short)"
    ;;
esac
