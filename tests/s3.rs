//! Checkpoints and a Parquet sink on an S3 endpoint (a local moto server started with
//! scripts/s3-local.sh): the run resumes from its S3 checkpoint and the Parquet files
//! read back from S3 hold the exact result.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use common::s3::*;
use common::*;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn run_with_s3(args: &[&str], endpoint: &str) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args);
    s3_env(&mut cmd, endpoint);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "sluice {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads every Parquet object under `prefix` of `bucket`.
fn read_parquet(endpoint: &str, bucket: &str, prefix: &str) -> BTreeMap<String, i64> {
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = object_store::path::Path::from(prefix);
        let metas: Vec<_> = store.list(Some(&p)).try_collect().await.unwrap();
        let mut latest: Option<(String, Vec<RecordBatch>)> = None;
        for m in metas {
            let name = m.location.to_string();
            if !name.ends_with(".parquet") {
                continue;
            }
            let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            if latest.as_ref().is_none_or(|(n, _)| name > *n) {
                latest = Some((name, batches));
            }
        }
        let (_, batches) = latest.expect("parquet files on S3");
        let mut m = BTreeMap::new();
        for b in batches {
            let ips = b.column(0).as_string::<i32>();
            let counts = b.column(1).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                m.insert(ips.value(i).to_string(), counts.value(i));
            }
        }
        m
    })
}

#[test]
fn checkpoint_and_parquet_sink_on_s3() {
    let ep = endpoint();
    let bucket = unique_topic("bucket").to_lowercase().replace('_', "-");
    let bucket = &bucket[..bucket.len().min(60)];
    create_bucket(&ep, bucket);

    let dir = temp_dir("s3");
    let data = dir.join("data");
    sluice_ok(&[
        "gen",
        "--output",
        data.to_str().unwrap(),
        "--max-records",
        "20000",
        "--records-per-file",
        "5000",
        "--target-rps",
        "0",
        "--seed",
        "4",
        "--additional-term",
        "vulnerability",
        "--additional-term-rate",
        "3",
        "--quiet",
    ]);
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for r in records_in_files(&data).into_iter().filter(q1_matches) {
        *expected.entry(r.source_ip).or_insert(0) += 1;
    }
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, severity VARCHAR, source_ip VARCHAR, content VARCHAR) \
             WITH (connector = 'file', path = '{}');\n\
             CREATE TABLE out WITH (connector = 'parquet', path = 's3://{bucket}/results');\n\
             INSERT INTO out SELECT source_ip, count(*) AS count FROM logs \
             WHERE lower(content) LIKE '%vulnerability%' AND severity = 'High' GROUP BY source_ip;",
            data.display()
        ),
    )
    .unwrap();
    let ckpt = format!("s3://{bucket}/checkpoints/q1");
    // Run once to the end, then again: the second run must resume from the S3
    // checkpoint and find nothing left to do.
    let first = run_with_s3(
        &[
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            "4000",
            "--checkpoint",
            &ckpt,
        ],
        &ep,
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("batch 4:"));
    assert_eq!(read_parquet(&ep, bucket, "results"), expected);
    let second = run_with_s3(
        &[
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            "4000",
            "--checkpoint",
            &ckpt,
        ],
        &ep,
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("resuming after committed batch"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("batch 5:"),
        "nothing new to read, nothing must run again: {stderr}"
    );
    assert_eq!(read_parquet(&ep, bucket, "results"), expected);
}

#[test]
fn a_static_csv_table_on_s3_is_joined() {
    let endpoint = endpoint();
    let bucket = unique_topic("static").to_lowercase();
    create_bucket(&endpoint, &bucket);
    // owners.csv on S3: ips 192.168.1.0 ..= 49 belong to o0 … o4.
    let store = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .unwrap();
    let mut csv = String::from("ip,owner\n");
    for i in 0..50 {
        csv.push_str(&format!("192.168.1.{i},o{}\n", i % 5));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store.put(
        &object_store::path::Path::from("tables/owners.csv"),
        csv.into_bytes().into(),
    ))
    .unwrap();

    let (broker, topic) = seeded_topic("s3-static", 8000, 2, "crash", 50);
    let dir = temp_dir("s3-static");
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        format!(
            "CREATE TABLE logs (source_ip VARCHAR) WITH (connector = 'kafka', topic = '{topic}', bootstrap_servers = '{broker}');\n\
             CREATE TABLE owners (ip VARCHAR, owner VARCHAR) WITH (connector = 'filesystem', path = 's3://{bucket}/tables/owners.csv', format = 'csv');\n\
             SELECT o.owner, count(*) AS n FROM logs l JOIN owners o ON l.source_ip = o.ip GROUP BY o.owner;\n"
        ),
    )
    .unwrap();
    let out = run_with_s3(
        &[
            "run",
            q.to_str().unwrap(),
            "--available-now",
            "--max-records-per-batch",
            "1000",
            "--num-rows",
            "0",
        ],
        &endpoint,
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = parse_console(&stdout).pop().expect("a batch");
    let got: BTreeMap<String, i64> = last
        .rows
        .iter()
        .map(|r| (r[0].clone(), r[1].trim().parse().unwrap()))
        .collect();
    let mut expected = BTreeMap::new();
    for c in consume_all(&broker, &topic) {
        let r = parse_record(&c.payload).unwrap();
        let n: u32 = r.source_ip.rsplit('.').next().unwrap().parse().unwrap();
        if n < 50 {
            *expected.entry(format!("o{}", n % 5)).or_insert(0) += 1;
        }
    }
    assert_eq!(got, expected);
}
