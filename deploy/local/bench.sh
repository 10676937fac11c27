#!/usr/bin/env bash
# Benchmarks (not tests): pipeline throughput next to the raw limits of NATS, ClickHouse and
# RabbitMQ on this machine, with release builds. BENCH_MESSAGES sets the message count (default 20000).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install.sh
cargo build --release --workspace --bins
STATSCACHE_BIN_DIR="$(pwd)/target/release" cargo bench -p statscache-tests --bench throughput
