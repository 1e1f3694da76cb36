//! Secrets stay out of query files and out of everything Sluice prints: `${NAME}` in a
//! `WITH (…)` value comes from the environment, and neither such values nor options
//! named like secrets (`…password`, `…secret`, `…token`) appear in explain, the
//! progress lines and records, debug logs or error messages.

mod common;

use std::process::{Command, Output};

use common::*;

const SECRET: &str = "pa55-w0rd-that-must-not-leak";

/// `sluice ARGS` with the test's environment (debug logs on).
fn sluice_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.args(args)
        .env("SLUICE_LOG", "debug")
        .env_remove("SLUICE_HTTP_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn env_values_are_substituted_and_secrets_never_printed() {
    let (broker, topic) = seeded_topic("secrets", 3_000, 2, "crash", 10);
    let dir = temp_dir("secrets");
    let progress = dir.join("progress.jsonl");
    let q = dir.join("q.sql");
    // The topic comes from the environment (so it is treated as a secret too); the
    // password is a secret by its name, written literally here, from the env below.
    std::fs::write(
        &q,
        format!(
            "CREATE TABLE logs (timestamp BIGINT, severity VARCHAR, content VARCHAR) WITH (\n\
             connector = 'kafka', topic = '${{SLUICE_TEST_TOPIC}}', bootstrap_servers = '{broker}',\n\
             'kafka.sasl.password' = '{SECRET}', 'kafka.sasl.username' = 'user-${{SLUICE_TEST_USER}}');\n\
             SELECT severity, count(*) AS n FROM logs WHERE lower(content) LIKE '%crash%' GROUP BY severity;\n"
        ),
    )
    .unwrap();
    let env = [
        ("SLUICE_TEST_TOPIC", topic.as_str()),
        ("SLUICE_TEST_USER", "alice-from-env"),
    ];
    let qs = q.to_str().unwrap();
    let mut outputs = Vec::new();
    let explain = sluice_env(&["explain", qs], &env);
    assert!(explain.status.success(), "{}", text(&explain));
    outputs.push(text(&explain));
    let analyze = sluice_env(
        &[
            "explain",
            "--analyze",
            "--batches",
            "2",
            "--available-now",
            qs,
        ],
        &env,
    );
    assert!(analyze.status.success(), "{}", text(&analyze));
    outputs.push(text(&analyze));
    let run = sluice_env(
        &[
            "run",
            qs,
            "--available-now",
            "--num-rows",
            "0",
            "--status",
            "plain",
            "--progress-json",
            progress.to_str().unwrap(),
        ],
        &env,
    );
    assert!(run.status.success(), "{}", text(&run));
    let run_text = text(&run);
    // The topic came from the environment: every record of it was read ...
    let read: u64 = progress_records(&progress)
        .iter()
        .map(|p| p["numInputRows"].as_u64().unwrap())
        .sum();
    assert_eq!(read, 3_000, "{run_text}");
    // ... and, being from the environment, is shown as *** like the password.
    assert!(run_text.contains("reading Kafka topic '***'"), "{run_text}");
    outputs.push(run_text);
    outputs.push(std::fs::read_to_string(&progress).unwrap());

    // Errors: a missing topic named by a secret, an unset variable.
    let missing = dir.join("missing.sql");
    std::fs::write(
        &missing,
        std::fs::read_to_string(&q)
            .unwrap()
            .replace("SLUICE_TEST_TOPIC", "SLUICE_TEST_SECRET"),
    )
    .unwrap();
    let failed = sluice_env(
        &["run", missing.to_str().unwrap(), "--available-now"],
        &[("SLUICE_TEST_SECRET", SECRET), ("SLUICE_TEST_USER", "x")],
    );
    assert!(!failed.status.success());
    let failed_text = text(&failed);
    assert!(
        failed_text.contains("Kafka topic '***' does not exist"),
        "{failed_text}"
    );
    outputs.push(failed_text);
    let unset = sluice_env(&["explain", qs], &[("SLUICE_TEST_USER", "x")]);
    let unset_text = text(&unset);
    assert!(!unset.status.success());
    assert!(
        unset_text.contains("${SLUICE_TEST_TOPIC} is not set in the environment"),
        "{unset_text}"
    );

    for (i, out) in outputs.iter().enumerate() {
        for secret in [SECRET, topic.as_str(), "alice-from-env"] {
            assert!(!out.contains(secret), "output {i} shows {secret:?}:\n{out}");
        }
    }
}
