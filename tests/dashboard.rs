//! `--http`: /metrics parses as Prometheus text and its counters match the records
//! processed; /progress agrees with the progress lines; the dashboard, loaded in
//! headless Chromium (Debian's `chromium`, installed by .ci/run), draws a rate chart
//! with more than one point and shows the plan's exchange. A screenshot is saved to
//! target/dashboard.png (under CARGO_TARGET_DIR) as a test artifact.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn get(port: u16, path: &str) -> String {
    let (status, body) = request(port, path, None);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// `GET path` (with `Authorization: Bearer TOKEN` when given): status and body.
fn request(port: u16, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{path}: not an HTTP response: {resp}"));
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The headless Chromium on this machine and the flags the tests run it with.
fn chromium() -> (&'static str, [&'static str; 9]) {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("headless Chromium is needed: apt-get install chromium (.ci/run installs it)");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=3000",
    ];
    (chromium, flags)
}

/// The page at `url` after its scripts ran, as Chromium's DOM dump.
fn dump_dom(url: &str) -> String {
    let (chromium, flags) = chromium();
    let profile = temp_dir("chromium-profile");
    let dom = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
}

/// The `data-points` attribute of the chart `id` in a dumped DOM.
fn data_points(dom: &str, id: &str) -> usize {
    dom.split(&format!("id=\"{id}\""))
        .nth(1)
        .and_then(|rest| rest.split("data-points=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {id} in the DOM:\n{dom}"))
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn metrics_progress_and_dashboard_show_the_running_stream() {
    let port = closed_port();
    let dir = temp_dir("http");
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        "CREATE TABLE logs (timestamp BIGINT, severity VARCHAR, source_ip VARCHAR, content VARCHAR) \
         WITH (connector = 'generator', rate = '200000');\n\
         SELECT source_ip, count(*) AS count FROM logs WHERE lower(content) LIKE '%vulnerability%' GROUP BY source_ip;",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            q.to_str().unwrap(),
            "--trigger",
            "200ms",
            "--num-rows",
            "1",
            "--target-partitions",
            "2",
            "--http",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(child);

    // Wait (bounded) until at least three batches are published.
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        if let Ok(body) = std::panic::catch_unwind(|| get(port, "/progress")) {
            let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
            if v.len() >= 3 {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no progress published within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(records
        .windows(2)
        .all(|w| w[1]["batchId"].as_u64() == w[0]["batchId"].as_u64().map(|b| b + 1)));

    // Counters equal the sum of the progress records taken around the same moment.
    let mut matched = false;
    for _ in 0..20 {
        let before: Vec<serde_json::Value> = serde_json::from_str(&get(port, "/progress")).unwrap();
        let text = get(port, "/metrics");
        let after: Vec<serde_json::Value> = serde_json::from_str(&get(port, "/progress")).unwrap();
        if before.len() != after.len() {
            continue; // a batch finished in between: try again
        }
        assert!(
            text.contains("# TYPE sluice_input_rows counter") && text.trim_end().ends_with("# EOF"),
            "{text}"
        );
        let rows: u64 = after
            .iter()
            .map(|r| r["numInputRows"].as_u64().unwrap())
            .sum();
        let out: u64 = after
            .iter()
            .map(|r| r["numOutputRows"].as_u64().unwrap())
            .sum();
        assert_eq!(metric(&text, "sluice_input_rows_total") as u64, rows);
        // Per source table too (one table here).
        let table = metric(&text, "sluice_table_input_rows_total{table=\"logs\"}");
        assert_eq!(table as u64, rows);
        assert_eq!(metric(&text, "sluice_output_rows_total") as u64, out);
        // Per stateful operator: rows in summed over the batches, state rows now.
        let op_in: u64 = after
            .iter()
            .map(|r| r["operators"][0]["numRowsIn"].as_u64().unwrap())
            .sum();
        let labels = "operator=\"0:aggregate\"";
        let got = metric(
            &text,
            &format!("sluice_operator_rows_total{{{labels},direction=\"in\"}}"),
        );
        assert_eq!(got as u64, op_in);
        let state = after.last().unwrap()["operators"][0]["numRowsTotal"]
            .as_u64()
            .unwrap();
        let got = metric(
            &text,
            &format!("sluice_operator_state{{{labels},what=\"rows\"}}"),
        );
        assert_eq!(got as u64, state);
        assert_eq!(metric(&text, "sluice_batches_total") as usize, after.len());
        assert_eq!(
            metric(&text, "sluice_batch_duration_seconds_count") as usize,
            after.len()
        );
        assert!(metric(&text, "sluice_memory_rss_bytes") > 0.0);
        let merge_ms: u64 = after
            .iter()
            .map(|r| r["durationMs"]["stateMerge"].as_u64().unwrap())
            .sum();
        let merge_s = metric(&text, "sluice_phase_seconds_total{phase=\"stateMerge\"}");
        // Progress rounds each batch down to whole milliseconds.
        assert!(
            merge_s * 1000.0 >= merge_ms as f64
                && merge_s * 1000.0 < (merge_ms + after.len() as u64) as f64,
            "stateMerge: {merge_s} s in /metrics, {merge_ms} ms in /progress"
        );
        matched = true;
        break;
    }
    assert!(matched, "metrics and progress never lined up");

    // The dashboard in a real browser.
    let url = format!("http://127.0.0.1:{port}/");
    let dom = dump_dom(&url);
    let points = data_points(&dom, "rate-chart");
    assert!(points > 1, "the rate chart has {points} point(s)");
    assert!(dom.contains("<polyline"), "no line drawn");
    let per_operator = data_points(&dom, "operator-state-chart");
    assert!(
        per_operator > 1,
        "the per-operator state chart has {per_operator} point(s)"
    );
    assert!(
        dom.contains("■ 0:aggregate"),
        "no legend names the operator"
    );
    let shards = data_points(&dom, "shard-chart");
    assert_eq!(shards, 2, "one bar per state shard (--target-partitions 2)");
    assert!(
        dom.contains("Exchange: hash(source_ip)"),
        "the plan does not show the exchange:\n{dom}"
    );

    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    let shot = target.join("dashboard.png");
    let (chromium, flags) = chromium();
    let profile = temp_dir("chromium-profile");
    let _ = Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--window-size=1200,1000",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output();
}

/// `--http` beyond loopback refuses to start without a token; with one (from
/// SLUICE_HTTP_TOKEN) every route answers 401 without it or with a wrong one, 200 with
/// it as a bearer header or `?token=`, and the dashboard opened as `/?token=` draws
/// its charts (its own requests carry the token on).
#[test]
fn http_beyond_loopback_needs_a_token_and_every_route_honours_it() {
    let dir = temp_dir("http-token");
    let q = dir.join("q.sql");
    std::fs::write(
        &q,
        "CREATE TABLE logs (timestamp BIGINT, severity VARCHAR, source_ip VARCHAR, content VARCHAR) \
         WITH (connector = 'generator', rate = '100000');\n\
         SELECT source_ip, count(*) AS count FROM logs GROUP BY source_ip;",
    )
    .unwrap();
    let port = closed_port();
    let addr = format!("0.0.0.0:{port}");
    let args = [
        "run",
        q.to_str().unwrap(),
        "--trigger",
        "200ms",
        "--num-rows",
        "1",
        "--http",
        &addr,
    ];
    let refused = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_HTTP_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("needs a token") && stderr.contains("SLUICE_HTTP_TOKEN"),
        "{stderr}"
    );

    let token = "t0ken-for-the-test/+=";
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_HTTP_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the endpoint did not open within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let encoded = "t0ken-for-the-test%2F%2B%3D";
    for path in ["/", "/metrics", "/progress", "/plan"] {
        assert_eq!(request(port, path, None).0, 401, "{path} without the token");
        assert_eq!(
            request(port, path, Some("wrong")).0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            request(port, &format!("{path}?token=wrong"), None).0,
            401,
            "{path}?token=wrong"
        );
        assert_eq!(
            request(port, path, Some(token)).0,
            200,
            "{path} with the bearer token"
        );
        assert_eq!(
            request(port, &format!("{path}?token={encoded}"), None).0,
            200,
            "{path}?token="
        );
    }
    // Wait until batches are published, then the page must draw them.
    while serde_json::from_str::<Vec<serde_json::Value>>(&request(port, "/progress", Some(token)).1)
        .map_or(0, |v| v.len())
        < 3
    {
        assert!(Instant::now() < deadline, "no progress within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = dump_dom(&format!("http://127.0.0.1:{port}/?token={encoded}"));
    assert!(
        data_points(&dom, "rate-chart") > 1,
        "the page's requests did not carry the token"
    );
    let denied = dump_dom(&format!("http://127.0.0.1:{port}/"));
    assert!(
        !denied.contains("rate-chart"),
        "the page was served without the token"
    );
}
