//! Fuzzed query files through parsing and planning (`sluice explain`'s path, in
//! process): token swaps, deletions and repeats, truncation, unknown options, wrong
//! types, huge literals, deep nesting. Every case must end within a time limit with
//! either a plan or one readable error — a bounded message in the binary's format,
//! naming the file, with a line and column when the SQL does not parse — and never a
//! panic.
//!
//! `SLUICE_FUZZ_SQL=N` (default 2 000) sets the number of cases, `SLUICE_FUZZ_SEED`
//! the seed.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use sluice::exec::explain::ExplainOptions;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    explain: ExplainOptions,
}

/// Every query file the repository ships or tests with, but those reading static
/// tables (planning loads them: a file or a database, not what this test is about).
fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<PathBuf> = Vec::new();
    for dir in ["queries", "queries/nexmark"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            paths.push(e.unwrap().path());
        }
    }
    for e in std::fs::read_dir(root.join("tests/golden/streams")).unwrap() {
        paths.push(e.unwrap().path().join("query.sql"));
    }
    let mut out: Vec<String> = paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|s| !s.contains("'postgres'") && !s.contains("'filesystem'"))
        .collect();
    out.sort();
    assert!(out.len() >= 20, "only {} seed files", out.len());
    out
}

/// The file split into tokens: words, quoted strings, numbers, single punctuation,
/// whitespace runs (kept, so joining the tokens gives the file back).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let mut end = i + c.len_utf8();
        let class = |c: char| {
            if c.is_whitespace() {
                0
            } else if c.is_alphanumeric() || c == '_' {
                1
            } else {
                2
            }
        };
        if c == '\'' || c == '"' {
            for (j, d) in chars.by_ref() {
                end = j + d.len_utf8();
                if d == c {
                    break;
                }
            }
        } else if class(c) != 2 {
            while let Some(&(j, d)) = chars.peek() {
                if class(d) != class(c) {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
        }
        out.push(s[i..end].to_string());
    }
    out
}

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "ORDER",
    "LIMIT",
    "JOIN",
    "ON",
    "LEFT",
    "OVER",
    "PARTITION",
    "ROW_NUMBER()",
    "INTERVAL",
    "CREATE",
    "TABLE",
    "VIEW",
    "INSERT",
    "INTO",
    "WITH",
    "AS",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "*",
    "(",
    ")",
    ",",
    ";",
    "=",
    "<=",
    "'",
    "\"",
    "CAST",
    "DISTINCT",
    "UNION",
    "ALL",
    "tumble",
    "hop",
    "session",
    "count(*)",
    "1",
    "-1",
    "0.5",
    "TIMESTAMP",
    "BIGINT",
    "VARCHAR",
    "STRUCT<",
    ">",
    "[",
    "]",
    "::",
    "WATERMARK",
    "FOR",
    "SYSTEM_TIME",
    "CASE",
    "WHEN",
    "THEN",
    "END",
];

/// One to three mutations of `seed`.
fn mutate(r: &mut fastrand::Rng, seed: &str) -> String {
    let mut t = tokens(seed);
    for _ in 0..r.usize(1..=3) {
        if t.is_empty() {
            t.push(String::new());
        }
        let i = r.usize(0..t.len());
        match r.u8(0..14) {
            0 => {
                let j = r.usize(0..t.len());
                t.swap(i, j);
            }
            1 => {
                t.remove(i);
            }
            2 => {
                let x = t[i].clone();
                t.insert(i, x);
            }
            3 => {
                // Truncate the file at a random character.
                let s: String = t.concat();
                let cut = r.usize(0..=s.chars().count());
                t = vec![s.chars().take(cut).collect()];
            }
            4 => t[i] = KEYWORDS[r.usize(0..KEYWORDS.len())].to_string(),
            5 => {
                // An unknown option, or a known one twice.
                let o = [
                    "bogus_option = 'x'",
                    "format = 'avro'",
                    "topic = 'a', topic = 'b'",
                ][r.usize(0..3)];
                let s = t.concat().replacen("WITH (", &format!("WITH ({o}, "), 1);
                t = tokens(&s);
            }
            6 => {
                // An option value of another type or shape.
                let v = [
                    "42",
                    "true",
                    "-1",
                    "''",
                    "'1e999'",
                    "ARRAY[1]",
                    "'99999999999999999999'",
                    "x'00'",
                ][r.usize(0..8)];
                if let Some(j) = (0..t.len())
                    .filter(|&j| t[j].starts_with('\''))
                    .nth(r.usize(0..4))
                {
                    t[j] = v.to_string();
                }
            }
            7 => {
                let ty = [
                    "BOGUS",
                    "INT(999999)",
                    "DECIMAL(99, 100)",
                    "ARRAY<",
                    "MAP(INT)",
                    "STRUCT<a>",
                ][r.usize(0..6)];
                if let Some(j) = t.iter().position(|x| {
                    matches!(
                        x.to_uppercase().as_str(),
                        "BIGINT" | "VARCHAR" | "INT" | "TIMESTAMP"
                    )
                }) {
                    t[j] = ty.to_string();
                }
            }
            8 => {
                // A huge literal.
                let big = match r.u8(0..5) {
                    0 => format!("'{}'", "x".repeat(1 << 20)),
                    1 => "9".repeat(1000),
                    2 => "INTERVAL '99999999999999999 days'".into(),
                    3 => format!("{}e999999", "1".repeat(30)),
                    _ => "'\u{0}\u{feff}\u{202e}'".into(),
                };
                t.insert(i, big);
            }
            9 => {
                // Deep nesting in an expression.
                let d = [10, 60, 200, 5000][r.usize(0..4)];
                t.insert(i, format!("{}1{}", "(".repeat(d), ")".repeat(d)));
            }
            10 => {
                let d = [10, 200, 3000][r.usize(0..3)];
                t.insert(i, vec!["1"; d].join(" + "));
            }
            11 => t.insert(
                i,
                ["\u{0}", "\u{ffff}", "é", "--", "/*", "$1", "?", "@@"][r.usize(0..8)].into(),
            ),
            12 => {
                // The query twice, or no query.
                let s = t.concat();
                let q = s.rfind("SELECT").unwrap_or(0);
                t = tokens(&if r.bool() {
                    format!("{s}\n{}", &s[q..])
                } else {
                    s[..q].to_string()
                });
            }
            _ => {
                let j = r.usize(0..t.len());
                let x = t[j].clone();
                t[i] = x;
            }
        }
    }
    t.concat()
}

/// What happened to one case.
enum Outcome {
    Planned,
    Refused(String, bool),
    Panicked(String),
}

/// Plans `sql` the way `sluice explain` does, on this thread.
fn plan(path: &Path, sql: &str) -> Outcome {
    std::fs::write(path, sql).unwrap();
    let args = Args::parse_from([
        "explain",
        path.to_str().unwrap(),
        "--target-partitions",
        "2",
    ]);
    let result = std::panic::catch_unwind(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(sluice::exec::explain::explain(&args.explain, &|| false))
    });
    match result {
        Ok(Ok(_)) => Outcome::Planned,
        Ok(Err(e)) => {
            let parse = matches!(
                e.downcast_ref::<sluice::sql::SqlError>(),
                Some(sluice::sql::SqlError::Parse { .. })
            );
            Outcome::Refused(sluice::error::report(&e), parse)
        }
        Err(p) => Outcome::Panicked(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
    }
}

#[test]
fn every_fuzzed_query_file_is_planned_or_refused_with_one_readable_error() {
    let cases: usize = std::env::var("SLUICE_FUZZ_SQL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let seed: u64 = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(22);
    let seeds = seeds();
    let dir = std::env::temp_dir().join(format!("sluice-fuzz-sql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fuzzed.sql");
    // Cases run on a worker thread so a hang is caught here, not by the test runner.
    let (todo_tx, todo_rx) = mpsc::channel::<String>();
    let (done_tx, done_rx) = mpsc::channel::<(Outcome, Duration)>();
    let worker_path = path.clone();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            for sql in todo_rx {
                let t = Instant::now();
                let o = plan(&worker_path, &sql);
                if done_tx.send((o, t.elapsed())).is_err() {
                    break;
                }
            }
        })
        .unwrap();
    let mut r = fastrand::Rng::with_seed(seed);
    let (mut planned, mut refused, mut with_position) = (0, 0, 0);
    let mut slowest = Duration::ZERO;
    for case in 0..cases {
        let pick = r.usize(0..seeds.len());
        let sql = mutate(&mut r, &seeds[pick]);
        todo_tx.send(sql.clone()).unwrap();
        let (outcome, took) = done_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("case {case} did not end within 20 s:\n{sql}"));
        slowest = slowest.max(took);
        match outcome {
            Outcome::Planned => planned += 1,
            Outcome::Refused(msg, parse) => {
                refused += 1;
                let shown = || format!("case {case}: {:?}\n--- file:\n{}", trim(&msg), trim(&sql));
                assert!(msg.contains("fuzzed.sql") || !parse, "{}", shown());
                assert!(!msg.trim().is_empty(), "{}", shown());
                assert!(
                    msg.chars().count() <= 1200,
                    "an unreadably long message: {}",
                    shown()
                );
                assert!(
                    !msg.contains("panicked") && !msg.contains("RUST_BACKTRACE"),
                    "{}",
                    shown()
                );
                if parse {
                    assert!(
                        msg.contains("Line: ") && msg.contains("Column: "),
                        "no position: {}",
                        shown()
                    );
                    with_position += 1;
                }
            }
            Outcome::Panicked(p) => panic!("case {case} panicked: {p}\n--- file:\n{}", trim(&sql)),
        }
    }
    drop(todo_tx);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "fuzzed query files: {cases} cases, {planned} planned, {refused} refused ({with_position} parse errors with a position), slowest {slowest:?}"
    );
    assert!(
        refused > cases / 4 && planned > cases / 20,
        "{planned} planned, {refused} refused"
    );
}

/// `s`, cut to a readable length for a failure message.
fn trim(s: &str) -> String {
    match s.char_indices().nth(3000) {
        Some((i, _)) => format!("{}… ({} bytes)", &s[..i], s.len()),
        None => s.to_string(),
    }
}
