#!/usr/bin/env bash
# Benchmark (not a test): API latency under concurrent load next to the same SQL sent straight
# to ClickHouse, with release builds. It starts its own NATS, ClickHouse, worker and api on free
# loopback ports and stores BENCH_MESSAGES messages first (default 100000).
#
#   BENCH_MESSAGES=100000 BENCH_REQUESTS=2000 BENCH_CONCURRENCY=8 deploy/local/bench-api.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install.sh
cargo build --release --workspace --bins
STATSCACHE_BIN_DIR="$(pwd)/target/release" cargo bench -p statscache-api --bench latency
