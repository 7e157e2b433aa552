"""A pymesos scheduler (pymesos 0.3.15, unmodified) against a Mezzanine
master's Mesos v1 API, the way a Mesos shop's framework would use it:
subscribe, take offers from both agents, launch a shell task with explicit
acknowledgements, reconcile, decline one agent with a long filter and see
no offer from it until REVIVE, tear down.

Usage: python pymesos_scheduler.py MASTER_HOST:PORT
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

WAIT = 60.0


def say(**kw):
    print(json.dumps(kw), flush=True)


class Recorder(Scheduler):
    """Hands every callback to the main thread through a queue."""

    def __init__(self):
        self.events = queue.Queue()

    def registered(self, driver, framework_id, master_info):
        self.events.put(("registered", framework_id["value"]))

    def resourceOffers(self, driver, offers):
        for o in offers:
            self.events.put(("offer", o))

    def statusUpdate(self, driver, status):
        self.events.put(("update", status))

    def error(self, driver, message):
        self.events.put(("error", message))


def scalar(name, value):
    return dict(name=name, type="SCALAR", scalar=dict(value=value))


def main():
    master = sys.argv[1]
    logging.basicConfig(level=logging.WARNING)
    rec = Recorder()
    framework = dict(user="nobody", name="pymesos-test", hostname="127.0.0.1")
    driver = MesosSchedulerDriver(
        rec, framework, master, implicit_acknowledgements=False
    )
    driver.start()

    def next_event(kinds, what, timeout=WAIT, on_other=None):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                sys.exit("timed out waiting for " + what)
            try:
                kind, ev = rec.events.get(timeout=left)
            except queue.Empty:
                continue
            if kind == "error":
                sys.exit("ERROR event: %s" % ev)
            if kind in kinds:
                return kind, ev
            if on_other:
                on_other(kind, ev)

    _, framework_id = next_event({"registered"}, "SUBSCRIBED")
    say(step="subscribed", framework_id=framework_id, version=driver.version)

    # Offers from both agents.
    offers = {}
    while len(offers) < 2:
        _, o = next_event({"offer"}, "offers from two agents")
        offers.setdefault(o["agent_id"]["value"], o)
    (agent_a, offer_a), (agent_b, offer_b) = sorted(offers.items())
    say(step="offers", agents=sorted(offers))

    # Keep agent B away for an hour; launch `echo` on agent A.
    driver.declineOffer([offer_b["id"]], dict(refuse_seconds=3600.0))
    task_id = "echo-" + uuid.uuid4().hex[:8]
    task = dict(
        name="echo",
        task_id=dict(value=task_id),
        agent_id=offer_a["agent_id"],
        resources=[scalar("cpus", 0.1), scalar("mem", 32.0)],
        command=dict(value="echo hello from mesos"),
    )
    driver.launchTasks(offer_a["id"], [task], dict(refuse_seconds=1.0))
    say(step="launched", task_id=task_id, agent_id=agent_a)

    seen_b = []
    offers_a = [0]

    def on_offer(kind, ev):
        # Offers of agent A keep coming (1 s filters); any of B is a bug.
        if kind == "offer":
            if ev["agent_id"]["value"] == agent_b:
                seen_b.append(ev["id"]["value"])
            else:
                offers_a[0] += 1
            driver.declineOffer([ev["id"]], dict(refuse_seconds=1.0))

    states = []
    while "TASK_FINISHED" not in states:
        _, st = next_event({"update"}, "TASK_FINISHED", on_other=on_offer)
        if st["task_id"]["value"] != task_id:
            continue
        states.append(st["state"])
        if st["state"] in ("TASK_FAILED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED"):
            sys.exit("task ended %s: %s" % (st["state"], st.get("message")))
        if "uuid" not in st or st.get("agent_id", {}).get("value") != agent_a:
            sys.exit("update without uuid or agent_id: %r" % (st,))
        driver.acknowledgeStatusUpdate(st)
    if "TASK_RUNNING" not in states:
        sys.exit("no TASK_RUNNING before TASK_FINISHED: %s" % states)
    say(step="finished", states=states)

    # Explicit reconciliation: the master answers with the task's state.
    driver.reconcileTasks([dict(task_id=dict(value=task_id))])
    while True:
        _, st = next_event({"update"}, "reconciliation answer", on_other=on_offer)
        if st["task_id"]["value"] == task_id:
            break
    if st["state"] != "TASK_FINISHED":
        sys.exit("reconciled state %s, expected TASK_FINISHED" % st["state"])
    say(step="reconciled", state=st["state"], reason=st.get("reason"))

    # Several allocation rounds pass (agent A is offered again and again)
    # without an offer of agent B.
    deadline = time.time() + WAIT
    while offers_a[0] < 3:
        if time.time() > deadline:
            sys.exit("agent A was not offered again")
        try:
            kind, ev = rec.events.get(timeout=1.0)
        except queue.Empty:
            continue
        on_offer(kind, ev)
    if seen_b:
        sys.exit("agent B was offered despite the 1 h filter: %s" % seen_b)
    say(step="filtered", offers_of_a=offers_a[0])

    driver.reviveOffers()
    while True:
        _, o = next_event({"offer"}, "an offer of agent B after REVIVE")
        driver.declineOffer([o["id"]], dict(refuse_seconds=1.0))
        if o["agent_id"]["value"] == agent_b:
            break
    say(step="revived", agent=agent_b)

    driver.stop()  # TEARDOWN
    driver.join()
    say(step="torn_down", framework_id=framework_id)


if __name__ == "__main__":
    main()
