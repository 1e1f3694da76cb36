//! Broker faults against real Kafka brokers: the source's broker restarted mid-run
//! (gracefully and killed), a broker that is down when the run starts, a topic that
//! gains partitions while it is read. Each result is checked against an independent
//! computation over the topic's records; the restarts use brokers of the test's own
//! (scripts/kafka-local.sh on other ports), so they disturb no other test. A Kafka
//! sink's broker restarted under a running query, and storage faults, are here too.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::q2::*;
use common::s3::*;
use common::*;

/// A broker of the test's own on `port` (its controller on `port + 1`, SASL on
/// `port + 2`), stopped when dropped.
struct OwnBroker {
    port: u16,
}

impl OwnBroker {
    fn start(port: u16) -> Self {
        let b = Self { port };
        b.script(&["start"]);
        b
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Fills a new 2-partition `topic` with `n` records from `sluice gen --seed SEED`
    /// and `extra` arguments.
    fn fill(&self, topic: &str, n: &str, seed: &str, extra: &[&str]) {
        let args = [&["--max-records", n, "--seed", seed][..], extra].concat();
        gen_into(&self.address(), topic, 2, &args);
    }

    /// SIGSTOPs the broker until the guard is dropped.
    fn freeze(&self) -> Frozen {
        let home = service_home("SLUICE_KAFKA_HOME", "sluice-kafka");
        let pidfile = home.join(format!("run-{}/broker.pid", self.port));
        Frozen::pid(std::fs::read_to_string(pidfile).unwrap())
    }

    fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(repo().join("scripts/kafka-local.sh"))
            .args(args)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_HEAP", "512m")
            .output()
            .expect("run scripts/kafka-local.sh");
        assert!(
            out.status.success(),
            "kafka-local.sh {args:?} on port {}:\n{}",
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.script(&["stop"]);
    }
}

/// A `sluice run` in the background whose stderr lines are collected as they come.
struct Running {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The thread collecting stderr; it ends when the process does.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn spawn(args: &[&str]) -> Self {
        Self::spawn_with(args, |_| {})
    }

    /// [`Running::spawn`] with `env` setting the process's environment.
    fn spawn_with(args: &[&str], env: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        env(&mut cmd);
        let mut child = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn said(&self, text: &str) -> usize {
        let lines = self.stderr.lock().unwrap();
        lines.iter().filter(|l| l.contains(text)).count()
    }

    /// Waits until `cond` holds, polling; panics after `within` with `what` and what
    /// the run said.
    fn wait_for(&self, within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the run said:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for the run to end on its own; panics with its stderr unless it succeeded.
    fn finish(mut self, within: Duration) -> String {
        let (ok, said) = self.end(within);
        assert!(ok, "the run failed:\n{said}");
        said
    }

    /// Waits for the run to end on its own: whether it succeeded, and what it said.
    fn end(&mut self, within: Duration) -> (bool, String) {
        let deadline = Instant::now() + within;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the run did not end:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap(); // every line is in
        }
        (status.success(), self.text())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The batches a `--progress-json` file has recorded so far.
fn batches(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Records read so far, by a `--progress-json` file.
fn records_read(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|r| r["numInputRows"].as_u64().unwrap_or(0))
        .sum()
}

/// `sluice run` of `q` in batches of 400 records every 250 ms with a checkpoint, and
/// `extra` arguments.
fn run_args<'a>(q: &'a Path, ckpt: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        q.to_str().unwrap(),
        "--max-records-per-batch",
        "400",
        "--trigger",
        "250ms",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn five_broker_restarts_mid_run_lose_and_duplicate_nothing() {
    let b = OwnBroker::start(19292);
    let broker = b.address();
    let topic = "restarts";
    let event_time = ["--start-time-ms", "1768402330000", "--event-rate", "400"];
    let crashes = ["--additional-term", "crash", "--additional-term-rate", "1"];
    b.fill(topic, "40000", "21", &[event_time, crashes].concat());
    let expected = q2_expected(&broker, topic);
    assert!(expected.len() > 100);
    let dir = temp_dir("restarts");
    let out = dir.join("out");
    let q = write_query(&dir, &broker, topic, "parquet", &out, Q2);
    let ckpt = dir.join("ckpt");
    // Two streaming runs (each SIGKILLed after its broker restarts, the second resuming
    // from the checkpoint), five restarts in all, every other one a SIGKILL of the
    // broker; then a bounded run reads the rest and closes the windows.
    let mut restarts = 0;
    let mut back = 0;
    for (run, rounds) in [(0, 2), (1, 3)] {
        let progress = dir.join(format!("progress-{run}.jsonl"));
        let progress_arg = ["--progress-json", progress.to_str().unwrap()];
        let sluice = Running::spawn(&run_args(&q, &ckpt, &progress_arg));
        for _ in 0..rounds {
            let seen = batches(&progress);
            sluice.wait_for(Duration::from_secs(60), "batches before a restart", || {
                batches(&progress) >= seen + 4
            });
            let noticed = sluice.said("back after");
            b.script(match restarts % 2 {
                0 => &["restart"],
                _ => &["restart", "--kill"],
            });
            restarts += 1;
            // The run noticed the outage, waited, and reads on.
            sluice.wait_for(Duration::from_secs(90), "the run to read on", || {
                sluice.said("back after") > noticed
            });
        }
        let said = sluice.text();
        drop(sluice); // SIGKILL mid-stream
        back += said.matches("back after").count();
        assert!(!said.contains("ERROR"), "{said}");
    }
    let progress = dir.join("progress-rest.jsonl");
    let rest = [
        "--available-now",
        "--close-windows-at-end",
        "--progress-json",
        progress.to_str().unwrap(),
    ];
    Running::spawn(&run_args(&q, &ckpt, &rest)).finish(Duration::from_secs(120));
    // The restarts all came mid-stream: records were left for this last run.
    assert!(records_read(&progress) > 0);
    assert_eq!(restarts, 5);
    // Each restart was noticed and waited out (by the batch loop, a reader, or both).
    assert!(back >= 5, "{back} 'back after' messages for 5 restarts");
    assert_eq!(parquet_rows(&out), expected, "after 5 broker restarts");
}

/// The query file of a stateless copy of `topic` on `broker` into JSON-lines files.
fn copy_query(dir: &Path, broker: &str, topic: &str) -> (PathBuf, PathBuf) {
    let out = dir.join("out");
    let q = query_file(
        dir,
        broker,
        topic,
        &format!(
            "CREATE TABLE out WITH (connector = 'jsonl', path = '{}');\nINSERT INTO out SELECT * FROM logs;",
            out.display()
        ),
    );
    (q, out)
}

/// The log records of `topic`, read back with a plain consumer.
fn topic_records(broker: &str, topic: &str) -> Vec<LogRecord> {
    let records = consume_all(broker, topic);
    sorted(
        records
            .iter()
            .map(|c| parse_record(&c.payload).unwrap())
            .collect(),
    )
}

#[test]
fn a_broker_down_at_start_is_an_error_or_with_wait_for_source_is_waited_for() {
    let b = OwnBroker::start(19392);
    let broker = b.address();
    let topic = "waited";
    b.fill(topic, "3000", "5", &[]);
    let expected = topic_records(&broker, topic);
    b.script(&["stop"]);
    let dir = temp_dir("waited");
    let (q, out) = copy_query(&dir, &broker, topic);

    let started = Instant::now();
    let failed = sluice(&["run", q.to_str().unwrap(), "--available-now"]);
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        err.contains(&format!("cannot reach a Kafka broker at {broker}")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let waiting = Running::spawn(&[
        "run",
        q.to_str().unwrap(),
        "--available-now",
        "--wait-for-source",
    ]);
    waiting.wait_for(Duration::from_secs(30), "the waiting message", || {
        waiting.said("waiting for table logs (--wait-for-source") > 0
    });
    b.script(&["restart"]); // the same log dir: the topic and its records are there
    let said = waiting.finish(Duration::from_secs(120));
    assert!(said.contains("table logs is reachable after"), "{said}");
    assert_eq!(sorted(records_in_files(&out)), expected);
}

#[test]
fn partitions_a_topic_gains_are_read_from_their_start_mid_run_and_on_resume() {
    let (broker, topic) = seeded_topic("grow", 2000, 2, "crash", 10);
    let dir = temp_dir("grow");
    let (q, out) = copy_query(&dir, &broker, &topic);
    let ckpt = dir.join("ckpt");
    let progress = dir.join("progress.jsonl");
    let q = q.to_str().unwrap();
    let ckpt = ckpt.to_str().unwrap();
    let alter = |n: &str| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/kafka-local.sh"))
            .args(["tool", "org.apache.kafka.tools.TopicCommand"])
            .args(["--bootstrap-server", &broker, "--alter", "--topic", &topic])
            .args(["--partitions", n])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let running = Running::spawn(&[
        "run",
        q,
        "--checkpoint",
        ckpt,
        "--trigger",
        "100ms",
        "--progress-json",
        progress.to_str().unwrap(),
    ]);
    running.wait_for(Duration::from_secs(60), "the first 2000 records", || {
        records_read(&progress) == 2000
    });
    alter("4");
    append_records(&broker, &topic, 2000, 8); // round-robin over the 4 partitions
    running.wait_for(
        Duration::from_secs(60),
        "the records of the new partitions",
        || records_read(&progress) == 4000,
    );
    assert_eq!(running.said("gained partition"), 2, "{}", running.text());
    drop(running); // SIGKILL

    // Gained while no run was going: read from their start on resume.
    alter("6");
    append_records(&broker, &topic, 1200, 9);
    let resumed = Running::spawn(&["run", q, "--checkpoint", ckpt, "--available-now"]);
    let said = resumed.finish(Duration::from_secs(120));
    assert!(
        said.contains("2 partition(s) more than the checkpoint"),
        "{said}"
    );
    let expected = topic_records(&broker, &topic);
    assert_eq!(expected.len(), 5200);
    assert_eq!(sorted(records_in_files(&out)), expected);
}

/// Runs Kafka's TopicCommand against `broker` with `args`.
fn topic_command(broker: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/kafka-local.sh"))
        .args(["tool", "org.apache.kafka.tools.TopicCommand"])
        .args(["--bootstrap-server", broker])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The next offsets per partition of table `logs` in the last commit of `ckpt`, and
/// that commit's batch id.
fn last_commit(ckpt: &Path) -> (u64, Vec<i64>) {
    let last = std::fs::read_dir(ckpt.join("commits"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(last).unwrap()).unwrap();
    let offsets = c["offsets"]["logs"].as_array().unwrap();
    (
        c["batch_id"].as_u64().unwrap(),
        offsets.iter().map(|o| o.as_i64().unwrap()).collect(),
    )
}

#[test]
fn a_deleted_sink_topic_stops_the_run_with_nothing_committed_past_the_last_good_batch() {
    let (broker, input) = seeded_topic("sinkgone-in", 40_000, 2, "crash", 10);
    let output = unique_topic("sinkgone-out");
    let create = ["--create", "--topic", &output, "--partitions", "1"];
    topic_command(&broker, &create);
    let dir = temp_dir("sinkgone");
    let q = kafka_copy_query(&dir, &broker, &input, &broker, &output);
    let ckpt = dir.join("ckpt");
    let progress = dir.join("progress.jsonl");
    let progress_arg = ["--progress-json", progress.to_str().unwrap()];
    let mut running = Running::spawn(&run_args(&q, &ckpt, &progress_arg));
    running.wait_for(Duration::from_secs(60), "a few batches", || {
        batches(&progress) >= 5
    });
    topic_command(&broker, &["--delete", "--topic", &output]);
    let (ok, said) = running.end(Duration::from_secs(120));
    assert!(!ok, "{said}");
    let (committed, next) = last_commit(&ckpt);
    let gone = format!("Kafka topic '{output}' of the sink is gone");
    let message = format!("batch {} was not written and not committed", committed + 1);
    assert!(said.contains(&gone) && said.contains(&message), "{said}");

    // Made again, the topic gets everything after the last committed batch, once.
    topic_command(&broker, &create);
    let rest = Running::spawn(&run_args(&q, &ckpt, &["--available-now"]));
    let said = rest.finish(Duration::from_secs(120));
    assert!(
        said.contains(&format!("resuming after committed batch {committed}")),
        "{said}"
    );
    let expected: Vec<LogRecord> = consume_all(&broker, &input)
        .iter()
        .filter(|c| c.offset >= next[c.partition as usize])
        .map(|c| parse_record(&c.payload).unwrap())
        .collect();
    let written: Vec<LogRecord> = committed_messages(&broker, &output);
    assert!(expected.len() < 40_000 && !expected.is_empty());
    assert_eq!(sorted(written), sorted(expected));
}

#[test]
fn a_kafka_sink_waits_out_its_broker_restarting_and_writes_each_record_once() {
    // The source is on the shared broker, the sink on one of the test's own: a restart
    // of the sink's broker comes while batches keep coming, so it hits transactions.
    let (source, input) = seeded_topic("sinkrestart-in", 24_000, 2, "crash", 10);
    // Four faults: a restart, a SIGKILL restart, a stop outlasting a transaction, and a
    // freeze (SIGSTOP) that leaves a try waiting past the sink's deadline, which the
    // test shortens to 20 s (75 s by default).
    let b = OwnBroker::start(19492);
    let sink = b.address();
    topic_command(&sink, &["--create", "--topic", "out", "--partitions", "1"]);
    let dir = temp_dir("sinkrestart");
    let q = kafka_copy_query(&dir, &source, &input, &sink, "out");
    let progress = dir.join("progress.jsonl");
    let extra = ["--progress-json", progress.to_str().unwrap()];
    let ckpt = dir.join("ckpt");
    let deadline = |c: &mut Command| {
        c.env("SLUICE_SINK_TRY_DEADLINE_MS", "20000");
    };
    let sluice = Running::spawn_with(&run_args(&q, &ckpt, &extra), deadline);
    for restart in [&["restart"][..], &["restart", "--kill"]] {
        let seen = batches(&progress);
        sluice.wait_for(Duration::from_secs(60), "batches before a restart", || {
            batches(&progress) >= seen + 3
        });
        b.script(restart);
        // Back on the same log dir: batches go on (sink commits come before progress).
        let back = batches(&progress);
        sluice.wait_for(Duration::from_secs(120), "the sink to write on", || {
            batches(&progress) >= back + 3
        });
    }
    // librdkafka itself waits out a quick restart (above). A broker gone for longer
    // than the transaction timeout fails the batch: it is tried again on a new
    // producer once the broker is back.
    let seen = batches(&progress);
    sluice.wait_for(Duration::from_secs(60), "batches before a stop", || {
        batches(&progress) >= seen + 3
    });
    // (A warning counts only when it comes after its fault: the quick restarts above
    // may or may not have outlasted the 20 s deadline on a loaded machine.)
    let (retried, rewritten) = (sluice.said("retrying in"), sluice.said("written on try"));
    b.script(&["stop"]);
    sluice.wait_for(Duration::from_secs(120), "the sink's retry warning", || {
        sluice.said("retrying in") > retried
    });
    b.script(&["restart"]);
    sluice.wait_for(Duration::from_secs(120), "the batch written again", || {
        sluice.said("written on try") > rewritten
    });
    // A frozen broker holds its connections and answers nothing: the try under way is
    // given up at the deadline and the batch goes on to a new producer after the thaw.
    let seen = batches(&progress);
    sluice.wait_for(Duration::from_secs(60), "batches before a freeze", || {
        batches(&progress) >= seen + 3
    });
    let given_up = "neither finished nor failed within 20 s";
    let (stalled, rewritten) = (sluice.said(given_up), sluice.said("written on try"));
    let frozen = b.freeze();
    sluice.wait_for(Duration::from_secs(60), "a try given up on", || {
        sluice.said(given_up) > stalled
    });
    drop(frozen);
    sluice.wait_for(
        Duration::from_secs(120),
        "the batch written after the thaw",
        || sluice.said("written on try") > rewritten,
    );
    sluice.wait_for(Duration::from_secs(120), "every record", || {
        records_read(&progress) == 24_000
    });
    let said = sluice.text();
    drop(sluice);
    for line in said.lines().filter(|l| l.contains("Kafka sink topic")) {
        eprintln!("{line}"); // the faults' timings, shown with --nocapture
    }
    assert!(!said.contains("ERROR"), "{said}");
    let written = committed_messages(&sink, "out");
    assert_eq!(sorted(written), topic_records(&source, &input));
}

/// The query file of a copy of `input` on `broker` into Kafka topic `output` on `sink`.
fn kafka_copy_query(dir: &Path, broker: &str, input: &str, sink: &str, output: &str) -> PathBuf {
    query_file(
        dir,
        broker,
        input,
        &format!(
            "CREATE TABLE out WITH (connector = 'kafka', topic = '{output}', bootstrap_servers = '{sink}');\n\
             INSERT INTO out SELECT * FROM logs;"
        ),
    )
}

/// The log records a sink committed to `topic`.
fn committed_messages(broker: &str, topic: &str) -> Vec<LogRecord> {
    committed(broker, topic)
        .iter()
        .map(|c| parse_record(c.payload.as_deref().unwrap()).unwrap())
        .collect()
}

/// A small tmpfs of the test's own, unmounted when dropped: a disk that can be filled
/// and made read-only without touching the machine's.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let t = Self(dir.to_path_buf());
        t.mount_with(&format!("size={size}"), &["-t", "tmpfs", "tmpfs"]);
        t
    }

    /// `mount -o OPTS EXTRA… DIR`; the tests run as root on this machine (as CI does).
    fn mount_with(&self, opts: &str, extra: &[&str]) {
        let out = Command::new("mount")
            .args(["-o", opts])
            .args(extra)
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -o {opts} {}: {} (the storage-fault test mounts a small tmpfs: run it as root)",
            self.0.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn read_only(&self, ro: bool) {
        self.mount_with(if ro { "remount,ro" } else { "remount,rw" }, &[]);
    }

    /// Fills the disk (the write stops at "no space left").
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }

    fn unfill(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_checkpoint_disk_is_retried_or_stops_and_resumes_exactly() {
    let (broker, topic) = event_time_topic("disk", 30_000, 23, 400, "crash", 1);
    let expected = q2_expected(&broker, &topic);
    assert!(expected.len() > 100);
    let dir = temp_dir("disk");
    let out = dir.join("out");
    let q = write_query(&dir, &broker, &topic, "parquet", &out, Q2);
    let disk = Tmpfs::mount(&dir.join("disk"), "8m");
    let ckpt = disk.0.join("ckpt");

    // A full disk, then a read-only one, each mended while the run retries.
    let progress = dir.join("progress-0.jsonl");
    let progress_arg = ["--progress-json", progress.to_str().unwrap()];
    let run = Running::spawn(&run_args(&q, &ckpt, &progress_arg));
    let mut retried = 0;
    for fault in ["full", "read-only"] {
        let seen = batches(&progress);
        run.wait_for(Duration::from_secs(60), "batches before the fault", || {
            batches(&progress) >= seen + 4
        });
        match fault {
            "full" => disk.fill(),
            _ => disk.read_only(true),
        }
        run.wait_for(Duration::from_secs(30), "a retried write", || {
            run.said("retrying in") > retried
        });
        retried = run.said("retrying in");
        let seen = batches(&progress);
        match fault {
            "full" => disk.unfill(),
            _ => disk.read_only(false),
        }
        run.wait_for(Duration::from_secs(60), "batches after the mend", || {
            batches(&progress) >= seen + 3
        });
    }
    let said = run.text();
    assert!(said.contains("No space left on device"), "{said}");
    assert!(said.contains("Read-only file system"), "{said}");
    drop(run); // SIGKILL

    // Read-only for longer than the run retries: it stops with the error.
    let progress = dir.join("progress-1.jsonl");
    let args = [
        "--write-retry",
        "3s",
        "--progress-json",
        progress.to_str().unwrap(),
    ];
    let mut run = Running::spawn(&run_args(&q, &ckpt, &args));
    run.wait_for(Duration::from_secs(60), "batches before the fault", || {
        batches(&progress) >= 4
    });
    disk.read_only(true);
    let (ok, said) = run.end(Duration::from_secs(60));
    assert!(!ok);
    let last = said.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: checkpoint ")
            && last.contains("failed")
            && last.contains("Read-only file system")
            && last.contains("resumes after the last committed batch"),
        "{said}"
    );
    disk.read_only(false);

    // The rest, from the checkpoint: the exact result.
    let rest = ["--available-now", "--close-windows-at-end"];
    Running::spawn(&run_args(&q, &ckpt, &rest)).finish(Duration::from_secs(120));
    assert_eq!(
        parquet_rows(&out),
        expected,
        "after a full and a read-only disk"
    );
}

/// A process frozen (SIGSTOP: it holds connections and answers nothing, as an
/// overloaded or partitioned endpoint does) until dropped (SIGCONT).
struct Frozen(String);

impl Frozen {
    fn pid(pid: String) -> Self {
        let f = Self(pid.trim().to_string());
        f.signal("-STOP");
        f
    }

    /// The local S3 endpoint, frozen.
    fn s3() -> Self {
        let home = service_home("SLUICE_S3_HOME", "sluice-s3");
        let port = std::env::var("S3_PORT").unwrap_or_else(|_| "9787".into());
        Self::pid(std::fs::read_to_string(home.join(format!("moto-{port}.pid"))).unwrap())
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill")
            .args([sig, &self.0])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.signal("-CONT");
    }
}

#[test]
fn an_s3_checkpoint_endpoint_that_stops_answering_is_retried_and_the_result_is_exact() {
    let endpoint = endpoint();
    let (broker, topic) = event_time_topic("s3frozen", 30_000, 29, 400, "crash", 1);
    let expected = q2_expected(&broker, &topic);
    let bucket = format!("frozen-{}", std::process::id());
    create_bucket(&endpoint, &bucket);
    let dir = temp_dir("s3frozen");
    let out = dir.join("out");
    let q = write_query(&dir, &broker, &topic, "parquet", &out, Q2);
    let ckpt = PathBuf::from(format!("s3://{bucket}/ckpt"));
    let progress = dir.join("progress.jsonl");
    let progress_arg = ["--progress-json", progress.to_str().unwrap()];
    let env = |c: &mut Command| s3_env(c, &endpoint);
    let run = Running::spawn_with(&run_args(&q, &ckpt, &progress_arg), env);
    run.wait_for(Duration::from_secs(60), "batches before the freeze", || {
        batches(&progress) >= 4
    });
    let frozen = Frozen::s3();
    run.wait_for(Duration::from_secs(60), "a retried write", || {
        run.said("retrying in") > 0
    });
    drop(frozen);
    let seen = batches(&progress);
    run.wait_for(Duration::from_secs(60), "batches after the thaw", || {
        batches(&progress) >= seen + 3
    });
    drop(run); // SIGKILL
    let rest = ["--available-now", "--close-windows-at-end"];
    Running::spawn_with(&run_args(&q, &ckpt, &rest), env).finish(Duration::from_secs(120));
    assert_eq!(parquet_rows(&out), expected, "after a frozen S3 endpoint");
}
