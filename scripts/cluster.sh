#!/usr/bin/env bash
# `make cluster`: a three-node pivot cluster on this machine, for a person to try — one
# redis-server, one FreeSWITCH look-alike (`pivotd sim`) and three `pivotd serve` nodes sharing
# them. Ctrl-C stops everything.
#
#   ./target/debug/pivotd call 3004 --digits 2 --api http://127.0.0.1:8090   # place a call
#   curl -s localhost:8081/v2/accounts/$ACCOUNT/channels -H 'X-Auth-Token: demo-admin'
#   kill -9 <a node's pid>     # its calls are resumed by the others within the lease
set -euo pipefail
cd "$(dirname "$0")/.."

PIVOTD=./target/debug/pivotd
REDIS_PORT=${REDIS_PORT:-6390}
ACCOUNT=4a2c1b4e5d6f47a8b9c0d1e2f3a4b5c6
ADMIN=demo-admin
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

command -v redis-server >/dev/null || { echo "cluster: redis-server is needed (apt-get install redis-server)" >&2; exit 1; }

redis-server --port "$REDIS_PORT" --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)

"$PIVOTD" sim --esl 127.0.0.1:8021 --http 127.0.0.1:8090 --time-scale 1 >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)

for n in 1 2 3; do
  cat >"$work/node-$n.toml" <<TOML
[node]
id = "node-$n"
advertise = "http://127.0.0.1:808$n"

[api]
listen = "127.0.0.1:808$n"
admin_token = "$ADMIN"

[switch]
kind = "freeswitch"
freeswitch = [{ name = "sim", address = "127.0.0.1:8021", password = "ClueCon" }]

[cluster]
backend = "redis"
redis_url = "redis://127.0.0.1:$REDIS_PORT"
lease_ms = 3000

[webhook]
allow_cidrs = ["127.0.0.0/8"]

[log]
format = "human"

[[accounts]]
id = "$ACCOUNT"
name = "Demo"
TOML
  "$PIVOTD" serve --config "$work/node-$n.toml" >"$work/node-$n.out" 2>"$work/node-$n.log" &
  pids+=($!)
done

for n in 1 2 3; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:808$n/readyz" >/dev/null && break
    sleep 0.1
  done
done

# The demo IVR (served by every node under /demo) on number 3004, stored once in Redis.
curl -sf -X PUT "http://127.0.0.1:8081/v2/accounts/$ACCOUNT/callflows" \
  -H "X-Auth-Token: $ADMIN" -H 'Content-Type: application/json' \
  -d '{"data":{"name":"demo","numbers":["3004"],"flow":{"module":"pivot","data":{"voice_url":"http://127.0.0.1:8081/demo/ivr","req_format":"twiml","debug":true},"children":{"_":{"module":"tts","data":{"text":"Sorry, the demo application is not answering."}}}}}}' \
  >/dev/null

cat <<TEXT
pivot cluster running: redis 127.0.0.1:$REDIS_PORT, simulator esl 127.0.0.1:8021 http 127.0.0.1:8090,
nodes http://127.0.0.1:8081 8082 8083 (admin token "$ADMIN", pids ${pids[*]:2}); logs in $work
  $PIVOTD call 3004 --digits 2 --api http://127.0.0.1:8090
Ctrl-C stops everything.
TEXT
wait
