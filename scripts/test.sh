#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests and end-to-end tests on the
# real binaries. Installs what it needs first (see install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ALOHA_NEED_ETCD=1 ALOHA_NEED_BROWSER=1 source scripts/install-deps.sh
# Real Spark (pyspark) and Flink (apache-flink) for the spark and flink plugin tests: Java and
# two venvs under ${ALOHA_TOOLS_DIR:-~/.cache/aloha-tools}; exports SPARK_HOME, FLINK_HOME, ...
source scripts/install-spark-flink.sh

echo "== npm ci (playwright-core for the console's browser test)"
npm ci --prefix tests/console --no-audit --no-fund --loglevel=error

export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries and plugins the end-to-end tests start)"
cargo build --workspace --locked
echo "== cargo test"
# Every test binary runs even when one fails, so a red run shows all its failures.
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' target/test-output.txt
exit "$status"
