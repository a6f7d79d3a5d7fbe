#!/usr/bin/env bash
# Runs every reliability, fault, hostile-input and security scenario at its full count and
# writes docs/RELIABILITY.md from what the tests print. Takes about twenty minutes. Needs root
# (the disk-fault scenarios mount small tmpfs file systems).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh >/dev/null
mkdir -p target docs
export VMSH_RELIABILITY=full
# One test at a time, so each test's scenario lines follow its name in the log. A failing test
# still gets its row (FAILED) in the report, and the script then exits non-zero.
set +e
cargo test --release --test it -- --nocapture --test-threads 1 \
    reliability:: lifecycle:: adversarial:: hostile:: security:: cluster_scenarios:: 2>&1 | tee target/reliability-it.log
cargo test --release --lib -- --nocapture --test-threads 1 \
    rfc3161::protocol::tests::mutated_replies 2>&1 | tee target/reliability-unit.log
set -e
node scripts/reliability-report.mjs target/reliability-it.log target/reliability-unit.log > docs/RELIABILITY.md \
    || { echo "wrote docs/RELIABILITY.md: some scenarios FAILED" >&2; exit 1; }
echo "wrote docs/RELIABILITY.md"
