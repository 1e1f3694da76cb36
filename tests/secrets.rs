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

/// The local broker's SASL_SSL listener (scripts/kafka-local.sh: TLS with its own CA,
/// SCRAM-SHA-256 user `sluice`): its address, CA file and password.
fn secured_listener() -> (String, String, String) {
    let _ = broker(); // starts the local broker when it is not running
    let port: u16 = std::env::var("KAFKA_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9092);
    let home = common::service_home("SLUICE_KAFKA_HOME", "sluice-kafka");
    let tls = home.join(format!("run-{port}/tls"));
    let password = std::fs::read_to_string(tls.join("scram-password"))
        .expect("the local broker's SCRAM password (scripts/kafka-local.sh start makes it)");
    (
        format!("127.0.0.1:{}", port + 2),
        tls.join("ca.pem").display().to_string(),
        password.trim().to_string(),
    )
}

/// Reads a topic through the broker's SASL_SSL listener (SCRAM-SHA-256 over TLS, the
/// CA given), the password from the environment: the same result as over PLAINTEXT,
/// and the password nowhere in the output. A wrong password and a missing CA each give
/// one clear error within seconds.
#[test]
fn kafka_over_sasl_scram_and_tls_reads_exactly_and_keeps_the_password_out() {
    let (plain_broker, topic) = seeded_topic("sasl", 4_000, 2, "crash", 10);
    let (secured, ca, password) = secured_listener();
    let dir = temp_dir("sasl");
    let query = "SELECT severity, count(*) AS n FROM logs GROUP BY severity;";
    let write = |name: &str, broker: &str, security: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "CREATE TABLE logs (timestamp BIGINT, severity VARCHAR, content VARCHAR) WITH (\n\
                 connector = 'kafka', topic = '{topic}', bootstrap_servers = '{broker}'{security});\n{query}\n"
            ),
        )
        .unwrap();
        path
    };
    let security = |ca: &str| {
        format!(
            ",\n'kafka.security.protocol' = 'SASL_SSL', 'kafka.sasl.mechanism' = 'SCRAM-SHA-256',\n\
             'kafka.sasl.username' = 'sluice', 'kafka.sasl.password' = '${{SLUICE_TEST_KAFKA_PASSWORD}}'{ca}"
        )
    };
    let with_ca = format!(", 'kafka.ssl.ca.location' = '{ca}'");
    let plain = write("plain.sql", &plain_broker, "");
    let sasl = write("sasl.sql", &secured, &security(&with_ca));
    let no_ca = write("no_ca.sql", &secured, &security(""));
    let run = |q: &std::path::Path, pw: &str| {
        sluice_env(
            &[
                "run",
                q.to_str().unwrap(),
                "--available-now",
                "--num-rows",
                "0",
                "--status",
                "plain",
            ],
            &[("SLUICE_TEST_KAFKA_PASSWORD", pw)],
        )
    };
    let expected = run(&plain, "unused");
    assert!(expected.status.success(), "{}", text(&expected));
    let got = run(&sasl, &password);
    assert!(got.status.success(), "{}", text(&got));
    let rows = |o: &Output| sorted(printed_rows(&String::from_utf8_lossy(&o.stdout)));
    assert!(!rows(&expected).is_empty());
    assert_eq!(rows(&got), rows(&expected), "the same result over SASL_SSL");
    assert!(!text(&got).contains(&password), "the password was printed");

    for (q, pw, why) in [
        (&sasl, "wrong-password", "authentication"),
        (&no_ca, password.as_str(), "certificate"),
    ] {
        let t = std::time::Instant::now();
        let failed = run(q, pw);
        let out = text(&failed);
        assert!(!failed.status.success(), "{why}: {out}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "{why}: took {:?}",
            t.elapsed()
        );
        assert!(out.to_lowercase().contains(why), "{why}: {out}");
        assert!(!out.contains(pw), "{why}: the password was printed: {out}");
    }
}
