//! The Nexmark correctness harness: `sluice gen --nexmark` loads `EVENTS` events into
//! three Kafka topics of 2 partitions (once per test process), and each shipped query
//! (queries/nexmark) runs over those topics in many small batches, is SIGKILLed and
//! restarted from its checkpoint, and is compared with the same SQL run as one batch
//! DataFusion query over the same events (made here with the `nexmark` crate,
//! independently of Sluice's generator). And `sluice gen --nexmark` read back: counts
//! and field types.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionContext};
use nexmark::config::NexmarkConfig;
use nexmark::event::{Event, EventType};
use nexmark::EventGenerator;
use sluice::source::nexmark::{schema, write_json, DEFAULT_BASE_TIME};

const EVENTS: u64 = 200_000;

/// The Kafka topics' name prefix (`PREFIX-person`, `-auction`, `-bid`): filled with the
/// first `EVENTS` events by `sluice gen --nexmark` the first time a test asks.
fn topics() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = unique_topic("nxq");
        let events = EVENTS.to_string();
        sluice_ok(&[
            "gen",
            "--nexmark",
            "--nexmark-prefix",
            &prefix,
            "--broker",
            &broker(),
            "--partitions",
            "2",
            "--target-rps",
            "0",
            "--max-records",
            &events,
            "--quiet",
        ]);
        prefix
    })
}

/// The oracle's copy of the same events, one JSON-lines file per stream, written once.
fn events_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp_dir("nexmark-events");
        write_events(&dir);
        dir
    })
}

/// The first `EVENTS` events, one JSON-lines file per stream, in `dir`.
fn write_events(dir: &Path) {
    let config = NexmarkConfig {
        base_time: DEFAULT_BASE_TIME,
        ..Default::default()
    };
    let mut files: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for e in EventGenerator::new(config).take(EVENTS as usize) {
        let name = match e {
            Event::Person(_) => "person",
            Event::Auction(_) => "auction",
            Event::Bid(_) => "bid",
        };
        let out = files.entry(name).or_default();
        write_json(&e, out).unwrap();
        out.push(b'\n');
    }
    for (name, bytes) in files {
        std::fs::write(dir.join(format!("{name}.json")), bytes).unwrap();
    }
}

/// The query's SELECT run as one batch query over the events in `data`.
async fn batch_rows(
    query_file: &Path,
    data: &Path,
    oracle: Option<&str>,
) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(query_file).unwrap();
    let file = sluice::sql::QueryFile::parse("q", &text).unwrap();
    let sql = oracle.map_or_else(|| file.query.to_string(), str::to_string);
    let ctx = SessionContext::new();
    for udf in sluice::exec::window::udfs() {
        ctx.register_udf(udf); // tumble: the window of each row, as Sluice computes it
    }
    for (name, kind) in [
        ("bid", EventType::Bid),
        ("auction", EventType::Auction),
        ("person", EventType::Person),
    ] {
        let s = schema(kind);
        let path = data.join(format!("{name}.json"));
        ctx.register_json(
            name,
            path.to_str().unwrap(),
            JsonReadOptions::default().schema(&s),
        )
        .await
        .unwrap();
    }
    let side = arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("key", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("value", arrow::datatypes::DataType::Utf8, true),
    ]);
    let csv = repo().join("queries/nexmark/side_input.csv");
    ctx.register_csv(
        "side_input",
        csv.to_str().unwrap(),
        CsvReadOptions::new().schema(&side),
    )
    .await
    .unwrap();
    batch_json(&ctx, &sql)
        .await
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `queries/nexmark/NAME.sql` over the Kafka topics of [`topics`] (each nexmark table's
/// connector swapped for its topic, its columns, event time and delay kept), writing JSON
/// lines into `out` (`INSERT INTO` a jsonl table, replacing the query's own sink).
fn bounded_query(name: &str, dir: &Path, out: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join(format!("queries/nexmark/{name}.sql"))).unwrap();
    let mut file = sluice::sql::QueryFile::parse(name, &text).unwrap();
    let (prefix, broker) = (topics(), broker());
    let mut sql = String::new();
    for t in &file.tables {
        if t.connector() == "nexmark" {
            let columns: Vec<String> = t
                .schema
                .fields()
                .iter()
                .map(|f| format!("{} {}", f.name(), sql_type(f.data_type())))
                .collect();
            let mut with = format!(
                "connector = 'kafka', topic = '{prefix}-{}', bootstrap_servers = '{broker}'",
                t.options["event_type"]
            );
            for key in ["event_time", "watermark_delay"] {
                if let Some(v) = t.options.get(key) {
                    with.push_str(&format!(", {key} = '{v}'"));
                }
            }
            sql.push_str(&format!(
                "CREATE TABLE {} ({}) WITH ({with});\n",
                t.name,
                columns.join(", ")
            ));
        } else if t.connector() == "filesystem" {
            let path = repo().join(&t.options["path"]);
            sql.push_str(&format!(
                "CREATE TABLE {} (\"key\" BIGINT, \"value\" VARCHAR) WITH (connector = 'filesystem', path = '{}', format = 'csv');\n",
                t.name,
                path.display()
            ));
        }
    }
    file.insert_into = None;
    sql.push_str(&format!(
        "CREATE TABLE sluice_out WITH (connector = 'jsonl', path = '{}', rollover_seconds = '3600');\nINSERT INTO sluice_out {};\n",
        out.display(),
        file.query
    ));
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, sql).unwrap();
    path
}

/// The SQL name of a Nexmark column's type.
fn sql_type(t: &arrow::datatypes::DataType) -> &'static str {
    use arrow::datatypes::DataType::*;
    match t {
        Int64 => "BIGINT",
        Utf8 => "VARCHAR",
        Timestamp(..) => "TIMESTAMP",
        other => panic!("no SQL type for {other}"),
    }
}

/// Every row the JSON-lines sink wrote, file by file in batch order.
fn sink_rows(out: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for f in files {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            rows.push(serde_json::from_str(l).unwrap());
        }
    }
    rows
}

fn sorted_json(rows: Vec<serde_json::Value>) -> Vec<String> {
    sorted(rows.iter().map(|r| r.to_string()).collect())
}

/// Runs Nexmark query `name` with kills and restarts; `keys` are the group keys of an
/// updating query (the newest row per key is its result), empty for an append query.
fn check(name: &str, keys: &[&str]) {
    check_in(
        name,
        keys,
        if keys.is_empty() { "append" } else { "update" },
    );
}

/// [`check`] in output `mode`; in changelog mode the rows are folded by `keys` (`+I`
/// and `+U` set a key's row, `-U` and `-D` take it away).
fn check_in(name: &str, keys: &[&str], mode: &str) {
    check_batched(name, keys, mode, 8000, &[]);
}

/// [`check_in`] with batches of at most `per_batch` records (queries over the smaller
/// person and auction streams need smaller batches to run long enough to be killed).
fn check_batched(name: &str, keys: &[&str], mode: &str, per_batch: usize, extra: &[&str]) {
    check_with_oracle(name, keys, mode, (per_batch, extra), None);
}

/// Runs `queries/nexmark/NAME.sql` over the topics' `EVENTS` events in output `mode`, in
/// batches of at most `per_batch` records, SIGKILLed and restarted from its checkpoint;
/// returns the query file, the sink's dir and how many runs were killed.
fn run_with_kills(
    name: &str,
    mode: &str,
    per_batch: usize,
    extra: &[&str],
) -> (PathBuf, PathBuf, usize) {
    let per_batch = per_batch.to_string();
    let dir = temp_dir(&format!("nexmark-{name}"));
    let out = dir.join("out");
    let q = bounded_query(name, &dir, &out);
    let ckpt = dir.join("ckpt");
    let mut args = vec![
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        &per_batch,
        "--trigger",
        "80ms",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    args.extend(["--output-mode", mode]);
    args.extend(extra);
    // 23 batches of bids at most every 80 ms: the first run (killed after at most
    // 1.2 s) is always cut short, so each query restores from its checkpoint.
    let killed = kill_and_restart(&args, &delays(4, 3, 300, 1200));
    assert!(killed >= 1, "{name}: no run was killed mid-stream");
    (q, out, killed)
}

/// [`check_batched`] against `oracle` (SQL over the same tables) when given, instead of
/// the query's own text.
fn check_with_oracle(
    name: &str,
    keys: &[&str],
    mode: &str,
    (per_batch, extra): (usize, &[&str]),
    oracle: Option<&str>,
) {
    let (q, out, killed) = run_with_kills(name, mode, per_batch, extra);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let expected = rt.block_on(batch_rows(&q, events_dir(), oracle));
    assert!(
        !expected.is_empty(),
        "{name}: the batch query finds no rows"
    );
    let got = sink_rows(&out);
    if keys.is_empty() {
        assert_eq!(
            got.len(),
            expected.len(),
            "{name}: rows after {killed} kills"
        );
        assert_eq!(
            sorted_json(got),
            sorted_json(expected),
            "{name} after {killed} kills"
        );
    } else {
        let key =
            |r: &serde_json::Value| keys.iter().map(|k| r[*k].to_string()).collect::<Vec<_>>();
        let mut last = BTreeMap::new();
        for mut r in got {
            let op = r.as_object_mut().unwrap().remove("op");
            match op.as_ref().and_then(|o| o.as_str()) {
                Some("-U") | Some("-D") => {
                    assert_eq!(
                        last.remove(&key(&r)).as_ref(),
                        Some(&r),
                        "{name}: {op:?} of another row"
                    );
                }
                _ => {
                    last.insert(key(&r), r);
                }
            }
        }
        assert_eq!(
            sorted_json(last.into_values().collect()),
            sorted_json(expected),
            "{name} after {killed} kills"
        );
    }
}

#[test]
fn q0_passes_every_bid_through() {
    check("q0", &[]);
}

#[test]
fn q1_converts_prices() {
    check("q1", &[]);
}

#[test]
fn q2_selects_auctions() {
    check("q2", &[]);
}

#[test]
fn q10_adds_day_and_minute() {
    check("q10", &[]);
}

#[test]
fn q13_joins_the_side_input() {
    check("q13", &[]);
}

#[test]
fn q14_calculates() {
    check("q14", &[]);
}

#[test]
fn q15_counts_per_day() {
    check("q15", &["day"]);
}

#[test]
fn q16_counts_per_channel_and_day() {
    check("q16", &["channel", "day"]);
}

#[test]
fn q17_counts_per_auction_and_day() {
    check("q17", &["auction", "day"]);
}

#[test]
fn q3_joins_auctions_with_their_sellers() {
    check_batched("q3", &[], "append", 400, &[]);
}

#[test]
fn q4_averages_winning_bids_per_category() {
    check_in("q4", &["category"], "changelog");
}

#[test]
fn q9_keeps_the_winning_bid_of_each_auction() {
    check_in("q9", &["id"], "changelog");
}

#[test]
fn q20_expands_bids_with_their_auction() {
    check("q20", &[]);
}

#[test]
fn q18_keeps_the_last_bid_per_bidder_and_auction() {
    check_in("q18", &["bidder", "auction"], "changelog");
}

#[test]
fn q19_keeps_the_ten_best_bids_per_auction() {
    check_in("q19", &["auction", "rank_number"], "changelog");
}

#[test]
fn q21_extracts_channel_ids() {
    check("q21", &[]);
}

#[test]
fn q22_splits_urls() {
    check("q22", &[]);
}

/// The topics every query reads hold exactly the oracle's events, over both partitions.
#[test]
fn gen_nexmark_fills_three_topics_with_the_oracles_events() {
    let (prefix, broker) = (topics(), broker());
    // Per 50 events: 1 person, 3 auctions, 46 bids.
    let n = EVENTS / 50;
    for (stream, count) in [("person", n), ("auction", 3 * n), ("bid", 46 * n)] {
        let records = consume_all(&broker, &format!("{prefix}-{stream}"));
        assert_eq!(records.len() as u64, count, "{stream}");
        let partitions: std::collections::BTreeSet<i32> =
            records.iter().map(|r| r.partition).collect();
        assert_eq!(partitions.len(), 2, "{stream}: partitions {partitions:?}");
        for r in records.iter().take(200) {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            assert!(v["date_time"].is_u64(), "{stream}: {v}");
            match stream {
                "bid" => {
                    assert!(v["auction"].is_u64() && v["price"].is_u64() && v["url"].is_string())
                }
                "auction" => {
                    assert!(v["id"].is_u64() && v["item_name"].is_string() && v["expires"].is_u64())
                }
                _ => assert!(v["id"].is_u64() && v["email_address"].is_string()),
            }
        }
        let got = sorted(
            records
                .iter()
                .map(|r| String::from_utf8(r.payload.clone()).unwrap())
                .collect(),
        );
        let file = events_dir().join(format!("{stream}.json"));
        let want = sorted(
            std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect(),
        );
        assert!(
            got == want,
            "{stream}: the topic's records differ from the oracle's events"
        );
    }
}

/// Windowed queries: the last windows are closed at the end of the input
/// (`--close-windows-at-end`), so every window of the batch answer is emitted once.
fn check_windows(name: &str, per_batch: usize) {
    check_batched(name, &[], "append", per_batch, &["--close-windows-at-end"]);
}

#[test]
fn q7_keeps_the_highest_bids_of_each_window() {
    check_windows("q7", 8000);
}

#[test]
fn q8_pairs_new_people_with_their_auctions_in_the_same_window() {
    check_windows("q8", 400);
}

/// q5's batch answer without Sluice's hop(): each bid expanded into the five 10-second
/// windows (every 2 s) that hold it, with generate_series over date_bin.
const Q5_ORACLE: &str = "WITH w AS (\
      SELECT auction, s AS starttime, s + INTERVAL '10' SECOND AS endtime FROM \
        (SELECT auction, unnest(generate_series(date_bin(INTERVAL '2' SECOND, date_time) - INTERVAL '8' SECOND, \
                                                date_bin(INTERVAL '2' SECOND, date_time), INTERVAL '2' SECOND)) AS s \
         FROM bid) x), \
    ab AS (SELECT auction, count(*) AS num, starttime, endtime FROM w GROUP BY auction, starttime, endtime), \
    mb AS (SELECT max(num) AS maxn, starttime, endtime FROM ab GROUP BY starttime, endtime) \
    SELECT ab.auction, ab.num FROM ab JOIN mb \
      ON ab.starttime = mb.starttime AND ab.endtime = mb.endtime AND ab.num >= mb.maxn";

#[test]
fn q5_finds_the_hottest_auctions_of_each_sliding_window() {
    let close = ["--close-windows-at-end"];
    check_with_oracle("q5", &[], "append", (8000, &close), Some(Q5_ORACLE));
}

/// q11's batch answer without Sluice's session(): per bidder, a bid 10 s or more after
/// the previous one starts a new session (running sum over LAG), as Flink defines them.
const Q11_ORACLE: &str = "WITH g AS (\
      SELECT bidder, date_time, CASE WHEN lag(date_time) OVER (PARTITION BY bidder ORDER BY date_time) IS NULL \
        OR date_time - lag(date_time) OVER (PARTITION BY bidder ORDER BY date_time) >= INTERVAL '10' SECOND \
        THEN 1 ELSE 0 END AS new_session FROM bid), \
    s AS (SELECT bidder, date_time, sum(new_session) OVER (PARTITION BY bidder ORDER BY date_time \
        ROWS UNBOUNDED PRECEDING) AS sid FROM g) \
    SELECT bidder, count(*) AS bid_count, min(date_time) AS starttime, \
           max(date_time) + INTERVAL '10' SECOND AS endtime FROM s GROUP BY bidder, sid";

#[test]
fn q11_counts_each_bidders_sessions() {
    let close = ["--close-windows-at-end"];
    check_with_oracle("q11", &[], "append", (8000, &close), Some(Q11_ORACLE));
}

/// q12 windows by processing time, so which window holds a bid depends on the run; what
/// is fixed: each bidder's counts over all its windows add up to its bids, every window
/// is 10 s and epoch-aligned, and no (bidder, window) is emitted twice (across kills).
#[test]
fn q12_counts_every_bid_once_in_processing_time_windows() {
    let close = ["--close-windows-at-end"];
    let (q, out, killed) = run_with_kills("q12", "append", 8000, &close);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let oracle = "SELECT bidder, count(*) AS bid_count FROM bid GROUP BY bidder";
    let expected: BTreeMap<i64, i64> = rt
        .block_on(batch_rows(&q, events_dir(), Some(oracle)))
        .iter()
        .map(|r| {
            (
                r["bidder"].as_i64().unwrap(),
                r["bid_count"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut totals: BTreeMap<i64, i64> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in sink_rows(&out) {
        let bidder = r["bidder"].as_i64().unwrap();
        let (start, end) = (r["starttime"].to_string(), r["endtime"].to_string());
        assert!(
            seen.insert((bidder, start.clone())),
            "q12: window emitted twice: {r}"
        );
        let ms = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s.trim_matches('"'), "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| {
                    chrono::NaiveDateTime::parse_from_str(s.trim_matches('"'), "%Y-%m-%d %H:%M:%S")
                })
                .map(|t| t.and_utc().timestamp_millis())
                .unwrap_or_else(|e| panic!("q12: {s}: {e}"))
        };
        assert_eq!(ms(&end) - ms(&start), 10_000, "q12: {r}");
        assert_eq!(ms(&start) % 10_000, 0, "q12: not epoch-aligned: {r}");
        *totals.entry(bidder).or_default() += r["bid_count"].as_i64().unwrap();
    }
    assert_eq!(totals, expected, "q12 after {killed} kills");
}
