"""A PySpark application with answers known in closed form.

Usage: sum_squares.py N EXECUTORS

Waits until EXECUTORS executors have registered (so the jobs run on all
of them), then over 1..N computes the sum, the sum of squares and the
count of multiples of 7, checks them against their closed forms, and
prints them with the executors that ran tasks.
"""

import sys
import time

from pyspark.sql import SparkSession


def executors(sc):
    # Block managers by address; the driver's own is one of them.
    return sc._jsc.sc().getExecutorMemoryStatus().size() - 1


def main():
    n = int(sys.argv[1])
    want = int(sys.argv[2])
    spark = SparkSession.builder.getOrCreate()
    sc = spark.sparkContext
    deadline = time.time() + 180
    while executors(sc) < want:
        if time.time() > deadline:
            print(f"only {executors(sc)} of {want} executors registered", file=sys.stderr)
            sys.exit(3)
        time.sleep(0.2)
    print(f"executors registered: {executors(sc)}", flush=True)

    rdd = sc.parallelize(range(1, n + 1), want * 4)
    total = rdd.sum()
    squares = rdd.map(lambda x: x * x).sum()
    sevens = rdd.filter(lambda x: x % 7 == 0).count()
    # Which executor processes ran partitions: their worker directories
    # differ, so their working directories do too.
    import os
    ran_on = sorted(set(rdd.mapPartitions(lambda _: [os.getcwd()]).collect()))

    assert total == n * (n + 1) // 2, total
    assert squares == n * (n + 1) * (2 * n + 1) // 6, squares
    assert sevens == n // 7, sevens
    print(f"sum={total} sum_of_squares={squares} multiples_of_7={sevens}", flush=True)
    for d in ran_on:
        print(f"ran in {d}", flush=True)
    # The driver JVM's scratch space: its task's sandbox, not /tmp.
    tmp = spark.sparkContext._jvm.java.lang.System.getProperty("java.io.tmpdir")
    print(f"driver tmpdir {tmp}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
