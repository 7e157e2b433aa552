#!/usr/bin/env python3
"""Where the time of each `mezz run` goes, from a `mezz dev` log.

Start the cluster with the master's and the agent's debug lines, run
`mezz run` against it any number of times, then parse the log:

    RUST_LOG=info,mezz_agent=debug,mezz_master=debug mezz dev 2> dev.log &
    for i in $(seq 30); do mezz run --cpus 0.1 --mem 32 -- true; done
    python3 benches/run_phases.py dev.log

Prints, per phase, the median and extremes over the runs in the log (see
BENCHMARKS.md for what each phase holds).
"""
import re
import statistics
import sys
from datetime import datetime
lines=[re.sub(r'\x1b\[[0-9;]*m','',l) for l in open(sys.argv[1])]
def ts(l): return datetime.strptime(l[:26],"%Y-%m-%dT%H:%M:%S.%f").timestamp()*1e3
fw = {}
for l in lines:
    if not l.startswith("20"): continue
    m=re.search(r"registering framework .*framework_id=(\S+)",l)
    if m: fw.setdefault(m.group(1),{})["reg"]=ts(l); continue
    m=re.search(r"framework subscribed framework_id=(\S+)",l)
    if m: fw.setdefault(m.group(1),{})["sub"]=ts(l); continue
    m=re.search(r"INFO launching task task_id=(\S+) framework_id=(\S+)",l)
    if m: fw.setdefault(m.group(2),{})["mlaunch"]=ts(l); continue
    m=re.search(r"framework_id=(\S+) task_id=\S+\}: launching task",l)
    if m: fw.setdefault(m.group(1),{})["spawned"]=ts(l); continue
    m=re.search(r"framework_id=(\S+) task_id=\S+\}: task \S+ is RUNNING",l)
    if m: fw.setdefault(m.group(1),{})["running"]=ts(l); continue
    m=re.search(r"framework_id=(\S+) task_id=\S+\}: task \S+ is FINISHED",l)
    if m: fw.setdefault(m.group(1),{})["finished"]=ts(l); continue
    m=re.search(r'framework teardown framework_id="(\S+)"',l)
    if m: fw.setdefault(m.group(1),{})["teardown"]=ts(l); continue
steps=[("reg","sub","register (raft write)"),("sub","mlaunch","offer + accept at master"),("mlaunch","spawned","agent: record, sandbox, cgroup, spec, spawn wrapper"),("spawned","running","wrapper exec + namespaces + command start + RUNNING fsync"),("running","finished","command runs/exits, exit record, cgroup cleanup, FINISHED fsync"),("finished","teardown","update to client, output drain, teardown")]
for a,b,name in steps:
    xs=sorted(v[b]-v[a] for v in fw.values() if a in v and b in v)
    if xs: print(f"{name}: median {statistics.median(xs):.2f} ms (n={len(xs)}, min {xs[0]:.2f}, max {xs[-1]:.2f})")
