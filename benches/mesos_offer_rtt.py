"""Offer round trip of a pymesos framework through the Mesos v1 API.

Starts `mezz dev` (1 master, 1 agent), subscribes a pymesos 0.3.15
scheduler, and for each of --runs offers times, on the framework's side:

- offer → accepted: from pymesos handing over the OFFERS event to the
  ACCEPT (a LAUNCH of `true`) answered 202;
- offer → running: from the OFFERS event to the TASK_RUNNING update.

The framework answers each offer at once, so offer → running is the
master's OFFERS sent → ACCEPT received → TASK_RUNNING sent path plus two
loopback hops and pymesos's parsing. Each task is awaited to TASK_FINISHED
and acknowledged before the next offer is taken.

Usage: python benches/mesos_offer_rtt.py --mezz target/debug/mezz [--runs 100]
(the Python needs pymesos: `python tests/mesos/install.py` installs it)
"""

import argparse
import json
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from pymesos import MesosSchedulerDriver, Scheduler


def free_ports(n):
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + n > 65000:
            continue
        ok = True
        for p in range(base, base + n):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return base


class Recorder(Scheduler):
    def __init__(self):
        self.events = queue.Queue()

    def resourceOffers(self, driver, offers):
        now = time.perf_counter()
        for o in offers:
            self.events.put(("offer", o, now))

    def statusUpdate(self, driver, status):
        self.events.put(("update", status, time.perf_counter()))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round((len(xs) - 1) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mezz", required=True)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    port = free_ports(2)
    data = tempfile.mkdtemp(prefix="mesos-rtt-")
    dev = subprocess.Popen(
        [args.mezz, "dev", "--port", str(port), "--data-dir", data,
         "--resources", "cpus:4;mem:4096;disk:1000;ports:[31000-31099]"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        banner = dev.stdout.readline()
        if "is up" not in banner:
            sys.exit("mezz dev did not come up: " + banner)
        rec = Recorder()
        driver = MesosSchedulerDriver(
            rec, dict(user="nobody", name="offer-rtt"), "127.0.0.1:%d" % port,
            implicit_acknowledgements=False,
        )
        driver.start()
        accepted, running = [], []
        for i in range(args.runs + 5):  # 5 warm-up rounds
            while True:
                kind, o, t_offer = rec.events.get(timeout=60)
                if kind == "offer":
                    break
                driver.acknowledgeStatusUpdate(o)
            task_id = "rtt-" + uuid.uuid4().hex[:8]
            driver.launchTasks(o["id"], [dict(
                name="rtt", task_id=dict(value=task_id), agent_id=o["agent_id"],
                resources=[dict(name="cpus", type="SCALAR", scalar=dict(value=0.1)),
                           dict(name="mem", type="SCALAR", scalar=dict(value=32.0))],
                command=dict(value="true"),
            )], dict(refuse_seconds=0.0))
            t_accepted = time.perf_counter()
            t_running = None
            while True:
                kind, ev, t = rec.events.get(timeout=60)
                if kind == "offer":
                    driver.declineOffer([ev["id"]], dict(refuse_seconds=0.0))
                    continue
                driver.acknowledgeStatusUpdate(ev)
                if ev["task_id"]["value"] != task_id:
                    continue
                if ev["state"] == "TASK_RUNNING":
                    t_running = t
                if ev["state"] == "TASK_FINISHED":
                    break
                if ev["state"] not in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"):
                    sys.exit("task %s ended %s" % (task_id, ev["state"]))
            if i >= 5:
                accepted.append((t_accepted - t_offer) * 1000)
                running.append((t_running - t_offer) * 1000)
        driver.stop()
        driver.join()
        out = {"runs": args.runs}
        for name, xs in (("offer_to_accepted_ms", accepted), ("offer_to_running_ms", running)):
            out[name] = {"median": round(pct(xs, 0.5), 2), "p90": round(pct(xs, 0.9), 2),
                         "p99": round(pct(xs, 0.99), 2), "min": round(min(xs), 2),
                         "max": round(max(xs), 2)}
        print(json.dumps(out))
    finally:
        dev.terminate()
        dev.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
