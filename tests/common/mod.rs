//! Helpers shared by the integration tests: a real Kafka broker (started with
//! scripts/kafka-local.sh unless SLUICE_TEST_BROKER names one), unique topics, the
//! `sluice` binary, and a plain consumer that reads a topic back.
#![allow(dead_code)]

pub mod q2;
pub mod s3;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Bootstrap address of a running broker. Starts the local one (harmless when it is
/// already up) the first time a test asks.
pub fn broker() -> String {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER
        .get_or_init(|| {
            if let Ok(b) = std::env::var("SLUICE_TEST_BROKER") {
                return b;
            }
            let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "9092".into());
            let out = Command::new("bash")
                .arg(repo().join("scripts/kafka-local.sh"))
                .arg("start")
                .output()
                .expect("run scripts/kafka-local.sh");
            assert!(
                out.status.success(),
                "could not start the local Kafka broker:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            format!("127.0.0.1:{port}")
        })
        .clone()
}

/// A topic name no other test (or earlier run) uses.
pub fn unique_topic(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the `sluice` binary with `args` and returns its output.
pub fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("KAFKA_BROKER")
        .env_remove("KAFKA_TOPIC")
        .env_remove("TARGET_RPS")
        .env_remove("ADDITIONAL_TERM")
        .env_remove("ADDITIONAL_TERM_RATE")
        .env_remove("MAX_RECORDS")
        .output()
        .expect("run sluice")
}

/// Like [`sluice`], but panics with its stderr unless it succeeded.
pub fn sluice_ok(args: &[&str]) -> Output {
    let out = sluice(args);
    assert!(
        out.status.success(),
        "sluice {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Like [`sluice_ok`], returning stdout and stderr as text.
pub fn run_ok(args: &[&str]) -> (String, String) {
    let out = sluice_ok(args);
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// One record read back from Kafka.
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    /// The message's Kafka timestamp in epoch ms, when it has one.
    pub timestamp_ms: Option<i64>,
}

/// Reads every record of every partition of `topic`, from the beginning up to the high
/// watermark at the time of the call.
pub fn consume_all(broker: &str, topic: &str) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "sluice-tests")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut out = Vec::new();
    for p in 0..partitions {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if hi <= lo {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(lo))
            .unwrap();
        consumer.assign(&tpl).expect("assign");
        let mut next = lo;
        while next < hi {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    out.push(Consumed {
                        partition: m.partition(),
                        offset: m.offset(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        timestamp_ms: m.timestamp().to_millis(),
                    });
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => panic!("consume {topic}/{p}: {e}"),
                None => panic!("no record within 10 s at {topic}/{p} offset {next}"),
            }
        }
    }
    out
}

/// A committed message: its key and payload (`None`: a tombstone).
pub struct Committed {
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
}

/// Every committed message of `topic` (read_committed: what downstream consumers see),
/// in order within each partition.
pub fn committed(broker: &str, topic: &str) -> Vec<Committed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "sluice-tests-committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let parts = sluice::kafka::topic_partitions(broker, &[], topic)
        .unwrap()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut at_end = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    while at_end.len() < parts {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => out.push(Committed {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().map(<[u8]>::to_vec),
            }),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => panic!("nothing from {topic} within 10 s"),
        }
    }
    out
}

/// A loopback port where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One batch as the console sink printed it.
#[derive(Debug, Clone)]
pub struct PrintedBatch {
    pub id: u64,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Parses the console sink's output (Spark's look) back into batches.
pub fn parse_console(stdout: &str) -> Vec<PrintedBatch> {
    let mut out: Vec<PrintedBatch> = Vec::new();
    for line in stdout.lines() {
        if let Some(id) = line.strip_prefix("Batch: ") {
            out.push(PrintedBatch {
                id: id.trim().parse().expect("batch id"),
                header: Vec::new(),
                rows: Vec::new(),
            });
        } else if line.starts_with('|') {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim_end().to_string())
                .collect();
            let b = out.last_mut().expect("table before any batch header");
            if b.header.is_empty() {
                b.header = cells;
            } else {
                b.rows.push(cells);
            }
        }
    }
    out
}

/// Per batch, the offset ranges `(partition, start, end)` from the progress lines.
pub fn parse_offsets(stderr: &str) -> Vec<Vec<(i32, i64, i64)>> {
    stderr
        .lines()
        .filter(|l| l.starts_with("[sluice] batch ") && l.contains(" offsets"))
        .map(|l| {
            let tail = l.rsplit(" offsets").next().unwrap();
            tail.split_whitespace()
                .map(|r| {
                    let (p, range) = r.split_once(':').unwrap();
                    let (s, e) = range
                        .trim_matches(|c| c == '[' || c == ')')
                        .split_once(',')
                        .unwrap();
                    (p.parse().unwrap(), s.parse().unwrap(), e.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

/// Sum of the `N malformed` counts of the progress lines.
pub fn malformed_total(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.starts_with("[sluice] batch ") && l.contains(" offsets"))
        .map(|l| {
            let before = l.split(" malformed").next().unwrap();
            before.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum()
}

/// A workload record checked independently of Sluice's decoder: the six fields with
/// their JSON types, or `None` for anything else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogRecord {
    pub timestamp: i64,
    pub status: String,
    pub severity: String,
    pub source_ip: String,
    pub user_id: String,
    pub content: String,
}

pub fn parse_record(payload: &[u8]) -> Option<LogRecord> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let o = v.as_object()?;
    let s = |k: &str| o.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Some(LogRecord {
        timestamp: o.get("timestamp")?.as_i64()?,
        status: s("status")?,
        severity: s("severity")?,
        source_ip: s("source_ip")?,
        user_id: s("user_id")?,
        content: s("content")?,
    })
}

/// A query file reading `topic` on `broker` with the workload's columns, then `query`.
pub fn query_file(dir: &std::path::Path, broker: &str, topic: &str, query: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("query.sql");
    let sql = format!(
        "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
         user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
         bootstrap_servers = '{broker}', format = 'json');\n{query}\n"
    );
    std::fs::write(&path, sql).unwrap();
    path
}

/// Each batch's progress record, from a `--progress-json` file.
pub fn progress_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A dead letter's payload bytes: `payload` (UTF-8) or `payload_base64` (anything else).
pub fn dead_letter_payload(line: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    match (line["payload"].as_str(), line["payload_base64"].as_str()) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        _ => panic!("a dead letter needs exactly one of payload, payload_base64: {line}"),
    }
}

/// A fresh temporary directory.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique_topic(prefix));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Fills a new topic `prefix-…` with `sluice gen --target-rps 0 --quiet ARGS`.
fn gen_topic(prefix: &str, partitions: usize, args: &[&str]) -> (String, String) {
    let broker = broker();
    let topic = unique_topic(prefix);
    gen_into(&broker, &topic, partitions, args);
    (broker, topic)
}

/// Writes `sluice gen --target-rps 0 --quiet ARGS` into `topic` on `broker` (created
/// with `partitions` when missing).
pub fn gen_into(broker: &str, topic: &str, partitions: usize, args: &[&str]) {
    let parts = partitions.to_string();
    let mut all = vec![
        "gen",
        "--broker",
        broker,
        "--topic",
        topic,
        "--partitions",
        &parts,
        "--target-rps",
        "0",
        "--quiet",
    ];
    all.extend_from_slice(args);
    sluice_ok(&all);
}

/// Fills a new topic with `n` seeded records (`partitions` partitions) using `sluice gen`.
pub fn seeded_topic(
    prefix: &str,
    n: u64,
    partitions: usize,
    term: &str,
    rate: u64,
) -> (String, String) {
    let (n, rate) = (n.to_string(), rate.to_string());
    gen_topic(
        prefix,
        partitions,
        &[
            "--max-records",
            &n,
            "--seed",
            "7",
            "--additional-term",
            term,
            "--additional-term-rate",
            &rate,
        ],
    )
}

/// A new 2-partition topic with `n` records whose event time starts at a fixed instant
/// and advances `event_rate` records per second, with `term` in one record of `rate`.
pub fn event_time_topic(
    prefix: &str,
    n: u64,
    seed: u64,
    event_rate: u64,
    term: &str,
    rate: u64,
) -> (String, String) {
    let (n, seed, event_rate, rate) = (
        n.to_string(),
        seed.to_string(),
        event_rate.to_string(),
        rate.to_string(),
    );
    gen_topic(
        prefix,
        2,
        &[
            "--max-records",
            &n,
            "--seed",
            &seed,
            "--start-time-ms",
            "1768402330000",
            "--event-rate",
            &event_rate,
            "--additional-term",
            term,
            "--additional-term-rate",
            &rate,
        ],
    )
}

/// Query 1's filter, folded independently: "vulnerability" in any case, severity High.
pub fn q1_matches(r: &LogRecord) -> bool {
    r.content.to_lowercase().contains("vulnerability") && r.severity == "High"
}

/// Every record of the JSON-lines files in `dir`, parsed with serde_json.
pub fn records_in_files(dir: &std::path::Path) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        for line in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
            out.push(parse_record(line.as_bytes()).expect("a well-formed record"));
        }
    }
    out
}

/// Every row the console printed, over all batches.
pub fn printed_rows(stdout: &str) -> Vec<Vec<String>> {
    parse_console(stdout)
        .into_iter()
        .flat_map(|b| b.rows)
        .collect()
}

/// `v`, sorted.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Runs `query` with `--available-now` in batches of `batch` records and returns every
/// row the console printed, sorted.
pub fn all_rows_sorted(query: &std::path::Path, batch: &str) -> Vec<Vec<String>> {
    let (stdout, _) = run_ok(&[
        "run",
        query.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        batch,
        "--num-rows",
        "0",
    ]);
    sorted(printed_rows(&stdout))
}

/// Starts `sluice run ARGS`, kills it with SIGKILL after `delays[i]` unless it ended,
/// restarts, and finally lets one run finish. Returns how many runs were killed.
pub fn kill_and_restart(args: &[&str], delays: &[u64]) -> usize {
    let mut killed = 0;
    for &ms in delays {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(ms);
        // Poll for an early exit; the kill time itself is the random part of the test.
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    let out = sluice(args);
    assert!(
        out.status.success(),
        "final run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    killed
}

/// Kill delays from a fixed-seed generator: reproducible, spread over a run.
pub fn delays(n: usize, seed: u64, lo: u64, hi: u64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u64(lo..hi)).collect()
}

/// Runs `query` with a checkpoint at `ckpt` (`--available-now`, batches of `batch`
/// records every `trigger`), SIGKILLing it 12 times at delays from `seed`, then lets it
/// finish; asserts that at least 8 runs were killed mid-stream.
pub fn kill_and_restart_query(
    query: &std::path::Path,
    ckpt: &std::path::Path,
    batch: &str,
    trigger: &str,
    seed: u64,
) {
    let args = [
        "run",
        query.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        batch,
        "--trigger",
        trigger,
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    let killed = kill_and_restart(&args, &delays(12, seed, 150, 900));
    assert!(killed >= 8, "only {killed} runs were killed mid-stream");
}

/// Appends `n` more records made with `seed` to the existing `topic`.
pub fn append_records(broker: &str, topic: &str, n: u64, seed: u64) {
    append_records_with(broker, topic, n, seed, &[]);
}

/// [`append_records`] with more `sluice gen` arguments (`extra`).
pub fn append_records_with(broker: &str, topic: &str, n: u64, seed: u64, extra: &[&str]) {
    let (n, seed) = (n.to_string(), seed.to_string());
    let mut args = vec![
        "gen",
        "--broker",
        broker,
        "--topic",
        topic,
        "--target-rps",
        "0",
        "--quiet",
        "--max-records",
        &n,
        "--seed",
        &seed,
    ];
    args.extend(extra);
    sluice_ok(&args);
}

/// Runs `sql` as one batch DataFusion query in `ctx`; its rows as JSON lines (the file
/// sinks' encoding), in result order.
pub async fn batch_json(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let refs: Vec<_> = batches.iter().collect();
    let bytes = sluice::sink::json_lines(&refs).unwrap();
    sluice::sink::json_rows(&bytes)
        .map(|l| String::from_utf8(l.to_vec()).unwrap())
        .collect()
}

/// `records` (log records as read back from a topic) as a batch DataFusion table `logs`.
pub fn log_table(records: &[Consumed]) -> datafusion::prelude::SessionContext {
    let ctx = datafusion::prelude::SessionContext::new();
    register_logs(&ctx, "logs", records);
    ctx
}

/// Registers `records` (log records as read back from a topic) in `ctx` as batch table
/// `name`.
pub fn register_logs(ctx: &datafusion::prelude::SessionContext, name: &str, records: &[Consumed]) {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let recs: Vec<LogRecord> = records
        .iter()
        .map(|c| parse_record(&c.payload).expect("a well-formed record"))
        .collect();
    let s = |f: fn(&LogRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(recs.iter().map(f)))
    };
    let schema = Arc::new(Schema::new(
        [
            ("timestamp", DataType::Int64),
            ("status", DataType::Utf8),
            ("severity", DataType::Utf8),
            ("source_ip", DataType::Utf8),
            ("user_id", DataType::Utf8),
            ("content", DataType::Utf8),
        ]
        .map(|(n, t)| Field::new(n, t, true))
        .to_vec(),
    ));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            recs.iter().map(|r| r.timestamp),
        )),
        s(|r| &r.status),
        s(|r| &r.severity),
        s(|r| &r.source_ip),
        s(|r| &r.user_id),
        s(|r| &r.content),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), cols).unwrap();
    let table = datafusion::datasource::MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.register_table(name, Arc::new(table)).unwrap();
}

/// Applies the changelog in the JSON-lines files under `dir` in file (batch) order,
/// checking it as it goes: `+I` adds a key that is absent, `-U`/`-D` remove exactly the
/// row held, `+U` follows its `-U`. Returns the rows left (by the columns `key`, without
/// `op`) and the kinds seen.
pub fn fold_changelog_files(
    dir: &std::path::Path,
    key: &[&str],
) -> (
    std::collections::BTreeMap<String, String>,
    std::collections::BTreeSet<String>,
) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut table = std::collections::BTreeMap::new();
    let mut kinds = std::collections::BTreeSet::new();
    for f in &files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let mut row: serde_json::Value = serde_json::from_str(line).unwrap();
            let op = row["op"].as_str().unwrap().to_string();
            let k: Vec<String> = key.iter().map(|k| row[*k].to_string()).collect();
            let k = k.join("/");
            row.as_object_mut().unwrap().remove("op");
            let value = row.to_string();
            match op.as_str() {
                "+I" => assert!(
                    table.insert(k, value).is_none(),
                    "+I of a present key: {line}"
                ),
                "+U" => assert!(
                    table.insert(k, value).is_none(),
                    "+U without its -U: {line}"
                ),
                "-U" | "-D" => assert_eq!(table.remove(&k), Some(value), "{op} of another row"),
                other => panic!("unknown op {other}"),
            }
            kinds.insert(op);
        }
    }
    (table, kinds)
}

/// Where a service script keeps its files: `$ENV` if set, else `~/.cache/DIR`
/// (`scripts/kafka-local.sh` and `scripts/s3-local.sh` use the same rule).
pub fn service_home(env: &str, dir: &str) -> PathBuf {
    std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap())
            .join(".cache")
            .join(dir)
    })
}
