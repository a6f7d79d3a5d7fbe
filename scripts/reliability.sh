#!/usr/bin/env bash
# Runs every reliability scenario at its full count and writes docs/RELIABILITY.md from the
# RELIABILITY lines the tests print. Takes several minutes. Needs root (the disk-fault
# scenarios mount small tmpfs file systems).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh >/dev/null
mkdir -p target docs
log=target/reliability.log
VMSH_RELIABILITY=full cargo test --release --test it -- --nocapture --test-threads 1 \
    reliability:: adversarial:: 2>&1 | tee "$log"
node scripts/reliability-report.mjs "$log" > docs/RELIABILITY.md
echo "wrote docs/RELIABILITY.md"
