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
cargo test --workspace -- --test-threads=2
