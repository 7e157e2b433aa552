#!/usr/bin/env bash
# The scale benchmark of BENCHMARKS.md ("Scale"): three masters on
# 127.0.0.1, simulated agents, a load of frameworks, and the master's
# memory and CPU read from /proc; then the leader is killed with SIGKILL
# and the time to a new leader making offers and to every agent
# re-registered is taken from the masters' /metrics.
#
#   benches/scale.sh MEZZ AGENTS RATE DURATION_S TASK_TIME FILL_TASKS
#   e.g. benches/scale.sh target/release/mezz 10000 10000 60 5s 100000
#
# A DURATION_S of 0 skips the sustained load and goes straight to the
# fill and the failover. With SCALE_LOGS=DIR the masters', agents' and
# loads' logs are copied to DIR at the end.
set -euo pipefail
MEZZ=${1:?path to the mezz binary}
AGENTS=${2:-1000}
RATE=${3:-200}
DURATION=${4:-60}
TASK_TIME=${5:-5s}
FILL=${6:-10000}
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "${SCALE_LOGS:-}" ]; then mkdir -p "$SCALE_LOGS" && cp "$DIR"/*.log "$SCALE_LOGS"/; fi
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
P=($(port) $(port) $(port))
LIST="127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]}"
PEERS="1=127.0.0.1:${P[0]},2=127.0.0.1:${P[1]},3=127.0.0.1:${P[2]}"
MPID=()
for i in 0 1 2; do
  "$MEZZ" master --listen "127.0.0.1:${P[$i]}" --data-dir "$DIR/m$i" --id $((i + 1)) --peers "$PEERS" >"$DIR/m$i.log" 2>&1 &
  MPID[$i]=$!; PIDS+=($!)
done
metric() { curl -s --max-time 2 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }
leader() { for i in 0 1 2; do [ "${MPID[$i]}" = dead ] && continue; [ "$(metric "${P[$i]}" mezz_master_is_leader)" = 1 ] && { echo $i; return; }; done; echo none; }
# Agents connected to whoever leads now.
connected() { local l; l=$(leader); if [ "$l" = none ]; then echo 0; else metric "${P[$l]}" 'mezz_agents{status="connected"}'; fi; }
rss_mb() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
until [ "$(leader)" != none ]; do sleep 0.2; done
L=$(leader)
echo "leader master-$((L + 1)); RSS before agents: $(rss_mb "${MPID[$L]}") MB"

"$MEZZ" sim agents --master "$LIST" --count "$AGENTS" --ramp 10s --report-every 0s >"$DIR/agents.out" 2>"$DIR/agents.log" &
PIDS+=($!)
T0=$(date +%s.%N)
until [ "$(connected)" = "$AGENTS" ]; do sleep 0.5; done
echo "all $AGENTS agents registered after $(echo "$(date +%s.%N) - $T0" | bc) s"
sleep 10
L=$(leader)
echo "leader master-$((L + 1)) (terms so far: $(metric "${P[$L]}" mezz_raft_term))"
HZ=$(getconf CLK_TCK)
C0=$(cpu_ticks "${MPID[$L]}"); sleep 20; C1=$(cpu_ticks "${MPID[$L]}")
echo "idle with $AGENTS agents: leader RSS $(rss_mb "${MPID[$L]}") MB, CPU $(echo "scale=1; ($C1 - $C0) * 100 / $HZ / 20" | bc)% of a core (heartbeats only)"

if [ "$DURATION" -gt 0 ]; then
  "$MEZZ" sim load --master "$LIST" --frameworks 20 --tasks-per-second "$RATE" --task-time "$TASK_TIME" \
    --duration "${DURATION}s" --drain 120s --cpus 0.1 --mem 32 --report-every 5s --json >"$DIR/load.json" 2>"$DIR/load.log" &
  LOADPID=$!; PIDS+=($!)
  C0=$(cpu_ticks "${MPID[$L]}")
  sleep $((DURATION / 2))
  RUNNING=$(metric "${P[$L]}" mezz_tasks_active)
  echo "mid-load: $RUNNING active tasks, leader RSS $(rss_mb "${MPID[$L]}") MB"
  curl -s "http://127.0.0.1:${P[$L]}/metrics" | grep '^mezz_allocation_cycle_seconds' | sed 's/^/  /'
  wait $LOADPID || true
  C1=$(cpu_ticks "${MPID[$L]}")
  echo "load report: $(cat "$DIR/load.json")"
  echo "leader CPU during the load: $(echo "scale=1; ($C1 - $C0) * 100 / $HZ / $DURATION" | bc)% of a core (averaged over the launch phase)"
  echo "leader peak RSS: $(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/${MPID[$L]}/status") MB"
  grep '^mezz_allocation_cycle_seconds' <(curl -s "http://127.0.0.1:${P[$L]}/metrics") | sed 's/^/  /'
fi

# A framework that always wants offers (one short task a second), so that
# a new leader has someone to offer to once the fill's frameworks, full,
# have suppressed theirs.
"$MEZZ" sim load --master "$LIST" --name probe --frameworks 1 --tasks-per-second 1 --task-time 1s \
  --duration 1h --cpus 0.1 --mem 32 --report-every 0s >"$DIR/probe.out" 2>"$DIR/probe.log" &
PIDS+=($!)

# Failover with long-running tasks in place: fill the agents, kill -9 the leader.
"$MEZZ" sim load --master "$LIST" --name fill --frameworks 20 --tasks-per-second "$RATE" --task-time 1h \
  --duration 1h --max-tasks "$FILL" --cpus 0.1 --mem 32 --report-every 0s --json >"$DIR/fill.json" 2>"$DIR/fill.log" &
PIDS+=($!)
# Whoever leads now (a long turn during the fill may have moved it).
filled() { L=$(leader); [ "$L" != none ] && [ "$(metric "${P[$L]}" mezz_tasks_active)" -ge "$FILL" ] 2>/dev/null; }
until filled; do sleep 1; done
sleep 5
L=$(leader)
echo "before the kill: $(metric "${P[$L]}" mezz_tasks_active) running tasks (the fill and the probe's) on master-$((L + 1)) (term $(metric "${P[$L]}" mezz_raft_term)), leader RSS $(rss_mb "${MPID[$L]}") MB"
kill -9 "${MPID[$L]}"; K=$(date +%s.%N); MPID[$L]=dead
since() { echo "$(date +%s.%N) - $K" | bc; }
until N=$(leader) && [ "$N" != none ]; do sleep 0.05; done
echo "master-$((N + 1)) leads $(since) s after the kill (term $(metric "${P[$N]}" mezz_raft_term))"
# A follower has sent no offers: its counter starts at 0 when it leads.
until [ "$(metric "${P[$N]}" mezz_offers_sent_total)" != 0 ]; do sleep 0.05; done
echo "new leader master-$((N + 1)) offering $(since) s after the kill"
NEXT=1
until C=$(connected) && [ "$C" = "$AGENTS" ]; do
  if [ "$(echo "$(since) >= $NEXT" | bc)" = 1 ]; then
    l=$(leader); [ "$l" = none ] && l="no leader" || l="master-$((l + 1))"
    echo "  $(since | xargs printf '%.1f') s: $C agents registered ($l)"
    NEXT=$((NEXT + 1))
  fi
  sleep 0.1
done
echo "every agent re-registered $(since) s after the kill"
sleep 5
N=$(leader)
echo "after the failover: $(metric "${P[$N]}" mezz_tasks_active) active tasks on the new leader master-$((N + 1)) (terms: $(metric "${P[$N]}" mezz_raft_term))"
