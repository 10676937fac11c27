#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests against real
# nats-server, clickhouse-server and ZeroMQ peers (installed first if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the real binaries: build them before the tests start.
cargo build --workspace --bins
# The Kubernetes manifests: config keys, probes, resources (loads each pod's config with the real binary).
python3 deploy/kubernetes/validate.py
# Two tests at a time: each end-to-end test runs its own servers, and the machine has 2 cores.
# Every test binary runs even after a failure, so one run reports every failing test.
mkdir -p target
cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee target/test-output.txt
# Each test binary's time, slowest first (docs/testing.md says which are slow and why), then one
# closing line for the whole suite (cargo prints one per test binary).
echo "test binaries by time:"
awk '/^ *(Running|Doc-tests) / { binary = $2 }
     /^test result:/ { sub(/s$/, "", $NF); printf "%8.1f s  %s\n", $NF, binary }' \
  target/test-output.txt | sort -rn | head -15
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' \
  target/test-output.txt
