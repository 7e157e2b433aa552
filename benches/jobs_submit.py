#!/usr/bin/env python3
"""Job submit throughput: jobs per second from `mezz job submit` to a
started attempt, and to SUCCEEDED, through a local cluster.

    python3 benches/jobs_submit.py MEZZ [--jobs 1000] [--batch 100] [--agents 2]

MEZZ is the `mezz` binary (a release build: cargo build --release --bin
mezz). The script starts `MEZZ dev` on loopback in a temporary directory
with its own jobs daemon state, submits --jobs jobs of `command: true` in
files of --batch jobs each (one SubmitJobs call per file), waits until
every job has ended, and prints one JSON object: the submit rate, the
rate of attempt starts (the jobs daemon records each start in the masters
before it launches), the rate of successes, and the latency from a job's
submission to its first attempt's start (p50, p99). Everything listens
on 127.0.0.1 only.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mezz")
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--agents", type=int, default=2)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="mezz-jobs-bench-")
    port = free_port()
    master = f"127.0.0.1:{port}"
    env = dict(os.environ, MEZZ_MASTER=master, XDG_STATE_HOME=os.path.join(tmp, "state"))
    dev = subprocess.Popen(
        [a.mezz, "dev", "--data-dir", os.path.join(tmp, "data"), "--port", str(port),
         "--agents", str(a.agents)],
        stdout=open(os.path.join(tmp, "dev.log"), "w"), stderr=subprocess.STDOUT,
        env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            r = subprocess.run([a.mezz, "agents"], env=env, capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.count("\n") > a.agents:
                break
            time.sleep(0.2)
        else:
            sys.exit("the cluster did not come up; see " + os.path.join(tmp, "dev.log"))

        files = []
        for b in range(0, a.jobs, a.batch):
            docs = [
                f"kind: command\nname: bench-{i}\ncpus: 0.01\nmem: 4\ncommand: 'true'\n"
                for i in range(b, min(a.jobs, b + a.batch))
            ]
            path = os.path.join(tmp, f"batch-{b}.yaml")
            with open(path, "w") as f:
                f.write("---\n".join(docs))
            files.append(path)

        t0 = time.time()
        for path in files:
            r = subprocess.run([a.mezz, "job", "submit", path], env=env, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"submit failed: {r.stderr}")
        t_submitted = time.time()

        jobs = []
        deadline = time.time() + 600
        while time.time() < deadline:
            r = subprocess.run([a.mezz, "job", "list", "--json", "--limit", str(a.jobs + 10)],
                               env=env, capture_output=True, text=True)
            if r.returncode == 0:
                jobs = json.loads(r.stdout)["jobs"]
                if len(jobs) >= a.jobs and all(j["state"] == "SUCCEEDED" for j in jobs):
                    break
            time.sleep(0.5)
        else:
            sys.exit("the jobs did not all succeed within 600 s")

        starts = [j["attempts"][0]["start"] for j in jobs if j["attempts"]]
        ends = [j["finished_at"] for j in jobs]
        waits = [j["attempts"][0]["start"] - j["submitted_at"] for j in jobs if j["attempts"]]
        first = min(j["submitted_at"] for j in jobs)
        out = {
            "jobs": len(jobs),
            "batch": a.batch,
            "agents": a.agents,
            "submit_s": round(t_submitted - t0, 3),
            "submitted_per_s": round(len(jobs) / (t_submitted - t0), 1),
            "started_per_s": round(len(starts) / (max(starts) - first), 1),
            "succeeded_per_s": round(len(ends) / (max(ends) - first), 1),
            "submit_to_start_p50_s": round(pct(waits, 0.5), 3),
            "submit_to_start_p99_s": round(pct(waits, 0.99), 3),
        }
        print(json.dumps(out))
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
        state = os.path.join(tmp, "state", "mezz", "jobs")
        for d in os.listdir(state) if os.path.isdir(state) else []:
            info = os.path.join(state, d, "daemon.json")
            if os.path.exists(info):
                try:
                    os.kill(json.load(open(info))["pid"], signal.SIGKILL)
                except (OSError, ValueError, KeyError):
                    pass
        if os.environ.get("KEEP"):
            print("kept " + tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
