"""A PySpark application whose job fails: a task raises, Spark gives up
after its retries, and the driver exits non-zero with the error."""

from pyspark.sql import SparkSession


def boom(x):
    if x == 3:
        raise ValueError("deliberate failure on element 3")
    return x


spark = SparkSession.builder.config("spark.task.maxFailures", "1").getOrCreate()
spark.sparkContext.parallelize(range(10), 2).map(boom).collect()
print("unreachable: the job should have failed")
