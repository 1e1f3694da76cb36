"""The seed workload's two queries on Spark Structured Streaming, for comparison.

Run by benchmarks/bench.py (which sets PYSPARK_SUBMIT_ARGS with the Kafka connector
jars). Prints one JSON line: wall seconds, per-batch durations (ms) and the result.

  Query 1: filter(lower(content) contains "vulnerability" & severity == "High")
           .groupBy("source_ip").count().orderBy(desc("count")), complete mode
  Query 2: filter(lower(content) contains "crash" & severity in (High, Critical))
           .withWatermark("event_time", "30 seconds")
           .groupBy(window(event_time, "10 seconds"), "user_id").count()
           .filter(count > 2), append mode
"""

import argparse
import json
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

SCHEMA = T.StructType(
    [
        T.StructField("timestamp", T.LongType()),
        T.StructField("status", T.StringType()),
        T.StructField("severity", T.StringType()),
        T.StructField("source_ip", T.StringType()),
        T.StructField("user_id", T.StringType()),
        T.StructField("content", T.StringType()),
    ]
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--query", choices=["q1", "q2"], required=True)
    ap.add_argument("--bootstrap")
    ap.add_argument("--topic")
    ap.add_argument("--path", help="a directory of JSON-lines files instead of Kafka")
    ap.add_argument("--max-per-trigger", type=int, default=1_000_000)
    ap.add_argument("--checkpoint", required=True)
    args = ap.parse_args()

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("sluice-bench")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")

    if args.path:
        logs = spark.readStream.schema(SCHEMA).option("maxFilesPerTrigger", 1).json(args.path)
    else:
        raw = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", args.bootstrap)
            .option("subscribe", args.topic)
            .option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", args.max_per_trigger)
            .load()
        )
        logs = raw.select(F.from_json(F.col("value").cast("string"), SCHEMA).alias("r")).select("r.*")

    results = []
    if args.query == "q1":
        out = (
            logs.filter(F.lower("content").contains("vulnerability") & (F.col("severity") == "High"))
            .groupBy("source_ip")
            .count()
            .orderBy(F.desc("count"))
        )
        mode = "complete"

        def sink(df, _batch_id):
            results.clear()
            results.extend([r["source_ip"], r["count"]] for r in df.collect())

    else:
        out = (
            logs.filter(
                F.lower("content").contains("crash") & F.col("severity").isin("High", "Critical")
            )
            .withColumn("event_time", F.timestamp_millis("timestamp"))
            .withWatermark("event_time", "30 seconds")
            .groupBy(F.window("event_time", "10 seconds"), "user_id")
            .count()
            .filter("count > 2")
        )
        mode = "append"

        def sink(df, _batch_id):
            for r in df.collect():
                w = r["window"]
                results.append(
                    [w["start"].strftime("%Y-%m-%d %H:%M:%S"), w["end"].strftime("%Y-%m-%d %H:%M:%S"), r["user_id"], r["count"]]
                )

    started = time.time()
    q = (
        out.writeStream.outputMode(mode)
        .foreachBatch(sink)
        .option("checkpointLocation", args.checkpoint)
        .trigger(availableNow=True)
        .start()
    )
    q.awaitTermination()
    wall = time.time() - started
    durations = [p["durationMs"].get("triggerExecution", 0) for p in q.recentProgress]
    rows = sum(p.get("numInputRows", 0) for p in q.recentProgress)
    print(json.dumps({"seconds": wall, "batches": durations, "spark_input_rows": rows, "result": results}))
    sys.stdout.flush()
    spark.stop()


if __name__ == "__main__":
    main()
