"""A PySpark application that holds its executors, for tests that act on
a running application.

Usage: hold.py EXECUTORS sleep      wait for the executors, print "ready",
                                    then sleep (until killed)
       hold.py EXECUTORS replace N  wait for the executors, print "ready",
                                    wait until an executor that was not
                                    there at first registers (a replaced
                                    worker's), then sum 1..N and print it
"""

import sys
import time

from pyspark.sql import SparkSession


def executor_ids(sc):
    ids = sc._jsc.sc().getExecutorIds().mkString(",")
    return set(i for i in ids.split(",") if i)


def wait_until(what, cond, secs=300):
    deadline = time.time() + secs
    while not cond():
        if time.time() > deadline:
            print(f"timed out waiting for {what}", file=sys.stderr, flush=True)
            sys.exit(3)
        time.sleep(0.2)


def main():
    want = int(sys.argv[1])
    mode = sys.argv[2]
    sc = SparkSession.builder.getOrCreate().sparkContext
    wait_until(f"{want} executors", lambda: len(executor_ids(sc)) >= want)
    first = executor_ids(sc)
    print(f"ready: executors {','.join(sorted(first))}", flush=True)
    if mode == "sleep":
        time.sleep(600)
        return
    wait_until("a new executor", lambda: executor_ids(sc) - first)
    new = sorted(executor_ids(sc) - first)
    print(f"new executor {','.join(new)}", flush=True)
    n = int(sys.argv[3])
    total = sc.parallelize(range(1, n + 1), want * 2).sum()
    assert total == n * (n + 1) // 2, total
    print(f"sum={total}", flush=True)


if __name__ == "__main__":
    main()
