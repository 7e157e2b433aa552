#!/usr/bin/env bash
# Sustained launches through one master (BENCHMARKS.md, "Scale"): one
# `mezz master` and 500 simulated agents (8 cpus, 16 GB each) on
# 127.0.0.1, then `mezz sim load` (10 frameworks on the SDK, 1 s tasks,
# 15 s) once per load binary given, so two builds of the frameworks' side
# can be compared on one cluster, alternately.
#
#   benches/scale_load.sh CLUSTER_MEZZ RATE LOAD_MEZZ [LOAD_MEZZ...]
#   e.g. benches/scale_load.sh target/release/mezz 6000 ./mezz-before target/release/mezz
set -euo pipefail
MEZZ=${1:?path to the mezz binary that runs the master and the agents}
RATE=${2:?target launches per second}
shift 2
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$MEZZ" master --listen "127.0.0.1:$PORT" --data-dir "$DIR/m" >"$DIR/m.log" 2>&1 &
PIDS+=($!); disown
sleep 1
"$MEZZ" sim agents --master "127.0.0.1:$PORT" --count 500 --cpus 8 --mem 16384 --ramp 2s --report-every 0s >/dev/null 2>"$DIR/agents.log" &
PIDS+=($!); disown
sleep 6
for LOAD in "$@"; do
  "$LOAD" sim load --master "127.0.0.1:$PORT" --frameworks 10 --tasks-per-second "$RATE" --task-time 1s \
    --duration 15s --drain 30s --cpus 0.1 --mem 32 --report-every 0s --json 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); r=d['launch_to_running_ms']; o=d['offer_latency_ms']; print(f\"$LOAD: launched {d['launched']} finished {d['finished']} lost {d['lost']}, {d['tasks_per_second']:.0f} tasks/s, launch->RUNNING p50 {r['p50']:.1f} ms p99 {r['p99']:.1f} ms, offer p50 {o['p50']:.0f} ms p99 {o['p99']:.0f} ms\")"
  sleep 3
done
