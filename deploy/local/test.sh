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
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' \
  target/test-output.txt
