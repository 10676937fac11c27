#!/usr/bin/env bash
# Benchmark (not a test): `statscache-worker bootstrap` from a generated datanommer database,
# end to end into ClickHouse, next to the raw limits on the same machine (PostgreSQL read, bare
# ClickHouse insert of the same rows). Release builds; its own PostgreSQL, NATS and ClickHouse
# on free loopback ports, data in temporary directories (about 2.5 GB per million messages in
# PostgreSQL and ClickHouse together: check `df -h`).
#
#   BENCH_MESSAGES=10000000 BENCH_BATCH=10000 deploy/local/bench-bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install.sh
cargo build --release --workspace --bins
STATSCACHE_BIN_DIR="$(pwd)/target/release" cargo bench -p statscache-tests --bench bootstrap
