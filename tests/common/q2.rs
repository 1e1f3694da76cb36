//! Query 2 (crashes per user in 10-second windows) for the recovery and fault tests:
//! its query file over a topic, its Parquet output read back, and an independent
//! computation of it over the topic's records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{consume_all, parse_record};

pub fn floor(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

pub fn write_query(
    dir: &Path,
    broker: &str,
    topic: &str,
    sink: &str,
    out: &Path,
    query: &str,
) -> PathBuf {
    write_query_with(dir, broker, topic, sink, "", out, query)
}

pub fn write_query_with(
    dir: &Path,
    broker: &str,
    topic: &str,
    sink: &str,
    sink_opts: &str,
    out: &Path,
    query: &str,
) -> PathBuf {
    let path = dir.join("q.sql");
    std::fs::write(
        &path,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
             user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
             bootstrap_servers = '{broker}', event_time = 'to_timestamp_millis(\"timestamp\")', \
             watermark_delay = '30 seconds');\n\
             CREATE TABLE out WITH (connector = '{sink}', path = '{}'{sink_opts});\nINSERT INTO out {query}\n",
            out.display()
        ),
    )
    .unwrap();
    path
}

pub fn parquet_rows(dir: &Path) -> Vec<(i64, String, i64)> {
    let mut rows = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b: RecordBatch = b.unwrap();
            let w = b.column(0).as_struct();
            let starts = w.column(0).as_primitive::<TimestampMillisecondType>();
            let users = b.column(1).as_string::<i32>();
            let counts = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                rows.push((starts.value(i), users.value(i).to_string(), counts.value(i)));
            }
        }
    }
    rows.sort();
    rows
}

pub const Q2: &str = "SELECT tumble(event_time, INTERVAL '10 seconds') AS \"interval\", user_id, count(*) AS crash_count \
                  FROM logs WHERE lower(content) LIKE '%crash%' AND severity IN ('High', 'Critical') \
                  GROUP BY tumble(event_time, INTERVAL '10 seconds'), user_id HAVING count(*) > 2;";

/// Query 2 computed independently over `topic`: (window start, user, count), sorted.
pub fn q2_expected(broker: &str, topic: &str) -> Vec<(i64, String, i64)> {
    let mut counts: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for c in consume_all(broker, topic) {
        let r = parse_record(&c.payload).unwrap();
        if r.content.to_lowercase().contains("crash")
            && (r.severity == "High" || r.severity == "Critical")
        {
            *counts
                .entry((floor(r.timestamp, 10_000), r.user_id))
                .or_insert(0) += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 2)
        .map(|((w, u), n)| (w, u, n))
        .collect()
}
