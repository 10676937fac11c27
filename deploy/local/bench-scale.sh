#!/usr/bin/env bash
# Benchmark (not a test): the api's history-wide requests at 1 M, 10 M (…) generated messages,
# next to the SQL they replace sent straight to ClickHouse: p50/p99 and ClickHouse's peak memory
# per query (system.query_log). Release builds; its own NATS and ClickHouse on free loopback
# ports, data in a temporary directory: about 0.5 GB per million messages once merged, but up
# to 2 GB per million while ClickHouse merges (check `df -h`; 10 M needs ~20 GB free).
#
#   BENCH_SIZES=1000000,10000000 BENCH_REQUESTS=20 BENCH_DIRECT_REQUESTS=5 deploy/local/bench-scale.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install.sh
cargo build --release --workspace --bins
CLICKHOUSE_LOG_QUERIES=1 STATSCACHE_BIN_DIR="$(pwd)/target/release" \
    cargo bench -p statscache-api --bench scale
