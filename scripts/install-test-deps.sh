#!/usr/bin/env bash
# Installs what the test suite needs besides the Rust toolchain:
#   promtool (Debian package `prometheus`) for the /metrics lint test.
# Safe to run again: it installs only what is missing.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v promtool >/dev/null 2>&1; then
    echo "installing promtool (Debian package prometheus)…"
    apt_install prometheus
fi
promtool --version 2>&1 | head -n 1

# anvil (Foundry's local EVM node) from the npm registry, into target/test-tools.
anvil_dir="$(cd "$(dirname "$0")/.." && pwd)/target/test-tools"
anvil_bin="$anvil_dir/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [ ! -x "$anvil_bin" ]; then
    echo "installing anvil (npm @foundry-rs/anvil-linux-amd64)…"
    mkdir -p "$anvil_dir"
    npm install --prefix "$anvil_dir" --no-audit --no-fund --silent @foundry-rs/anvil-linux-amd64@1.7.1 >/dev/null
fi
"$anvil_bin" --version | head -n 1

# openssl (the CLI) plays the time-stamp authority in the rfc3161 tests (`openssl ts -reply`).
if ! command -v openssl >/dev/null 2>&1; then
    echo "installing openssl…"
    apt_install openssl
fi
openssl version
