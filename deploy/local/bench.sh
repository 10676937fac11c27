#!/usr/bin/env bash
# Benchmarks (not tests): pipeline throughput next to the raw limits of NATS, ClickHouse and
# RabbitMQ on this machine, with release builds. BENCH_MESSAGES sets the message count (default
# 20000); BENCH_STAGES=throughput,delay,recovery,cluster picks stages (all by default; ingest is
# throughput's ZeroMQ stage alone); BENCH_RATE
# and BENCH_SECONDS set the steady load of the delay and recovery stages (800 msg/s, 30 s);
# BENCH_DELAY_ROUNDS the delay stage's rounds (2: each nats-server goes first in one); the
# cluster stage runs the pipeline end to end on 3 nats-servers + 2 ClickHouse replicas next to
# one of each.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install.sh
cargo build --release --workspace --bins
STATSCACHE_BIN_DIR="$(pwd)/target/release" cargo bench -p statscache-tests --bench throughput
