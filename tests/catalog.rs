//! A query file as a small catalog: views over the stream, used once or several
//! times, checked against an independent fold of the records read back from Kafka.

mod common;

use common::*;

/// A view used twice (a union of two filters of it) and a view over a view: every row
/// the batch computation gives, for two batch sizes.
#[test]
fn views_over_the_stream_may_be_used_several_times() {
    let (broker, topic) = seeded_topic("views", 12_000, 2, "crash", 20);
    let expected: Vec<Vec<String>> = sorted(
        consume_all(&broker, &topic)
            .iter()
            .map(|c| parse_record(&c.payload).expect("a well-formed record"))
            .filter(|r| r.severity == "High" || r.severity == "Critical")
            .filter(|r| r.source_ip == "192.168.1.5" || r.source_ip == "192.168.1.6")
            .map(|r| vec![r.user_id, r.source_ip])
            .collect(),
    );
    assert!(expected.len() > 50);
    let dir = temp_dir("views");
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "CREATE VIEW serious AS SELECT user_id, source_ip, severity FROM logs \
           WHERE severity IN ('High', 'Critical');\n\
         CREATE VIEW five AS SELECT user_id, source_ip FROM serious WHERE source_ip = '192.168.1.5';\n\
         SELECT user_id, source_ip FROM five \
         UNION ALL SELECT user_id, source_ip FROM serious WHERE source_ip = '192.168.1.6';",
    );
    for batch in ["900", "5000"] {
        assert_eq!(all_rows_sorted(&q, batch), expected, "batches of {batch}");
    }
    // A view whose SQL is wrong names the view.
    let q = query_file(
        &dir,
        &broker,
        &topic,
        "CREATE VIEW v AS SELECT nope FROM logs;\nSELECT * FROM v;",
    );
    let out = sluice(&["run", q.to_str().unwrap(), "--available-now"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("view v") && err.contains("nope"), "{err}");
}
