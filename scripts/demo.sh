#!/usr/bin/env bash
# The main job on the embedded default: builds Aloha-rs, starts a master (embedded redb state)
# and a worker on 127.0.0.1, submits a sample app with alohactl and follows it to FINISHED,
# then stops both daemons. Everything lives under ./aloha-data/demo (override: ALOHA_DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh

cargo build --workspace --locked --quiet
bin=target/debug
dir=${ALOHA_DEMO_DIR:-./aloha-data/demo}
http=${ALOHA_DEMO_HTTP:-127.0.0.1:8080}
rpc=${ALOHA_DEMO_RPC:-127.0.0.1:7077}
mkdir -p "$dir"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$bin/aloha-master" --http-addr "$http" --rpc-addr "$rpc" --state-dir "$dir/master" \
  >"$dir/master.log" 2>&1 &
pids+=($!)
"$bin/aloha-worker" --master "http://$rpc" --work-dir "$dir/worker" --id demo-worker \
  >"$dir/worker.log" 2>&1 &
pids+=($!)

ctl() { "$bin/alohactl" --master "http://$http" "$@"; }
for _ in $(seq 1 100); do
  ctl --output json workers 2>/dev/null | grep -q '"ALIVE"' && break
  sleep 0.1
done
echo "== cluster"
ctl cluster
echo
echo "== workers"
ctl workers
echo
echo "== submitting a sample app and following it to the end"
ctl submit --name hello-aloha --wait -- sh -c 'echo "hello from $(hostname), app running"; sleep 2; echo done'
id=$(ctl --output json list --limit 1 | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -n 1)
echo
echo "== the app, with its history"
ctl status "$id"
echo
echo "== its output ($dir/worker/$id/1/stdout)"
cat "$dir/worker/$id/1/stdout"
echo
echo "logs: $dir/master.log, $dir/worker.log"
