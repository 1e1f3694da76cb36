//! Nested JSON: STRUCT / ROW, ARRAY and MAP columns, DECIMAL and ISO TIMESTAMP strings,
//! field access, unnest and JSON-in-a-string functions, streamed in many batches from a
//! file source and compared with the same SQL run as one batch DataFusion query over
//! the same file.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use datafusion::prelude::{JsonReadOptions, SessionContext};

const TABLE: &str = "CREATE TABLE events (id BIGINT, usr STRUCT<name VARCHAR, geo ROW(country VARCHAR, zip INT)>, \
    tags ARRAY<VARCHAR>, attrs MAP<VARCHAR, BIGINT>, amount DECIMAL(12, 2), ts TIMESTAMP, payload VARCHAR)";

/// 6,000 nested records in two partition files.
fn write_records(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for part in 0..2 {
        let mut text = String::new();
        for i in (part..6000).step_by(2) {
            let tags: Vec<String> = (0..i % 4)
                .map(|t| format!("\"t{}\"", (i + t) % 5))
                .collect();
            text.push_str(&format!(
                "{{\"id\":{i},\"usr\":{{\"name\":\"u{}\",\"geo\":{{\"country\":\"c{}\",\"zip\":{}}}}},\
                 \"tags\":[{}],\"attrs\":{{\"k1\":{i},\"k2\":{}}},\"amount\":\"{}.{:02}\",\
                 \"ts\":\"2026-01-14T09:{:02}:{:02}.{:03}Z\",\"payload\":\"{{\\\"a\\\":{{\\\"b\\\":{}}}}}\"}}\n",
                i % 7,
                i % 3,
                10000 + i % 11,
                tags.join(","),
                i * 2,
                i % 500,
                i % 100,
                (i / 60) % 60,
                i % 60,
                i % 1000,
                i % 13,
            ));
        }
        std::fs::write(data.join(format!("part-{part}.jsonl")), text).unwrap();
    }
    data
}

/// The query run as one batch DataFusion query over the same files, as JSON rows.
async fn batch_rows(query_file: &Path, data: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(query_file).unwrap();
    let file = sluice::sql::QueryFile::parse("q", &text).unwrap();
    let mut state = datafusion::execution::session_state::SessionStateBuilder::new()
        .with_default_features()
        .build();
    datafusion_functions_json::register_all(&mut state).unwrap();
    let ctx = SessionContext::new_with_state(state);
    let schema = file.tables[0].schema.clone();
    let opts = JsonReadOptions::default()
        .schema(&schema)
        .file_extension(".jsonl");
    ctx.register_json("events", data.to_str().unwrap(), opts)
        .await
        .unwrap();
    sorted(batch_json(&ctx, &file.query.to_string()).await)
}

/// Streams `query` over the files in batches of 700 into a JSON-lines sink; returns the
/// rows (for an aggregate in complete mode: the last batch's), sorted.
fn stream_rows(dir: &Path, data: &Path, query: &str, complete: bool) -> (PathBuf, Vec<String>) {
    let out = dir.join(if complete { "out-agg" } else { "out" });
    let q = dir.join(if complete { "agg.sql" } else { "q.sql" });
    std::fs::write(
        &q,
        format!(
            "{TABLE} WITH (connector = 'file', path = '{}');\n\
             CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\nINSERT INTO out {query}\n",
            data.display(),
            out.display()
        ),
    )
    .unwrap();
    let mut args = vec![
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--max-records-per-batch",
        "700",
    ];
    if complete {
        args.extend(["--output-mode", "complete"]);
    }
    let (_, stderr) = run_ok(&args);
    assert!(parse_offsets(&stderr).len() >= 8, "{stderr}");
    let mut rows = Vec::new();
    for f in std::fs::read_dir(&out).unwrap() {
        rows.extend(
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    (q, sorted(rows))
}

#[test]
fn nested_columns_field_access_and_json_functions_equal_a_batch_query() {
    let dir = temp_dir("nested");
    let data = write_records(&dir);
    let (q, got) = stream_rows(
        &dir,
        &data,
        "SELECT id, usr['name'] AS name, usr['geo']['country'] AS country, usr.geo.zip AS zip, \
         tags[1] AS first_tag, cardinality(tags) AS n_tags, attrs['k2'] AS k2, amount * 2 AS twice, \
         ts, json_get_int(payload, 'a', 'b') AS b FROM events WHERE usr['geo']['zip'] <> 10003;",
        false,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let expected = rt.block_on(batch_rows(&q, &data));
    assert!(expected.len() > 5000, "{}", expected.len());
    assert!(
        expected[0].contains("\"ts\":\"2026-01-14T09:"),
        "{}",
        expected[0]
    );
    assert_eq!(got, expected);
}

#[test]
fn unnest_and_an_aggregate_over_nested_fields_equal_a_batch_query() {
    let dir = temp_dir("nested-agg");
    let data = write_records(&dir);
    let (q, got) = stream_rows(
        &dir,
        &data,
        "SELECT id, unnest(tags) AS tag FROM events WHERE id % 3 = 0;",
        false,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(got, rt.block_on(batch_rows(&q, &data)));

    let (q, got) = stream_rows(
        &dir,
        &data,
        "SELECT usr['geo']['country'] AS country, count(*) AS n, sum(amount) AS total, \
         max(ts) AS latest FROM events GROUP BY usr['geo']['country'];",
        true,
    );
    // Complete mode into files: the directory holds the latest whole result.
    assert_eq!(got, rt.block_on(batch_rows(&q, &data)));
}
