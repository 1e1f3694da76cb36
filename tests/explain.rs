//! `sluice explain` output for the shipped queries, pinned by golden files in
//! tests/golden. After an intended change, rewrite them with `SLUICE_BLESS=1 cargo
//! test --release --test explain` and review the diff.

mod common;

use common::*;

fn check(query: &str, golden: &str) {
    let out = sluice_ok(&["explain", query, "--target-partitions", "2"]);
    let got = String::from_utf8(out.stdout).unwrap();
    let path = repo().join("tests/golden").join(golden);
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}: run with SLUICE_BLESS=1", path.display()));
    assert_eq!(
        got, want,
        "explain output of {query} changed; if intended, rerun with SLUICE_BLESS=1"
    );
}

#[test]
fn explain_query1_shows_stages_and_the_exchange() {
    check(
        "queries/vulnerabilities_by_ip.sql",
        "explain_vulnerabilities_by_ip.txt",
    );
}

#[test]
fn explain_query2_shows_the_watermark_and_window() {
    check("queries/crash_alerts.sql", "explain_crash_alerts.txt");
}
