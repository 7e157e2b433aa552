#!/usr/bin/env bash
# Idle cost of agents on one master (BENCHMARKS.md, "Scale"): N simulated
# agents register, then the master's CPU (from /proc) over 30 s of nothing
# but heartbeats, and its RSS before and after.
#
#   benches/scale_idle.sh MEZZ N      e.g. benches/scale_idle.sh target/release/mezz 10000
set -u
B=${1:?path to the mezz binary}
N=${2:-1000}
D=$(mktemp -d)
P=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$B master --listen 127.0.0.1:$P --data-dir $D/m > $D/m.log 2>&1 &
MP=$!
sleep 3
R0=$(awk '/VmRSS/{print $2}' /proc/$MP/status)
$B sim agents --master 127.0.0.1:$P --count $N --ramp 20s --report-every 0s > $D/a.out 2>$D/a.log &
AP=$!
T0=$(date +%s)
for i in $(seq 1 120); do c=$(curl -s http://127.0.0.1:$P/metrics | awk '$1=="mezz_agents{status=\"connected\"}"{print $2}'); [ "$c" = "$N" ] && break; sleep 0.5; done
echo "registered: $c after $(( $(date +%s) - T0 ))s"
sleep 10
HZ=$(getconf CLK_TCK)
C0=$(awk '{print $14+$15}' /proc/$MP/stat); A0=$(awk '{print $14+$15}' /proc/$AP/stat)
sleep 30
C1=$(awk '{print $14+$15}' /proc/$MP/stat); A1=$(awk '{print $14+$15}' /proc/$AP/stat)
R1=$(awk '/VmRSS/{print $2}' /proc/$MP/status)
echo "master idle CPU over 30 s: $(echo "scale=2; ($C1-$C0)*100/$HZ/30" | bc)% of a core; simulator: $(echo "scale=2; ($A1-$A0)*100/$HZ/30" | bc)%; master RSS ${R0} KB before agents, ${R1} KB with $N idle agents"
uptime
kill $AP; kill -9 $MP; rm -rf $D
