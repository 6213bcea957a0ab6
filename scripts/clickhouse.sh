#!/usr/bin/env bash
# Start or stop a ClickHouse server that lives entirely in one directory (no systemd, no root paths).
#
#   scripts/clickhouse.sh start DIR HTTP_PORT TCP_PORT   # idempotent: returns at once if it already answers
#   scripts/clickhouse.sh stop DIR
#   scripts/clickhouse.sh config DIR HTTP_PORT TCP_PORT  # only writes DIR/config.xml (the test harness
#                                                        # runs the server itself, under a watchdog)
#
# The config is written into DIR on every start, so a changed port takes effect on the next start.
# This is the one place the server's XML config is written.
set -euo pipefail

cmd=${1:?usage: clickhouse.sh start|stop|config DIR [HTTP_PORT TCP_PORT]}
dir=$(mkdir -p "${2:?data directory}" && cd "$2" && pwd)

write_config() {
  local http_port=$1 tcp_port=$2
  mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/format_schemas" "$dir/user_files"
  cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>$dir/log/server.log</log>
    <errorlog>$dir/log/error.log</errorlog>
    <size>10M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>${http_port}</http_port>
  <tcp_port>${tcp_port}</tcp_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mlock_executable>false</mlock_executable>
</yandex>
XML
}

case "$cmd" in
config)
  write_config "${3:?http port}" "${4:?tcp port}"
  ;;
start)
  http_port=${3:-8123}
  tcp_port=${4:-9000}
  if curl -fsS "http://127.0.0.1:${http_port}/ping" >/dev/null 2>&1; then
    echo "clickhouse: already answering on 127.0.0.1:${http_port}"
    exit 0
  fi
  write_config "$http_port" "$tcp_port"
  clickhouse-server --config-file="$dir/config.xml" --pid-file="$dir/clickhouse.pid" --daemon
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:${http_port}/ping" >/dev/null 2>&1; then
      echo "clickhouse: ready on 127.0.0.1:${http_port} (data in $dir)"
      exit 0
    fi
    sleep 0.1
  done
  echo "clickhouse: did not answer on port ${http_port} within 10 s; see $dir/log/error.log" >&2
  tail -n 20 "$dir/log/error.log" >&2 || true
  exit 1
  ;;
stop)
  if [ -f "$dir/clickhouse.pid" ]; then
    pid=$(cat "$dir/clickhouse.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/clickhouse.pid"
  fi
  ;;
*)
  echo "unknown command: $cmd" >&2
  exit 2
  ;;
esac
