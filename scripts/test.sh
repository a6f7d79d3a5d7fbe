#!/usr/bin/env bash
# Runs every test of vmsh-scheduler: installs what the tests need, checks formatting and
# lints, then runs the unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo deny --offline check bans licenses sources
cargo test --all-targets --locked
