#!/usr/bin/env bash
# Runs every test of vmsh-scheduler: installs what the tests need, checks formatting and
# lints, then runs the unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# cargo-deny reads every crate of the lock file, for every platform; a fresh cargo home has
# only what a build for this host downloaded.
cargo fetch --locked --quiet
cargo deny --offline check bans licenses sources
advisory_db="$(scripts/advisory-db.sh --path)"
if [ -d "$advisory_db/.git" ]; then
    cargo deny --offline check advisories
else
    echo "advisories: not checked, no local copy of the RustSec database at $advisory_db (get one: scripts/advisory-db.sh)"
fi
cargo test --all-targets --locked
