#!/usr/bin/env bash
# Stops what deploy/local/run.sh started (SIGTERM: the services finish their work in flight).
set -uo pipefail
cd "$(dirname "$0")/../.."
pids=.local/pids
[ -f "$pids" ] || { echo "nothing to stop" >&2; exit 0; }
tac "$pids" | while read -r pid name; do
  kill -TERM -- "$pid" 2>/dev/null && echo "stopping $name ($pid)" >&2
done
for _ in $(seq 1 150); do
  alive=0
  while read -r pid _; do kill -0 -- "$pid" 2>/dev/null && alive=1; done < "$pids"
  [ $alive = 0 ] && break
  sleep 0.2
done
while read -r pid _; do kill -KILL -- "$pid" 2>/dev/null; done < "$pids"
rm -f "$pids"
# RabbitMQ's Erlang port mapper daemon outlives the broker: stop it once the node is gone.
if [ -f .local/epmd-port ]; then
  for _ in $(seq 1 50); do
    epmd -port "$(cat .local/epmd-port)" -kill >/dev/null 2>&1 && break
    sleep 0.2
  done
  rm -f .local/epmd-port
fi
