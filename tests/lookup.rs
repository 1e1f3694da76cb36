//! Stream–static joins against a real Kafka broker and a real PostgreSQL server
//! (scripts/postgres-local.sh): the static table from CSV, Parquet or PostgreSQL, joined
//! inner, left and through IN (SELECT …), over many batches and two partitions, with a
//! SIGKILL or a checkpoint-and-restore in the middle; a reload mid-stream. Every result
//! is compared with an independent fold (serde_json over the records read back, the
//! owners table as the test wrote it).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use common::*;

/// The owners table: ips 192.168.1.0 ..= 79 of the generator's 0 ..= 99 (so some
/// records find no owner), six owners, three tiers.
fn owners() -> Vec<(String, String, i64)> {
    (0..80)
        .map(|i| (format!("192.168.1.{i}"), format!("o{}", i % 6), i % 3))
        .collect()
}

fn owner_map(rows: &[(String, String, i64)]) -> BTreeMap<String, (String, i64)> {
    rows.iter()
        .map(|(ip, o, t)| (ip.clone(), (o.clone(), *t)))
        .collect()
}

fn write_csv(path: &Path, rows: &[(String, String, i64)]) {
    let mut text = String::from("ip,owner,tier\n");
    for (ip, o, t) in rows {
        text.push_str(&format!("{ip},{o},{t}\n"));
    }
    // Written aside and renamed: a reload never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn write_parquet(path: &Path, rows: &[(String, String, i64)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ip", DataType::Utf8, false),
        Field::new("owner", DataType::Utf8, false),
        Field::new("tier", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// The local PostgreSQL server's connection string; starts it the first time.
fn postgres() -> String {
    static PG: OnceLock<String> = OnceLock::new();
    PG.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/postgres-local.sh"))
            .arg("start")
            .output()
            .expect("run scripts/postgres-local.sh");
        assert!(
            out.status.success(),
            "could not start PostgreSQL:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::env::var("PG_PORT").unwrap_or_else(|_| "5433".into());
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")
    })
    .clone()
}

fn psql(conn: &str, sql: &str) {
    let out = Command::new("psql")
        .args([conn, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A query file: the Kafka table `logs`, the static table `owners` declared by `owners`
/// (its WITH options), an optional JSON-lines sink `out`, and `query`.
fn lookup_query(
    dir: &Path,
    broker: &str,
    topic: &str,
    owners: &str,
    out: Option<&Path>,
    query: &str,
) -> PathBuf {
    let sink = match out {
        Some(o) => format!(
            "CREATE TABLE out WITH (connector = 'jsonl', path = '{}', rollover_seconds = '3600');\nINSERT INTO out ",
            o.display()
        ),
        None => String::new(),
    };
    let path = dir.join("q.sql");
    std::fs::write(
        &path,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, status VARCHAR, severity VARCHAR, source_ip VARCHAR, \
             user_id VARCHAR, content VARCHAR) WITH (connector = 'kafka', topic = '{topic}', \
             bootstrap_servers = '{broker}');\n\
             CREATE TABLE owners (ip VARCHAR, owner VARCHAR, tier BIGINT) WITH ({owners});\n\
             {sink}{query}\n"
        ),
    )
    .unwrap();
    path
}

const LEFT_JOIN: &str = "SELECT l.user_id, l.\"timestamp\", l.source_ip, o.owner FROM logs l \
                         LEFT JOIN owners o ON l.source_ip = o.ip WHERE l.severity = 'High';";

type Enriched = (String, i64, String, Option<String>);

fn left_join_expected(
    broker: &str,
    topic: &str,
    owners: &BTreeMap<String, (String, i64)>,
) -> Vec<Enriched> {
    let mut rows = Vec::new();
    for c in consume_all(broker, topic) {
        let r = parse_record(&c.payload).unwrap();
        if r.severity == "High" {
            let owner = owners.get(&r.source_ip).map(|o| o.0.clone());
            rows.push((r.user_id, r.timestamp, r.source_ip, owner));
        }
    }
    sorted(rows)
}

fn enriched_rows(file: &Path) -> Vec<Enriched> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["user_id"].as_str().unwrap().to_string(),
                v["timestamp"].as_i64().unwrap(),
                v["source_ip"].as_str().unwrap().to_string(),
                v["owner"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn all_enriched(dir: &Path) -> Vec<Enriched> {
    let mut rows = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        rows.extend(enriched_rows(&f.unwrap().path()));
    }
    sorted(rows)
}

#[test]
fn a_left_join_with_a_csv_table_is_exact_after_repeated_sigkill() {
    let (broker, topic) = seeded_topic("lk-csv", 30000, 2, "crash", 50);
    let dir = temp_dir("lk-csv");
    let csv = dir.join("owners.csv");
    write_csv(&csv, &owners());
    let expected = left_join_expected(&broker, &topic, &owner_map(&owners()));
    assert!(expected.iter().any(|r| r.3.is_none()) && expected.iter().any(|r| r.3.is_some()));

    let out = dir.join("out");
    let opts = format!(
        "connector = 'filesystem', path = '{}', format = 'csv'",
        csv.display()
    );
    let q = lookup_query(&dir, &broker, &topic, &opts, Some(&out), LEFT_JOIN);
    let ckpt = dir.join("ckpt");
    kill_and_restart_query(&q, &ckpt, "300", "60ms", 5);
    assert_eq!(all_enriched(&out), expected, "after repeated kills");
}

/// Counts per owner of the inner join, and per severity of the records whose ip is a
/// tier-1 owner's, computed independently.
fn join_counts_expected(
    broker: &str,
    topic: &str,
    owners: &BTreeMap<String, (String, i64)>,
) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let (mut by_owner, mut by_severity) = (BTreeMap::new(), BTreeMap::new());
    for c in consume_all(broker, topic) {
        let r = parse_record(&c.payload).unwrap();
        if let Some((owner, tier)) = owners.get(&r.source_ip) {
            *by_owner.entry(owner.clone()).or_insert(0) += 1;
            if *tier == 1 {
                *by_severity.entry(r.severity).or_insert(0) += 1;
            }
        }
    }
    (by_owner, by_severity)
}

/// Runs `query` (one group key, one count) in update mode in batches of 2,000 with a
/// checkpoint, stopping after what the topic holds; returns the last count printed per
/// key and how many batches ran.
fn run_counts(q: &Path, ckpt: &Path) -> (BTreeMap<String, i64>, usize) {
    let (stdout, stderr) = run_ok(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "2000",
        "--output-mode",
        "update",
        "--num-rows",
        "0",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ]);
    let mut last = BTreeMap::new();
    for row in printed_rows(&stdout) {
        last.insert(row[0].clone(), row[1].trim().parse::<i64>().unwrap());
    }
    (last, parse_offsets(&stderr).len())
}

/// Inner join and IN (SELECT …) over `owners_opts`, checkpointed halfway: the first run
/// reads 12,000 records, 12,000 more arrive, the second resumes from the checkpoint.
fn joins_resume_exactly(prefix: &str, owners_opts: &str) {
    let (broker, topic) = seeded_topic(prefix, 12000, 2, "crash", 50);
    let dir = temp_dir(prefix);
    let map = owner_map(&owners());
    let queries = [
        ("inner", "SELECT o.owner, count(*) AS n FROM logs l JOIN owners o ON l.source_ip = o.ip GROUP BY o.owner;"),
        ("in", "SELECT severity, count(*) AS n FROM logs WHERE source_ip IN (SELECT ip FROM owners WHERE tier = 1) GROUP BY severity;"),
    ];
    let mut firsts = Vec::new();
    for (name, sql) in queries {
        let qdir = dir.join(name);
        std::fs::create_dir_all(&qdir).unwrap();
        let q = lookup_query(&qdir, &broker, &topic, owners_opts, None, sql);
        let (first, batches) = run_counts(&q, &qdir.join("ckpt"));
        assert!(batches >= 6, "{name}: {batches} batches");
        firsts.push((q, first));
    }
    let (by_owner, by_severity) = join_counts_expected(&broker, &topic, &map);
    assert_eq!(firsts[0].1, by_owner);
    assert_eq!(firsts[1].1, by_severity);

    // 12,000 more records (another seed), then resume.
    append_records(&broker, &topic, 12000, 99);
    let (by_owner, by_severity) = join_counts_expected(&broker, &topic, &map);
    for ((q, first), expected) in firsts.into_iter().zip([by_owner, by_severity]) {
        let (second, batches) = run_counts(&q, &q.parent().unwrap().join("ckpt"));
        assert!(batches >= 6, "{batches} batches after the restore");
        // Update mode prints the groups that changed: the newest count per group wins.
        let mut merged = first;
        merged.extend(second);
        assert_eq!(merged, expected);
    }
}

#[test]
fn joins_with_a_parquet_table_resume_exactly_from_a_checkpoint() {
    let dir = temp_dir("lk-pq-data");
    let file = dir.join("owners.parquet");
    write_parquet(&file, &owners());
    joins_resume_exactly(
        "lk-pq",
        &format!(
            "connector = 'filesystem', path = '{}', format = 'parquet'",
            file.display()
        ),
    );
}

#[test]
fn joins_with_a_postgres_table_resume_exactly_from_a_checkpoint() {
    let conn = postgres();
    let table = unique_topic("owners").replace('-', "_");
    let mut sql = format!("CREATE TABLE {table} (ip text, owner varchar(8), tier integer, note numeric); INSERT INTO {table} VALUES ");
    let values: Vec<String> = owners()
        .iter()
        .map(|(ip, o, t)| format!("('{ip}', '{o}', {t}, 1.5)"))
        .collect();
    sql.push_str(&values.join(", "));
    psql(&conn, &sql);
    // The table: only the declared columns are read (the NUMERIC one is not).
    joins_resume_exactly(
        "lk-pg",
        &format!("connector = 'postgres', connection = '{conn}', table = '{table}'"),
    );
    // A query, and a clear error for an unreachable server.
    let dir = temp_dir("lk-pg-err");
    let nowhere = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        closed_port()
    );
    let q = lookup_query(
        &dir,
        "127.0.0.1:1",
        "t",
        &format!("connector = 'postgres', connection = '{nowhere}', query = 'SELECT ip, owner, tier FROM x'"),
        None,
        "SELECT count(*) FROM logs l JOIN owners o ON l.source_ip = o.ip;",
    );
    let out = sluice(&["run", q.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("table owners") && err.contains("cannot connect"),
        "{err}"
    );
}

#[test]
fn a_reload_takes_effect_at_a_batch_boundary() {
    let (broker, topic) = seeded_topic("lk-reload", 40000, 2, "crash", 50);
    let dir = temp_dir("lk-reload");
    let csv = dir.join("owners.csv");
    let old = owners();
    let new: Vec<_> = old
        .iter()
        .map(|(ip, o, t)| (ip.clone(), format!("new-{o}"), *t))
        .collect();
    write_csv(&csv, &old);
    let out = dir.join("out");
    let opts = format!(
        "connector = 'filesystem', path = '{}', format = 'csv', refresh_interval = '100ms'",
        csv.display()
    );
    let q = lookup_query(&dir, &broker, &topic, &opts, Some(&out), LEFT_JOIN);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            q.to_str().unwrap(),
            "--max-records-per-batch",
            "1000",
            "--trigger",
            "150ms",
            "--status",
            "plain",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut batches_after_reload = 0;
    let (mut rewritten, mut reloaded) = (false, false);
    let mut said = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        said.push(line.clone());
        if line.starts_with("[sluice] batch 2:") && !rewritten {
            write_csv(&csv, &new);
            rewritten = true;
        }
        reloaded |= rewritten && line.contains("reloaded static table owners: 80 rows");
        if reloaded && line.starts_with("[sluice] batch ") {
            batches_after_reload += 1;
            if batches_after_reload == 3 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(batches_after_reload, 3, "{}", said.join("\n"));

    // Every batch's rows use one table version; both versions were used, old first.
    let (old_map, new_map) = (owner_map(&old), owner_map(&new));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut versions = Vec::new();
    for f in &files {
        let rows = enriched_rows(f);
        let owner_of =
            |m: &BTreeMap<String, (String, i64)>, ip: &str| m.get(ip).map(|o| o.0.clone());
        let old_ok = rows.iter().all(|r| r.3 == owner_of(&old_map, &r.2));
        let new_ok = rows.iter().all(|r| r.3 == owner_of(&new_map, &r.2));
        assert!(
            old_ok || new_ok,
            "{f:?} mixes table versions or has wrong owners"
        );
        versions.push(if old_ok { "old" } else { "new" });
    }
    let first_new = versions
        .iter()
        .position(|v| *v == "new")
        .expect("the reload was used");
    assert!(first_new >= 1, "{versions:?}");
    assert!(
        versions[first_new..].iter().all(|v| *v == "new"),
        "{versions:?}"
    );
}
