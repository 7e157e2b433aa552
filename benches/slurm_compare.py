#!/usr/bin/env python3
"""Interleaved wall-clock timing of two commands, for `benches/slurm_compare.sh`.

    slurm_compare.py [--rounds N] [--warmup W] [--alone] [--json FILE] NAME=COMMAND NAME=COMMAND

Runs each COMMAND (split as a shell would, run without one) W times to warm
up, then N rounds of one run of each, in the order given, alternating.
Each run is timed from just before the process is spawned to its exit
(`time.perf_counter` around `subprocess.run`), the way a user's shell
sees it. A run that fails stops the benchmark: a failed run is not a fast
one. Prints median, p90, p99, min, max and mean per command, and the ratio
of the medians (second over first); with --json, writes the same figures
and the raw samples to FILE.

With --alone, then also N runs of each command by itself, one command's
runs after the other's: what each costs without the other's aftermath
(daemons still finishing the previous run's bookkeeping) on the machine.

Percentiles are nearest-rank on the sorted samples, index round((n-1)*p),
as `benches/run_latency.rs` computes them.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time


def percentile(sorted_ms, p):
    i = round((len(sorted_ms) - 1) * p)
    return sorted_ms[min(i, len(sorted_ms) - 1)]


def summary(samples):
    s = sorted(samples)
    return {
        "runs": len(s),
        "median_ms": percentile(s, 0.5),
        "p90_ms": percentile(s, 0.9),
        "p99_ms": percentile(s, 0.99),
        "min_ms": s[0],
        "max_ms": s[-1],
        "mean_ms": statistics.fmean(s),
    }


def run_once(name, argv):
    start = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    elapsed = (time.perf_counter() - start) * 1000.0
    if p.returncode != 0:
        sys.stderr.write(f"{name}: `{shlex.join(argv)}` exited with {p.returncode}:\n")
        sys.stderr.write(p.stderr.decode(errors="replace"))
        sys.exit(1)
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--alone", action="store_true")
    ap.add_argument("commands", nargs=2, metavar="NAME=COMMAND")
    a = ap.parse_args()
    cmds = []
    for c in a.commands:
        name, sep, line = c.partition("=")
        if not sep or not line:
            ap.error(f"expected NAME=COMMAND, got {c!r}")
        cmds.append((name, shlex.split(line)))

    for _ in range(a.warmup):
        for name, argv in cmds:
            run_once(name, argv)
    samples = {name: [] for name, _ in cmds}
    for _ in range(a.rounds):
        for name, argv in cmds:
            samples[name].append(run_once(name, argv))

    alone = {}
    if a.alone:
        for name, argv in cmds:
            alone[name] = [run_once(name, argv) for _ in range(a.rounds)]

    (first, _), (second, _) = cmds
    result = {
        "rounds": a.rounds,
        "warmup": a.warmup,
        "loadavg_after": os.getloadavg(),
        "commands": {name: shlex.join(argv) for name, argv in cmds},
        "summary": {name: summary(samples[name]) for name, _ in cmds},
    }
    result["median_ratio"] = (result["summary"][second]["median_ms"]
                              / result["summary"][first]["median_ms"])
    result["samples_ms"] = samples
    if alone:
        result["alone"] = {name: summary(alone[name]) for name, _ in cmds}
        result["alone_median_ratio"] = (result["alone"][second]["median_ms"]
                                        / result["alone"][first]["median_ms"])
        result["alone_samples_ms"] = alone

    def report(title, figures, ratio):
        print(title)
        for name, argv in cmds:
            s = figures[name]
            print(f"  {name:>5}  median {s['median_ms']:7.1f} ms   p90 {s['p90_ms']:7.1f} ms"
                  f"   p99 {s['p99_ms']:7.1f} ms   min {s['min_ms']:7.1f} ms"
                  f"   max {s['max_ms']:7.1f} ms   mean {s['mean_ms']:7.1f} ms"
                  f"   ({shlex.join(argv)})")
        print(f"  median {second} / median {first}: {ratio:.2f}x")

    report(f"{a.rounds} interleaved rounds after {a.warmup} warm-up runs of each:",
           result["summary"], result["median_ratio"])
    if alone:
        report(f"then {a.rounds} runs of each alone:", result["alone"],
               result["alone_median_ratio"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
