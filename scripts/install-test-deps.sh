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
