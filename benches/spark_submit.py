#!/usr/bin/env python3
"""Times a trivial Spark application: `mezz spark submit` on a `mezz dev`
cluster against `spark-submit` on a hand-started standalone cluster (a
`spark-class` master and workers), alternating, in the same run.

For each run: submit -> first executor registered (the driver's log line
"Registered executor"), and submit -> exit. The hand-started cluster is
started once, before its runs are timed (the standing cluster an
operator would keep); its start-up (master and workers registered) is
timed separately.

Usage: benches/spark_submit.py --mezz target/release/mezz \
           --python ~/spark-venv/bin/python [--runs 3] [--executors 2]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import json

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "..", "tests", "spark", "trivial.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd, env=None):
    """Runs cmd; returns (seconds to 'Registered executor', seconds to exit, code)."""
    start = time.monotonic()
    first = [None]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)

    def read_err():
        for line in p.stderr:
            if first[0] is None and "Registered executor" in line:
                first[0] = time.monotonic() - start

    t = threading.Thread(target=read_err)
    t.start()
    out = p.stdout.read()
    p.wait()
    t.join()
    total = time.monotonic() - start
    if p.returncode != 0 or "sum=499500" not in out:
        print(f"run failed ({p.returncode}): {cmd}\n{out}", file=sys.stderr)
    return first[0], total, p.returncode


def wait_workers(ui_port, n, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
                if len(json.load(r).get("workers", [])) >= n:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the hand-started workers did not register")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mezz", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--executors", type=int, default=2)
    a = ap.parse_args()
    home = subprocess.check_output(
        [a.python, "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"], text=True
    ).strip()
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=a.python,
               PYSPARK_DRIVER_PYTHON=a.python, SPARK_HOME=home)
    env.pop("MEZZ_MASTER", None)
    work = tempfile.mkdtemp(prefix="spark-bench-")
    procs = []
    try:
        # mezz dev with as many agents as executors.
        port = free_port()
        dev = subprocess.Popen([a.mezz, "dev", "--agents", str(a.executors), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(dev)
        for line in dev.stdout:
            if "is up" in line:
                break
        # The hand-started standalone cluster.
        mport, mui = free_port(), free_port()
        t0 = time.monotonic()
        spark_class = os.path.join(home, "bin", "spark-class")
        denv = dict(env, SPARK_DAEMON_MEMORY="256m", SPARK_WORKER_DIR=os.path.join(work, "w"),
                    SPARK_LOCAL_DIRS=os.path.join(work, "l"))
        log = open(os.path.join(work, "daemons.log"), "w")
        procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master",
                                       "--host", "127.0.0.1", "--port", str(mport),
                                       "--webui-port", str(mui)], env=denv, stdout=log, stderr=log))
        for _ in range(a.executors):
            procs.append(subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker",
                                           "--host", "127.0.0.1", "--port", str(free_port()),
                                           "--webui-port", str(free_port()), "--cores", "1",
                                           "--memory", "512m", f"spark://127.0.0.1:{mport}"],
                                          env=denv, stdout=log, stderr=log))
        wait_workers(mui, a.executors)
        print(f"hand-started cluster up (master + {a.executors} workers registered): "
              f"{time.monotonic() - t0:.1f} s")
        common = []
        mezz_cmd = [a.mezz, "spark", "submit", "--master", f"127.0.0.1:{port}", "--python", a.python,
                    "--executors", str(a.executors), "--executor-memory", "512m",
                    "--driver-memory", "512m", *common, APP]
        hand_cmd = [os.path.join(home, "bin", "spark-submit"), "--master",
                    f"spark://127.0.0.1:{mport}", "--deploy-mode", "client",
                    "--conf", "spark.executor.memory=512m", "--conf", "spark.executor.cores=1",
                    "--conf", f"spark.cores.max={a.executors}", "--driver-memory", "512m",
                    *common, APP]
        print("| run | mezz: first executor | mezz: exit | hand: first executor | hand: exit |")
        print("|---|---|---|---|---|")
        for i in range(a.runs):
            m = timed(mezz_cmd, env)
            h = timed(hand_cmd, env)
            fmt = lambda x: "-" if x is None else f"{x:.1f} s"
            print(f"| {i + 1} | {fmt(m[0])} | {fmt(m[1])} | {fmt(h[0])} | {fmt(h[1])} |", flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
