"""The benchmark's trivial application: one small job, then exit."""

from pyspark.sql import SparkSession

sc = SparkSession.builder.getOrCreate().sparkContext
print(f"sum={sc.parallelize(range(1000), 2).sum()}", flush=True)
