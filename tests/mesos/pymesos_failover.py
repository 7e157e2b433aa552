"""A pymesos scheduler (pymesos 0.3.15, unmodified) that rides through a
master failover: it launches a task, reports it running, and, while the
test kills the leading master, keeps going until the task's final update
arrives from the new leader.

Usage: python pymesos_failover.py MASTER_HOST:PORT
Prints one JSON line per milestone; exits non-zero with the reason when a
step fails.
"""

import json
import logging
import queue
import sys
import time
import uuid

from pymesos import MesosSchedulerDriver, Scheduler

WAIT = 120.0


def say(**kw):
    print(json.dumps(kw), flush=True)


class Recorder(Scheduler):
    def __init__(self):
        self.events = queue.Queue()

    def registered(self, driver, framework_id, master_info):
        self.events.put(("registered", framework_id["value"]))

    def reregistered(self, driver, master_info):
        self.events.put(("reregistered", master_info))

    def resourceOffers(self, driver, offers):
        for o in offers:
            self.events.put(("offer", o))

    def statusUpdate(self, driver, status):
        self.events.put(("update", status))

    def error(self, driver, message):
        self.events.put(("error", message))


def main():
    master = sys.argv[1]
    logging.basicConfig(level=logging.WARNING)
    rec = Recorder()
    framework = dict(
        user="nobody", name="pymesos-failover", failover_timeout=300.0
    )
    driver = MesosSchedulerDriver(
        rec, framework, master, implicit_acknowledgements=False
    )
    driver.start()

    def ack(status):
        # While the stream is down pymesos cannot send; the update is sent
        # again after the re-subscription and acknowledged then.
        try:
            driver.acknowledgeStatusUpdate(status)
        except Exception as e:
            say(step="ack_failed", error=str(e))

    deadline = time.time() + WAIT
    framework_id = task_id = None
    reregistered = False
    states = []
    while "TASK_FINISHED" not in states:
        if time.time() > deadline:
            sys.exit("timed out; states so far %s" % states)
        try:
            kind, ev = rec.events.get(timeout=1.0)
        except queue.Empty:
            continue
        if kind == "error":
            sys.exit("ERROR event: %s" % ev)
        if kind == "registered":
            framework_id = ev
            say(step="subscribed", framework_id=ev, master=driver.master)
        elif kind == "reregistered":
            reregistered = True
            say(step="reregistered", master=driver.master)
        elif kind == "offer":
            if task_id is None:
                task_id = "sleep-" + uuid.uuid4().hex[:8]
                task = dict(
                    name="sleep",
                    task_id=dict(value=task_id),
                    agent_id=ev["agent_id"],
                    resources=[
                        dict(name="cpus", type="SCALAR", scalar=dict(value=0.1)),
                        dict(name="mem", type="SCALAR", scalar=dict(value=32.0)),
                    ],
                    command=dict(value="sleep 6; echo done"),
                )
                driver.launchTasks(ev["id"], [task])
                say(step="launched", task_id=task_id)
            else:
                try:
                    driver.declineOffer([ev["id"]], dict(refuse_seconds=3600.0))
                except Exception:
                    pass
        elif kind == "update" and ev["task_id"]["value"] == task_id:
            if ev["state"] in ("TASK_FAILED", "TASK_ERROR", "TASK_DROPPED"):
                sys.exit("task ended %s: %s" % (ev["state"], ev.get("message")))
            if not states or states[-1] != ev["state"]:
                states.append(ev["state"])
                say(step="state", state=ev["state"], master=driver.master)
            ack(ev)
    say(step="finished", states=states, reregistered=reregistered,
        framework_id=framework_id, master=driver.master)
    driver.stop()
    driver.join()


if __name__ == "__main__":
    main()
