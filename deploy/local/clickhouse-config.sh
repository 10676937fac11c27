#!/usr/bin/env bash
# Writes a self-contained clickhouse-server config into DIR for a throwaway server on loopback.
#
#   clickhouse-config.sh DIR HTTP_PORT TCP_PORT [--log-queries]
#                        [--replica NAME CLUSTER ZOOKEEPER_PORT INTERSERVER_PORT TCP_PORTS]
#
# --replica makes the server replica NAME of cluster CLUSTER (one shard whose replicas listen on
# the comma-separated loopback TCP_PORTS), coordinated by the ZooKeeper on ZOOKEEPER_PORT: the
# macros {shard} and {replica} that Replicated*MergeTree paths use, remote_servers for
# ON CLUSTER, the distributed DDL queue, and the interserver port replicas fetch parts on.
#
# --log-queries (or CLICKHOUSE_LOG_QUERIES=1) logs every query to system.query_log (duration,
# rows read, peak memory): the ClickHouse compatibility test replays what the services sent, and
# deploy/local/bench-scale.sh reads their costs; off by default, since it costs a write per query.
#
# The root element is <yandex>, which ClickHouse 18.16 requires and current releases still accept.
set -euo pipefail
dir=$(readlink -f "$1"); http_port=$2; tcp_port=$3
log_queries=${CLICKHOUSE_LOG_QUERIES:-0}
replica=""
shift 3
while [ $# -gt 0 ]; do
  case "$1" in
    --log-queries) log_queries=1; shift ;;
    --replica) replica=$2; cluster=$3; zookeeper_port=$4; interserver_port=$5; tcp_ports=$6; shift 6 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log" "$dir/config.d"
rm -f "$dir/config.d/replica.xml"
if [ -n "$replica" ]; then
  replicas=""
  for port in ${tcp_ports//,/ }; do
    replicas="$replicas<replica><host>127.0.0.1</host><port>$port</port></replica>"
  done
  cat > "$dir/config.d/replica.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <zookeeper><node><host>127.0.0.1</host><port>$zookeeper_port</port></node></zookeeper>
    <macros><shard>01</shard><replica>$replica</replica></macros>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>$interserver_port</interserver_http_port>
    <remote_servers>
        <$cluster><shard><internal_replication>true</internal_replication>$replicas</shard></$cluster>
    </remote_servers>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
XML
fi
cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http_port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>64</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <flush_interval_milliseconds>1000</flush_interval_milliseconds>
    </query_log>
    <mlock_executable>false</mlock_executable>
</yandex>
XML
cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <log_queries>$log_queries</log_queries>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML
