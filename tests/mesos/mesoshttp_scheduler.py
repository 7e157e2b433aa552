"""A mesoshttp scheduler (mesoshttp 0.4.2, unmodified) against a Mezzanine
master's Mesos v1 API: subscribe, launch a shell task from an offer, see
TASK_RUNNING and TASK_FINISHED (mesoshttp acknowledges each update itself),
reconcile, decline, revive, tear down.

mesoshttp hands an event over only when the next record's length arrives
(it reads the stream line by line), so each step may wait for the next
event, at worst a heartbeat.

Usage: python mesoshttp_scheduler.py http://MASTER_HOST:PORT
Prints one JSON line per milestone; exits non-zero with the reason when a
step fails.
"""

import json
import logging
import queue
import sys
import threading
import time
import uuid

from mesoshttp.client import MesosClient

WAIT = 120.0


def say(**kw):
    print(json.dumps(kw), flush=True)


def main():
    url = sys.argv[1]
    logging.basicConfig(level=logging.WARNING)
    events = queue.Queue()
    client = MesosClient(mesos_urls=[url], frameworkName="mesoshttp-test",
                         frameworkUser="nobody")
    client.on(MesosClient.SUBSCRIBED, lambda driver: events.put(("subscribed", driver)))
    client.on(MesosClient.OFFERS, lambda offers: events.put(("offers", offers)))
    client.on(MesosClient.UPDATE, lambda update: events.put(("update", update)))
    client.on(MesosClient.ERROR, lambda message: events.put(("error", message)))
    stream = threading.Thread(target=client.register, daemon=True)
    stream.start()

    def next_event(kinds, what, on_other=None):
        deadline = time.time() + WAIT
        while True:
            left = deadline - time.time()
            if left <= 0:
                sys.exit("timed out waiting for " + what)
            try:
                kind, ev = events.get(timeout=left)
            except queue.Empty:
                continue
            if kind == "error":
                sys.exit("ERROR event: %s" % ev)
            if kind in kinds:
                return kind, ev
            if on_other:
                on_other(kind, ev)

    _, driver = next_event({"subscribed"}, "SUBSCRIBED")
    say(step="subscribed", framework_id=client.frameworkId)

    _, offers = next_event({"offers"}, "an offer")
    offer = offers[0]
    task_id = "echo-" + uuid.uuid4().hex[:8]
    offer.accept([dict(
        name="echo",
        task_id=dict(value=task_id),
        agent_id=offer.get_offer()["agent_id"],
        resources=[dict(name="cpus", type="SCALAR", scalar=dict(value=0.1)),
                   dict(name="mem", type="SCALAR", scalar=dict(value=32.0))],
        command=dict(value="echo hello from mesoshttp"),
    )])
    for o in offers[1:]:
        o.decline()
    say(step="launched", task_id=task_id)

    def decline(kind, ev):
        if kind == "offers":
            for o in ev:
                o.decline(dict(filters=dict(refuse_seconds=3600.0)))

    states = []
    while "TASK_FINISHED" not in states:
        _, u = next_event({"update"}, "TASK_FINISHED", on_other=decline)
        st = u["status"]
        if st["task_id"]["value"] != task_id:
            continue
        if st["state"] in ("TASK_FAILED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED"):
            sys.exit("task ended %s: %s" % (st["state"], st.get("message")))
        states.append(st["state"])
    if "TASK_RUNNING" not in states:
        sys.exit("no TASK_RUNNING before TASK_FINISHED: %s" % states)
    say(step="finished", states=states)

    driver.reconcile([dict(task_id=dict(value=task_id))])
    while True:
        _, u = next_event({"update"}, "reconciliation answer", on_other=decline)
        if u["status"]["task_id"]["value"] == task_id:
            break
    say(step="reconciled", state=u["status"]["state"])

    driver.revive()
    next_event({"offers"}, "an offer after REVIVE")
    say(step="revived")

    driver.tearDown()
    say(step="torn_down", framework_id=client.frameworkId)


if __name__ == "__main__":
    main()
