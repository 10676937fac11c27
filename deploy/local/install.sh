#!/usr/bin/env bash
# Installs what statscache-rs needs on a Debian machine, skipping what is already there:
# nats-server, clickhouse-server and rabbitmq-server (Debian packages), pyzmq (PyPI) for the
# fedmsg publisher used by the demo and the tests, fedora-messaging (PyPI) for the AMQP one, PyYAML (PyPI) for the Kubernetes manifest validator, and
# chdb-core (PyPI: the current ClickHouse engine, embedded) for the SQL compatibility test.
# The Rust toolchain itself is assumed present.
set -euo pipefail
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v clickhouse-server >/dev/null || missing+=(clickhouse-server)
command -v rabbitmq-server >/dev/null || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
# pyzmq: the real ZeroMQ publisher of the demo and the tests; PyYAML: the manifest validator;
# chdb-core: a current ClickHouse that tests/support/clickhouse_compat.py replays our SQL on;
# fedora-messaging: the real AMQP publisher of the demo and the tests.
for module_package in zmq:pyzmq yaml:pyyaml chdb:chdb-core fedora_messaging:fedora-messaging; do
  module=${module_package%%:*}; package=${module_package#*:}
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "installing $package from PyPI" >&2
    python3 -m pip install -q "$package" 2>/dev/null || python3 -m pip install -q --break-system-packages "$package"
  fi
done
