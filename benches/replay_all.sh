#!/usr/bin/env bash
# Trace replay through the real master (BENCHMARKS.md, "Trace replay"):
# every file of a Pollux workload set with each policy, one
# `mezz sim replay --json` line per (file, policy) appended to OUT, then a
# table per file and the means beside the reference simulator's
# (results/baseline.jsonl: fifo-firstfit, sjf-firstfit and tiresias,
# spread placement, reference mechanics).
#
#   benches/replay_all.sh MEZZ TRACES SPEEDUP OUT [SET] [POLICIES]
#   e.g. benches/replay_all.sh target/release/mezz ../shared/traces 1000 replay.jsonl workloads "fifo sjf las las:16"
#
# A policy is fifo, sjf or las; las:H[,H…] is las with those queue
# thresholds in GPU-hours (las:16 is the reference's two-queue Tiresias;
# plain las uses mezz's default thresholds). Every las row is compared with
# the reference's tiresias.
set -euo pipefail
MEZZ=${1:?path to the mezz binary}
TRACES=${2:?the traces folder (with resolved/ and results/)}
SPEEDUP=${3:?trace seconds per real second}
OUT=${4:?file to append JSON lines to}
SET=${5:-workloads}
POLICIES=${6:-fifo sjf las}
for f in "$TRACES"/resolved/"$SET"/workload-*.csv; do
  for p in $POLICIES; do
    args=(--policy "${p%%:*}")
    [[ $p == las:* ]] && args+=(--las-thresholds-gpu-hours "${p#las:}")
    "$MEZZ" sim replay "$f" --nodes 16 --gpus-per-node 4 --speedup "$SPEEDUP" "${args[@]}" --json \
      2>>"$OUT.log" | python3 -c "import json,sys; d=json.load(sys.stdin); d['workload']='$SET/'+d['workload'].rsplit('/',1)[1]; d['policy']='$p'; print(json.dumps(d))" >>"$OUT" ||
      echo "{\"workload\": \"$SET/$(basename "$f")\", \"policy\": \"$p\", \"error\": true}" >>"$OUT"
  done
done
python3 - "$TRACES/results/baseline.jsonl" "$OUT" "$SET" <<'PY'
import json, sys
ref = {}
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d["placement"] == "spread" and d["interval_s"] == 0 and d["restart_overhead_s"] == 0:
        ref[(d["workload"], d["policy"])] = d
names = lambda p: {"fifo": "fifo-firstfit", "sjf": "sjf-firstfit"}.get(p, "tiresias")
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
rows = [r for r in rows if not r.get("error") and r["workload"].startswith(sys.argv[3] + "/")]
print("| workload | policy | avg JCT s (replay / ref) | p99 JCT s (replay / ref) | makespan s (replay / ref) | GPU util (replay / ref) | preemptions (replay / ref) | real s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
sums = {}
for r in rows:
    b = ref[(r["workload"], names(r["policy"]))]
    print(f"| {r['workload']} | {r['policy']} | {r['avg_jct_s']:.0f} / {b['avg_jct_s']:.0f} | {r['p99_jct_s']:.0f} / {b['p99_jct_s']:.0f} | {r['makespan_s']:.0f} / {b['makespan_s']:.0f} | {r['gpu_util']:.3f} / {b['gpu_util_useful']:.3f} | {r['preemptions']} / {b['preemptions']} | {r['elapsed_s']:.0f} |")
    s = sums.setdefault(r["policy"], [0, 0.0, 0.0, 0.0, 0.0])
    s[0] += 1; s[1] += r["avg_jct_s"]; s[2] += b["avg_jct_s"]; s[3] += r["p99_jct_s"]; s[4] += b["p99_jct_s"]
print()
print("| policy | files | mean avg JCT s replay | reference | diff | mean p99 JCT s replay | reference |")
print("|---|---:|---:|---:|---:|---:|---:|")
for p, (n, a, b, c, d) in sums.items():
    print(f"| {p} | {n} | {a/n:.0f} | {b/n:.0f} | {100*(a-b)/b:+.1f}% | {c/n:.0f} | {d/n:.0f} |")
PY
