#!/usr/bin/env bash
# Brings the whole pipeline up locally and feeds it the real fedmsg corpus:
#   nats-server (JetStream) + clickhouse-server + statscache-worker + statscache-api
#   + rabbitmq-server + statscache-ingestor, then the real fedora-messaging publisher sending the
#   first half of tests/fixtures/fedmsg-real.jsonl over AMQP and a real ZeroMQ publisher the rest.
# Everything runs in the background with its data and logs under .local/; stop it with
# deploy/local/stop.sh. Installs what is missing first.
#
# STATSCACHE_DEMO_CLUSTER=1: cluster mode, as on Kubernetes with the NATS Helm chart and a
# replicated ClickHouse: 3 nats-servers in a JetStream cluster (streams with 3 replicas; client
# ports NATS_PORT..NATS_PORT+2), ZooKeeper and 2 ClickHouse replicas of cluster "statscache"
# (HTTP ports CLICKHOUSE_PORT and +1). The worker and the ingestor get every NATS seed URL; the
# services use the first ClickHouse replica (a load balancer would spread them in production).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
state=$root/.local
api_port=${STATSCACHE_DEMO_API_PORT:-8080}
nats_port=${STATSCACHE_DEMO_NATS_PORT:-4222}
ch_http=${STATSCACHE_DEMO_CLICKHOUSE_PORT:-8123}
ch_tcp=${STATSCACHE_DEMO_CLICKHOUSE_TCP_PORT:-9000}
fedmsg_port=${STATSCACHE_DEMO_FEDMSG_PORT:-9940}
amqp_port=${STATSCACHE_DEMO_AMQP_PORT:-5672}
zookeeper_port=${STATSCACHE_DEMO_ZOOKEEPER_PORT:-2181}
cluster_mode=${STATSCACHE_DEMO_CLUSTER:-0}

bash deploy/local/install.sh
[ -f "$state/pids" ] && bash deploy/local/stop.sh
echo "building the services (cargo build)..." >&2
cargo build --workspace --bins --quiet
mkdir -p "$state/logs"
rm -rf "$state/nats" "$state/nats-"* "$state/clickhouse" "$state/clickhouse-"* "$state/zookeeper" "$state/rabbitmq"
: > "$state/pids"
start() { # name, command...
  local name=$1; shift
  "$@" >"$state/logs/$name.log" 2>&1 &
  echo "$! $name" >> "$state/pids"
}
wait_http() { # url, what
  for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$2 did not come up; see $state/logs" >&2; exit 1
}
# ZooKeeper serving, not merely listening: a ClickHouse 18.16 replica whose first ZooKeeper
# sessions fail can crash (tests/src/clickhouse_cluster.rs). `srvr` names the mode only then.
wait_zookeeper() { # port
  local reply
  for _ in $(seq 1 600); do
    reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && timeout 5 cat <&3) 2>/dev/null || true)
    case $reply in *Mode:*) return 0 ;; esac
    sleep 0.2
  done
  echo "zookeeper did not come up; see $state/logs" >&2; exit 1
}

# The current nats-server release by default; STATSCACHE_NATS_SERVER picks another binary.
nats_server=$(bash deploy/local/nats-server.sh)
if [ "$cluster_mode" = 1 ]; then
  echo "cluster mode: 3 nats-servers, ZooKeeper, 2 ClickHouse replicas" >&2
  routes=nats://127.0.0.1:$((nats_port + 2000)),nats://127.0.0.1:$((nats_port + 2001)),nats://127.0.0.1:$((nats_port + 2002))
  nats_urls=""
  for node in 0 1 2; do
    start "nats-$node" "$nats_server" -js -a 127.0.0.1 -p $((nats_port + node)) -m $((nats_port + 4000 + node)) \
      -n "n$node" --cluster_name statscache --cluster "nats://127.0.0.1:$((nats_port + 2000 + node))" \
      --routes "$routes" -sd "$state/nats-$node"
    nats_urls="$nats_urls${nats_urls:+,}nats://127.0.0.1:$((nats_port + node))"
  done
  mkdir -p "$state/zookeeper"
  start zookeeper java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar \
    org.apache.zookeeper.server.ZooKeeperServerMain "$zookeeper_port" "$state/zookeeper"
  wait_zookeeper "$zookeeper_port"
  for replica in 0 1; do
    bash deploy/local/clickhouse-config.sh "$state/clickhouse-$replica" $((ch_http + replica)) $((ch_tcp + replica)) \
      --replica "r$replica" statscache "$zookeeper_port" $((ch_tcp + 9 + replica)) "$ch_tcp,$((ch_tcp + 1))"
    start "clickhouse-$replica" clickhouse-server --config-file="$state/clickhouse-$replica/config.xml"
  done
  for node in 0 1 2; do
    wait_http "http://127.0.0.1:$((nats_port + 4000 + node))/healthz?js-enabled-only=true" "nats-server n$node"
  done
  wait_http "http://127.0.0.1:$((ch_http + 1))/?query=SELECT%201" "clickhouse-server replica r1"
  export STATSCACHE_NATS__REPLICAS=3 STATSCACHE_CLICKHOUSE__CLUSTER=statscache
else
  start nats "$nats_server" -js -a 127.0.0.1 -p "$nats_port" -m $((nats_port + 4000)) -sd "$state/nats"
  nats_urls=nats://127.0.0.1:$nats_port
  bash deploy/local/clickhouse-config.sh "$state/clickhouse" "$ch_http" "$ch_tcp"
  start clickhouse clickhouse-server --config-file="$state/clickhouse/config.xml"
fi
# RabbitMQ as its own Erlang node and process group (stop.sh stops the group), with its own
# port mapper daemon, stopped by stop.sh too.
mkdir -p "$state/rabbitmq"
printf 'listeners.tcp.1 = 127.0.0.1:%s\nloopback_users = none\n' "$amqp_port" > "$state/rabbitmq/rabbitmq.conf"
echo '[].' > "$state/rabbitmq/enabled_plugins"
echo $((amqp_port + 20001)) > "$state/epmd-port"
HOME=$state/rabbitmq RABBITMQ_NODENAME=statscache-demo@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=$amqp_port RABBITMQ_DIST_PORT=$((amqp_port + 20000)) \
  ERL_EPMD_PORT=$((amqp_port + 20001)) ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_CONFIG_FILE=$state/rabbitmq/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$state/rabbitmq/enabled_plugins \
  RABBITMQ_MNESIA_BASE=$state/rabbitmq/mnesia RABBITMQ_LOG_BASE=$state/rabbitmq/log \
  setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$state/logs/rabbitmq.log" 2>&1 < /dev/null &
echo "-$! rabbitmq" >> "$state/pids"
wait_http "http://127.0.0.1:$((nats_port + 4000))/healthz" "nats-server"
wait_http "http://127.0.0.1:$ch_http/?query=SELECT%201" "clickhouse-server"

export STATSCACHE_NATS__URL=$nats_urls
export STATSCACHE_CLICKHOUSE__URL=http://127.0.0.1:$ch_http
export STATSCACHE_INGESTOR__ZEROMQ__ENDPOINTS="[tcp://127.0.0.1:$fedmsg_port]"
export STATSCACHE_INGESTOR__AMQP__URL=amqp://guest:guest@127.0.0.1:$amqp_port/%2F
export STATSCACHE_INGESTOR__ADMIN_LISTEN=127.0.0.1:9101
export STATSCACHE_WORKER__ADMIN_LISTEN=127.0.0.1:9102
export STATSCACHE_API__LISTEN=127.0.0.1:$api_port
bin=$root/target/debug
start worker "$bin/statscache-worker"
start api "$bin/statscache-api"
wait_http "http://127.0.0.1:9102/health/readyz" "statscache-worker"
wait_http "http://127.0.0.1:$api_port/health/readyz" "statscache-api"
start ingestor "$bin/statscache-ingestor"

corpus=tests/fixtures/fedmsg-real.jsonl
half=$(( $(wc -l < $corpus) / 2 ))
head -n "$half" "$corpus" > "$state/corpus-amqp.jsonl"
tail -n +"$((half + 1))" "$corpus" > "$state/corpus-zeromq.jsonl"
for _ in $(seq 1 600); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $amqp_port), 1)" 2>/dev/null && break
  sleep 0.2
done
echo "publishing $half real messages with fedora-messaging (amqp://127.0.0.1:$amqp_port)..." >&2
python3 tests/support/amqp_publish.py "amqp://guest:guest@127.0.0.1:$amqp_port/%2F" \
  --queue statscache "$state/corpus-amqp.jsonl" > "$state/logs/amqp-publish.log"
echo "replaying the other $(wc -l < "$state/corpus-zeromq.jsonl") over ZeroMQ (tcp://127.0.0.1:$fedmsg_port)..." >&2
python3 tests/support/fedmsg_publish.py "tcp://127.0.0.1:$fedmsg_port" "$state/corpus-zeromq.jsonl" tests/fixtures/fedmsg-real-incomplete.jsonl >&2
expected=$(wc -l < $corpus)
for _ in $(seq 1 300); do
  total=$(curl -fsS "http://127.0.0.1:$api_port/api/volume?bucket=all" 2>/dev/null \
    | python3 -c 'import json,sys; rows=json.load(sys.stdin)["rows"]; print(rows[0]["count"] if rows else 0)' 2>/dev/null || echo 0)
  [ "$total" = "$expected" ] && break
  sleep 0.2
done
api=http://127.0.0.1:$api_port
cat <<TXT

statscache-rs is running; the corpus is in (volume: $total of $expected messages; the
$(wc -l < tests/fixtures/fedmsg-real-incomplete.jsonl) messages without a timestamp were dead-lettered).

  API:          $api/api/
  volume:       curl '$api/api/volume?bucket=all'
  by category:  curl '$api/api/volume-by-category?bucket=all&rows_per_page=100'
  as CSV:       curl '$api/api/volume-by-topic-daily?format=csv'
  releng:       curl '$api/api/releng-dashboard'
  statscache:   curl '$api/statscache/api/volume-by-category-1m?rows_per_page=10' (its API, unchanged)
  OpenAPI docs: $api/docs
  metrics:      curl 127.0.0.1:9101/metrics (ingestor), 127.0.0.1:9102/metrics (worker)
  RabbitMQ:     amqp://guest:guest@127.0.0.1:$amqp_port/%2F (queue "statscache" on amq.topic)
  logs:         $state/logs/
  stop:         deploy/local/stop.sh
TXT
