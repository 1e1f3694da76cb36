//! Fuzzed records through the decoder and the raw-byte prefilter.
//!
//! Valid seed-workload and Nexmark records are mutated by a seeded mutator (byte and
//! bit flips, truncation, JSON escapes of letters in keys and values, `\u0000`, invalid
//! UTF-8, surrogates, deep nesting, 10 MB strings, duplicate keys, numbers out of
//! range, wrong types, a BOM, whitespace, trailing garbage) and decoded in chunks of
//! random sizes. Every record must come out exactly once: as the row serde_json reads
//! for the declared schema (compared value by value), or as a malformed entry with its
//! partition, offset and bytes when serde_json does not read it so. The prefilter may
//! only skip records that serde_json does not read or whose filtered column lacks the
//! literal.
//!
//! `SLUICE_FUZZ_RECORDS=N` (default 200 000) sets how many mutated records the
//! in-process check takes; `SLUICE_FUZZ_SEED` its seed. The Kafka test sends a share
//! of them through a real broker and the `sluice` binary with `--dead-letter`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMillisecondType, UInt32Type,
};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;
use sluice::decode::prefilter::Prefilter;
use sluice::decode::{Decoded, JsonDecoder, Payloads};

use common::*;

/// One decoded value, comparable across the two readings.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    /// Compared by bits, so `-0.0 != 0.0` and every NaN is itself.
    Float(u64),
    Str(String),
}

/// The seed workload's records (a few with the extra term) and Nexmark bids,
/// auctions and people, as JSON payloads.
fn seeds(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut maker = sluice::gen::RecordMaker::new(&sluice::gen::RecordSpec {
        seed: 7,
        term: Some("crash".into()),
        term_rate: 5,
        max_disorder_ms: 100,
    });
    for i in 0..n / 2 {
        let mut buf = Vec::new();
        maker.append(1_768_402_339_337 + i as i64, &mut buf);
        out.push(buf);
    }
    let cfg = nexmark::config::NexmarkConfig {
        base_time: 0,
        ..Default::default()
    };
    for e in nexmark::EventGenerator::new(cfg).take(n - n / 2) {
        let mut buf = Vec::new();
        sluice::source::nexmark::write_json(&e, &mut buf).unwrap();
        out.push(buf);
    }
    out
}

/// The schemas records are decoded with: the seed's (projected, so other fields are
/// skipped), Nexmark's bid, and one with narrower and other types over the same fields.
fn schemas() -> Vec<SchemaRef> {
    let f = |n: &str, t: DataType| Field::new(n, t, true);
    vec![
        Arc::new(Schema::new(vec![
            f("timestamp", DataType::Int64),
            f("severity", DataType::Utf8),
            f("content", DataType::Utf8),
        ])),
        sluice::source::nexmark::schema(nexmark::event::EventType::Bid),
        Arc::new(Schema::new(vec![
            f("auction", DataType::Int32),
            f("price", DataType::Float64),
            f("bidder", DataType::UInt32),
            f("channel", DataType::Utf8),
            f(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, None),
            ),
            f("status", DataType::Utf8),
        ])),
    ]
}

/// A seeded mutator of JSON payloads.
struct Mutator {
    rng: fastrand::Rng,
}

impl Mutator {
    /// One to three mutations of `seed` (and now and then none at all).
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut p = seed.to_vec();
        let rounds = match self.rng.u8(0..10) {
            0 => 0,
            1..=6 => 1,
            7..=8 => 2,
            _ => 3,
        };
        for _ in 0..rounds {
            self.once(&mut p);
        }
        p
    }

    fn once(&mut self, p: &mut Vec<u8>) {
        let r = &mut self.rng;
        let at = |r: &mut fastrand::Rng, p: &Vec<u8>| r.usize(0..=p.len());
        match r.u8(0..19) {
            0 => {
                if !p.is_empty() {
                    let i = r.usize(0..p.len());
                    p[i] = r.u8(..);
                }
            }
            1 => {
                if !p.is_empty() {
                    let i = r.usize(0..p.len());
                    p[i] ^= 1 << r.u8(0..8);
                }
            }
            2 => p.truncate(at(r, p)),
            3 => escape_a_letter(r, p),
            4 => insert_in_a_string(r, p, br"\u0000"),
            5 => {
                let bad: &[&[u8]] = &[
                    b"\xff",
                    b"\xc3",
                    b"\xc0\xaf",
                    b"\xed\xa0\x80",
                    b"\xf4\x90\x80\x80",
                ];
                let b = bad[r.usize(0..bad.len())];
                insert_in_a_string(r, p, b);
            }
            6 => {
                let s: &[&[u8]] = &[
                    br"\ud83d\ude00",
                    br"\ud800",
                    br"\udc00",
                    br"\ud800\u0041",
                    br"\uDBFF\uDFFF",
                ];
                let b = s[r.usize(0..s.len())];
                insert_in_a_string(r, p, b);
            }
            7 => {
                let depth = [5, 100, 127, 128, 129, 200, 2000][r.usize(0..7)];
                let (open, close) = if r.bool() {
                    ("[", "]")
                } else {
                    ("{\"d\":", "}")
                };
                let v = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                add_field(r, p, "deep", &v);
            }
            8 => {
                // A 10 MB string, now and then; otherwise a long one.
                let len = if r.u32(0..20_000) == 0 {
                    10 << 20
                } else {
                    r.usize(1000..5000)
                };
                let v = format!("\"{}\"", "x".repeat(len));
                let key = ["content", "channel", "big"][r.usize(0..3)];
                add_field(r, p, key, &v);
            }
            9 => {
                // A duplicate of one of the decoded keys, with another value.
                let key = [
                    "timestamp",
                    "severity",
                    "content",
                    "auction",
                    "price",
                    "channel",
                    "bidder",
                ][r.usize(0..7)];
                let v = ["1", "\"dup\"", "null", "-7", "2.5"][r.usize(0..5)];
                add_field(r, p, key, v);
            }
            10 | 11 => replace_a_value(r, p, NUMBERS),
            12 | 13 => replace_a_value(r, p, WRONG_TYPES),
            14 => p.splice(0..0, *b"\xef\xbb\xbf").for_each(drop),
            15 => {
                let ws = [b' ', b'\t', b'\n', b'\r', 0x0c, 0][r.usize(0..6)];
                let i = at(r, p);
                p.insert(i, ws);
            }
            16 => {
                let tail: &[&[u8]] = &[b"x", b"}", b",", b" {\"a\":1}", b"\n", b"[]"];
                p.extend_from_slice(tail[r.usize(0..tail.len())]);
            }
            17 => {
                // Delete a span.
                let i = at(r, p);
                let j = (i + r.usize(0..8)).min(p.len());
                p.drain(i..j);
            }
            _ => {
                let what: &[&[u8]] = &[b"", b"null", b"[]", b"{}", b"\"s\"", b"1", b"{\"a\":}"];
                *p = what[r.usize(0..what.len())].to_vec();
            }
        }
    }
}

const NUMBERS: &[&str] = &[
    "99999999999999999999",
    "-99999999999999999999",
    "1e400",
    "-1e400",
    "2147483648",
    "-2147483649",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "1.5",
    "-0",
    "-0.0",
    "1e2",
    "1E-2",
    "0.1",
    "123456789.123456789e-3",
    "01",
    "1.",
    ".5",
    "+1",
    "NaN",
    "Infinity",
];

const WRONG_TYPES: &[&str] = &[
    "\"123\"",
    "\"1.5\"",
    "\"2026-01-14T09:00:00Z\"",
    "\"true\"",
    "true",
    "false",
    "null",
    "[1]",
    "{\"a\":1}",
    "12",
    "\"\"",
    "\"\\\"quoted\\\"\"",
    "tru",
    "nul",
];

/// Byte ranges of the JSON strings in `p` (between the quotes, escapes skipped over).
fn strings(p: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < p.len() && p[j] != b'"' {
                j += if p[j] == b'\\' { 2 } else { 1 };
            }
            out.push((start, j.min(p.len())));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Replaces one letter inside a key or string value by its `\u00XX` escape.
fn escape_a_letter(r: &mut fastrand::Rng, p: &mut Vec<u8>) {
    let letters: Vec<usize> = strings(p)
        .into_iter()
        .flat_map(|(a, b)| a..b)
        .filter(|&i| p[i].is_ascii_alphabetic())
        .collect();
    if letters.is_empty() {
        return;
    }
    let i = letters[r.usize(0..letters.len())];
    let esc = if r.bool() {
        format!("\\u{:04x}", p[i])
    } else {
        format!("\\u{:04X}", p[i])
    };
    p.splice(i..i + 1, esc.into_bytes()).for_each(drop);
}

/// Inserts `what` somewhere inside a key or string value.
fn insert_in_a_string(r: &mut fastrand::Rng, p: &mut Vec<u8>, what: &[u8]) {
    let s = strings(p);
    if s.is_empty() {
        return;
    }
    let (a, b) = s[r.usize(0..s.len())];
    let i = r.usize(a..=b.max(a));
    p.splice(i..i, what.iter().copied()).for_each(drop);
}

/// Adds `"key":value` as the first or last member of the object.
fn add_field(r: &mut fastrand::Rng, p: &mut Vec<u8>, key: &str, value: &str) {
    let member = format!("\"{key}\":{value}");
    if r.bool() {
        if let Some(i) = p.iter().position(|&c| c == b'{') {
            p.splice(i + 1..i + 1, format!("{member},").into_bytes())
                .for_each(drop);
        }
    } else if let Some(i) = p.iter().rposition(|&c| c == b'}') {
        p.splice(i..i, format!(",{member}").into_bytes())
            .for_each(drop);
    }
}

/// Replaces one member's value (after a `":`) by one of `with`.
fn replace_a_value(r: &mut fastrand::Rng, p: &mut Vec<u8>, with: &[&str]) {
    let colons: Vec<usize> = p
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == b"\":")
        .map(|(i, _)| i + 2)
        .collect();
    if colons.is_empty() {
        return;
    }
    let start = colons[r.usize(0..colons.len())];
    let mut end = start;
    if p.get(end) == Some(&b'"') {
        end += 1;
        while end < p.len() && p[end] != b'"' {
            end += if p[end] == b'\\' { 2 } else { 1 };
        }
        end = (end + 1).min(p.len());
    } else {
        while end < p.len() && !matches!(p[end], b',' | b'}') {
            end += 1;
        }
    }
    let v = with[r.usize(0..with.len())];
    p.splice(start..end, v.bytes()).for_each(drop);
}

/// What serde_json reads for `schema`: the row, or `None` when it does not read the
/// payload as one object whose declared fields have their column's types. The rules
/// are a typed reader's (serde's `i32`, `u32`, `f64`, `String`, …), independent of
/// the decoder: integers in range, any finite number for floats, strings for
/// strings, integer epoch milliseconds or an RFC 3339 string for timestamps.
fn serde_reading(payload: &[u8], schema: &Schema) -> Option<Vec<Cell>> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let obj = v.as_object()?;
    schema
        .fields()
        .iter()
        .map(|f| match obj.get(f.name()) {
            None | Some(Value::Null) => Some(Cell::Null),
            Some(v) => typed(v, f.data_type()),
        })
        .collect()
}

fn typed(v: &Value, dt: &DataType) -> Option<Cell> {
    Some(match dt {
        DataType::Int64 => Cell::Int(v.as_i64()?),
        DataType::Int32 => Cell::Int(i32::try_from(v.as_i64()?).ok()? as i64),
        DataType::UInt32 => Cell::Int(u32::try_from(v.as_u64()?).ok()? as i64),
        DataType::Float64 => Cell::Float(v.as_f64()?.to_bits()),
        DataType::Utf8 => Cell::Str(v.as_str()?.to_string()),
        DataType::Timestamp(TimeUnit::Millisecond, None) => match v {
            Value::String(s) => {
                let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
                Cell::Int(t.timestamp_millis())
            }
            v => Cell::Int(v.as_i64()?),
        },
        other => panic!("no reading for {other}"),
    })
}

/// Row `r` of `b` as cells.
fn row(b: &RecordBatch, r: usize) -> Vec<Cell> {
    b.columns()
        .iter()
        .map(|c| {
            if c.is_null(r) {
                return Cell::Null;
            }
            match c.data_type() {
                DataType::Int64 => Cell::Int(c.as_primitive::<Int64Type>().value(r)),
                DataType::Int32 => Cell::Int(c.as_primitive::<Int32Type>().value(r) as i64),
                DataType::UInt32 => Cell::Int(c.as_primitive::<UInt32Type>().value(r) as i64),
                DataType::Float64 => {
                    Cell::Float(c.as_primitive::<Float64Type>().value(r).to_bits())
                }
                DataType::Utf8 => Cell::Str(c.as_string::<i32>().value(r).to_string()),
                DataType::Timestamp(..) => {
                    Cell::Int(c.as_primitive::<TimestampMillisecondType>().value(r))
                }
                other => panic!("no cell for {other}"),
            }
        })
        .collect()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts of one fuzz run, for the message at the end.
#[derive(Debug, Default)]
struct Tally {
    records: u64,
    decoded: u64,
    malformed: u64,
    /// Screens (four literals per record) that skipped a record.
    skipped_by_a_screen: u64,
}

/// Decodes `records` with `schema` in chunks of random sizes and checks every record
/// against serde's reading; checks the prefilter's screen on each.
fn check_chunked(records: &[Vec<u8>], schema: &SchemaRef, rng: &mut fastrand::Rng, t: &mut Tally) {
    let decoder = JsonDecoder::new(Arc::clone(schema));
    // Literals the seed's queries screen on, with the column they are looked for in.
    let screens: Vec<(Prefilter, usize)> = ["crash", "vulnerability", "igh", "a"]
        .iter()
        .filter_map(|lit| {
            let col = schema
                .index_of("content")
                .or_else(|_| schema.index_of("channel"))
                .ok()?;
            Some((Prefilter::new(vec![lit.to_string()])?, col))
        })
        .collect();
    let mut start = 0;
    while start < records.len() {
        let len = [1, 2, 7, 64, 500, 2000][rng.usize(0..6)].min(records.len() - start);
        let chunk = &records[start..start + len];
        let mut p = Payloads::default();
        for (i, r) in chunk.iter().enumerate() {
            p.push((start + i) as i64 * 3, r); // offsets with gaps, as after compaction
        }
        let mut out = Decoded::default();
        decoder.decode(5, &p, &mut out);
        let mut seen = vec![0u8; len];
        for (b, offsets) in out.batches.iter().zip(&out.offsets) {
            assert_eq!(b.num_rows(), offsets.len());
            for (r, &o) in offsets.iter().enumerate() {
                let i = (o / 3) as usize - start;
                seen[i] += 1;
                let want = serde_reading(&chunk[i], schema);
                assert_eq!(
                    Some(row(b, r)),
                    want,
                    "decoded differently from serde: {:?}",
                    String::from_utf8_lossy(&chunk[i])
                );
                t.decoded += 1;
            }
        }
        for m in &out.malformed {
            let i = (m.offset / 3) as usize - start;
            seen[i] += 1;
            assert_eq!(m.partition, 5);
            assert_eq!(
                m.payload, chunk[i],
                "a dead letter must keep the exact bytes"
            );
            assert!(!m.error.is_empty());
            assert_eq!(
                serde_reading(&chunk[i], schema),
                None,
                "called malformed ({}) but serde reads it: {:?}",
                m.error,
                String::from_utf8_lossy(&chunk[i])
            );
            t.malformed += 1;
        }
        for (i, r) in chunk.iter().enumerate() {
            assert_eq!(
                seen[i],
                1,
                "record accounted for {} times: {:?}",
                seen[i],
                String::from_utf8_lossy(r)
            );
            for (screen, col) in &screens {
                if screen.must_decode(r) {
                    continue;
                }
                t.skipped_by_a_screen += 1;
                if let Some(Cell::Str(s)) = serde_reading(r, schema).map(|row| row[*col].clone()) {
                    assert!(
                        !s.to_lowercase().contains(&screen.literals()[0]),
                        "the prefilter skipped a record the filter keeps: {:?}",
                        String::from_utf8_lossy(r)
                    );
                }
            }
        }
        t.records += len as u64;
        start += len;
    }
}

#[test]
fn every_fuzzed_record_is_decoded_as_serde_reads_it_or_kept_aside() {
    let total = env_num("SLUICE_FUZZ_RECORDS", 200_000);
    let seed = env_num("SLUICE_FUZZ_SEED", 22);
    let base = seeds(2_000);
    let schemas = schemas();
    let mut mutator = Mutator {
        rng: fastrand::Rng::with_seed(seed),
    };
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let mut t = Tally::default();
    let per_round = 20_000;
    let mut done = 0;
    while done < total {
        let n = per_round.min(total - done) as usize;
        let records: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let i = mutator.rng.usize(0..base.len());
                mutator.mutate(&base[i])
            })
            .collect();
        let schema = &schemas[rng.usize(0..schemas.len())];
        check_chunked(&records, schema, &mut rng, &mut t);
        done += n as u64;
    }
    assert_eq!(t.records, total);
    assert_eq!(t.decoded + t.malformed, total);
    // The mutator must make both kinds, or the check above proves little.
    assert!(t.malformed > total / 10 && t.decoded > total / 10, "{t:?}");
    eprintln!("fuzzed records: {t:?}");
}

/// The mutated records, to Kafka, through `sluice run` in batches with a checkpoint
/// and a restart half-way, with `--dead-letter`: the output is exactly the rows serde
/// reads, every other record is a dead letter naming its table, topic, partition and
/// offset with its exact bytes, and the progress counts add up. Once decoding
/// everything (`--no-prefilter`), once with a filter the prefilter screens for.
#[test]
fn fuzzed_records_from_kafka_are_output_or_dead_lettered_exactly() {
    let broker = broker();
    let topic = unique_topic("fuzzed");
    sluice::kafka::ensure_topic(&broker, &topic, 2).unwrap();
    let base = seeds(400);
    let mut mutator = Mutator {
        rng: fastrand::Rng::with_seed(env_num("SLUICE_FUZZ_SEED", 22)),
    };
    let records: Vec<Vec<u8>> = (0..20_000)
        .map(|_| {
            let i = mutator.rng.usize(0..base.len());
            let mut r = mutator.mutate(&base[i]);
            r.truncate(200_000); // no 10 MB strings through Kafka: its message limit is 1 MB
            r
        })
        .collect();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker)
        .set("message.max.bytes", "1000000")
        .create()
        .unwrap();
    let send = |part: &[Vec<u8>]| {
        for (i, r) in part.iter().enumerate() {
            let mut rec = BaseRecord::<(), [u8]>::to(&topic)
                .payload(r)
                .partition((i % 2) as i32);
            while let Err((e, back)) = producer.send(rec) {
                assert!(
                    matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "{e}"
                );
                producer.poll(Duration::from_millis(10));
                rec = back;
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    let schema = schemas().remove(0);
    for (name, filter) in [
        ("all", ""),
        ("screened", " WHERE lower(content) LIKE '%crash%'"),
    ] {
        let dir = temp_dir(&format!("fuzzed-{name}"));
        let (out, dead, progress) = (
            dir.join("out"),
            dir.join("dead.jsonl"),
            dir.join("progress.jsonl"),
        );
        let sql = format!(
            "CREATE TABLE logs (timestamp BIGINT, severity VARCHAR, content VARCHAR) WITH (connector = 'kafka', \
             topic = '{topic}', bootstrap_servers = '{broker}', format = 'json');\n\
             CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\n\
             INSERT INTO out SELECT timestamp, severity, content FROM logs{filter};\n",
            out.display()
        );
        let q = dir.join("query.sql");
        std::fs::write(&q, sql).unwrap();
        let ckpt = dir.join("ckpt");
        let mut args = vec![
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            "3000",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--dead-letter",
            dead.to_str().unwrap(),
            "--progress-json",
            progress.to_str().unwrap(),
        ];
        if filter.is_empty() {
            args.push("--no-prefilter");
        }
        // The first half, a run, the second half, a run from the checkpoint. For "all",
        // that run first aborts after its second batch's sink write, before the commit:
        // the batch is replayed, and its dead letters must not be written twice.
        if name == "all" {
            send(&records[..10_000]);
        }
        run_ok(&args);
        if name == "all" {
            send(&records[10_000..]);
            let crashed = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(&args)
                .env("SLUICE_CRASH_AFTER_SINK", "5")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&crashed.stderr);
            assert!(
                said.contains("aborting after the sink wrote batch 5"),
                "{said}"
            );
        }
        run_ok(&args);

        // Where each record landed: partition i % 2, offset i / 2 (one producer, in order).
        let keep = |r: &Vec<u8>| -> Option<Vec<Cell>> {
            let row = serde_reading(r, &schema)?;
            match (&row[2], filter.is_empty()) {
                (_, true) => Some(row),
                (Cell::Str(c), false) if c.to_lowercase().contains("crash") => Some(row),
                _ => Some(Vec::new()), // read, but filtered out
            }
        };
        let mut want: Vec<String> = records
            .iter()
            .filter_map(keep)
            .filter(|r| !r.is_empty())
            .map(|r| format!("{r:?}"))
            .collect();
        let mut got: Vec<String> = written_rows(&out)
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got.len(), want.len(), "{name}: rows written");
        assert!(
            got == want,
            "{name}: the rows written differ from serde's reading"
        );

        let dead_text = std::fs::read_to_string(&dead).unwrap_or_default();
        let letters: BTreeMap<(i64, i64), Vec<u8>> = dead_text
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                assert!(v["batch_id"].is_u64(), "{l}");
                assert_eq!(v["table"], "logs");
                assert_eq!(v["topic"].as_str(), Some(topic.as_str()));
                assert!(!v["error"].as_str().unwrap().is_empty());
                let key = (
                    v["partition"].as_i64().unwrap(),
                    v["offset"].as_i64().unwrap(),
                );
                (key, dead_letter_payload(&v))
            })
            .collect();
        let unread: Vec<usize> = (0..records.len())
            .filter(|&i| serde_reading(&records[i], &schema).is_none())
            .collect();
        let records_read: u64 = progress_records(&progress)
            .iter()
            .map(|p| p["numInputRows"].as_u64().unwrap())
            .sum();
        let malformed: u64 = progress_records(&progress)
            .iter()
            .map(|p| p["malformedRows"].as_u64().unwrap())
            .sum();
        assert_eq!(
            records_read,
            records.len() as u64,
            "{name}: every record read once"
        );
        assert_eq!(
            malformed as usize,
            letters.len(),
            "{name}: each malformed record is one dead letter"
        );
        assert_eq!(
            dead_text.lines().count(),
            letters.len(),
            "{name}: a dead letter written twice (the replayed batch's)"
        );
        if filter.is_empty() {
            // Every record serde does not read is a dead letter, with its exact bytes.
            assert_eq!(letters.len(), unread.len(), "{name}: dead letters");
            for i in unread {
                let key = ((i % 2) as i64, (i / 2) as i64);
                assert_eq!(
                    letters.get(&key),
                    Some(&records[i]),
                    "{name}: dead letter at {key:?}"
                );
            }
        } else {
            // Screened records are not decoded, so only the others can be dead letters.
            let screened: u64 = progress_records(&progress)
                .iter()
                .map(|p| p["screenedRows"].as_u64().unwrap())
                .sum();
            assert!(screened > 0);
            assert!(letters.len() <= unread.len());
            for (&(p, o), bytes) in &letters {
                assert_eq!(
                    bytes,
                    &records[(o * 2 + p) as usize],
                    "{name}: dead letter at {p}/{o}"
                );
            }
        }
    }
}

/// The rows of the JSON-lines files under `dir` as cells of the log schema.
fn written_rows(dir: &std::path::Path) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            let cell = |k: &str, int: bool| match &v[k] {
                Value::Null => Cell::Null,
                x if int => Cell::Int(x.as_i64().unwrap()),
                x => Cell::Str(x.as_str().unwrap().to_string()),
            };
            rows.push(vec![
                cell("timestamp", true),
                cell("severity", false),
                cell("content", false),
            ]);
        }
    }
    rows
}
