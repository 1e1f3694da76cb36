//! `sluice gen`: the load generator, a drop-in for the one users run today
//! (../shared/workload.md). It makes seed records with [`record::RecordMaker`] and sends
//! them to Kafka, to JSON-lines files, or to stdout, at a target rate or as fast as
//! the output takes them, printing progress about once a second.
//!
//! Record making lives in [`record`] so the engine's built-in generator source reuses
//! it; this module owns pacing, progress and outputs only.

pub mod nexmark;
pub mod output;
pub mod record;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use output::{open_output, GenOutput};
pub use record::{RecordMaker, RecordSpec};

/// Options of `sluice gen`. Each has the environment variable users already set.
#[derive(Debug, Clone, clap::Args)]
pub struct GenOptions {
    /// Kafka bootstrap servers.
    #[arg(
        long = "broker",
        env = "KAFKA_BROKER",
        default_value = "localhost:9092"
    )]
    pub broker: String,
    /// Topic to write to.
    #[arg(long = "topic", env = "KAFKA_TOPIC", default_value = "logs")]
    pub topic: String,
    /// Records per second for this instance; 0 sends as fast as the output takes them.
    #[arg(long = "target-rps", env = "TARGET_RPS", default_value_t = 1000)]
    pub target_rps: u64,
    /// A word inserted into `content` of about one record in ADDITIONAL_TERM_RATE.
    #[arg(long = "additional-term", env = "ADDITIONAL_TERM")]
    pub additional_term: Option<String>,
    /// One record in N gets the additional term.
    #[arg(
        long = "additional-term-rate",
        env = "ADDITIONAL_TERM_RATE",
        default_value_t = 100
    )]
    pub additional_term_rate: u64,
    /// Stop after this many records; 0 runs until interrupted.
    #[arg(long = "max-records", env = "MAX_RECORDS", default_value_t = 0)]
    pub max_records: u64,
    /// Partitions of the topic when Sluice creates it (it is created when missing).
    #[arg(long, default_value_t = 2)]
    pub partitions: usize,
    /// Seed for reproducible records (default: random, printed in the summary).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Event time of the first record in epoch ms, advancing at --event-rate records per
    /// second of event time. Default: the wall clock. Fix it (with --seed) for records
    /// that are identical run after run.
    #[arg(long)]
    pub start_time_ms: Option<i64>,
    /// With --start-time-ms: records per second of event time.
    #[arg(long, default_value_t = 100_000)]
    pub event_rate: u64,
    /// Each timestamp is up to this many ms behind its clock reading (event-time disorder).
    #[arg(long, default_value_t = 1000)]
    pub max_disorder_ms: u64,
    /// Write JSON lines instead of sending to Kafka: `-` for stdout, a file or device
    /// (e.g. /dev/null) for one stream, otherwise a directory of part-NNNNN.jsonl files.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// With a directory --output: records per file.
    #[arg(long, default_value_t = 1_000_000)]
    pub records_per_file: u64,
    /// Kafka producer compression: none, lz4, snappy, zstd, gzip.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Kafka producer linger.ms: how long a batch may wait to fill.
    #[arg(long, default_value_t = 20)]
    pub linger_ms: u64,
    /// Kafka producer acks: 1 (the partition leader) or all (every in-sync replica).
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// No progress lines, only the summary.
    #[arg(long)]
    pub quiet: bool,
    /// Make the Nexmark streams instead of log records: person, auction and bid events
    /// into topics PREFIX-person, PREFIX-auction, PREFIX-bid (`--nexmark-prefix`), or
    /// into those subdirectories of `--output`.
    #[arg(long)]
    pub nexmark: bool,
    /// With --nexmark: the topics' name prefix.
    #[arg(long, default_value = "nexmark")]
    pub nexmark_prefix: String,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct GenSummary {
    /// Records made and handed to the output (and, for Kafka, acknowledged).
    pub records: u64,
    /// Wall time from the first record to the last acknowledgement.
    pub elapsed: Duration,
    /// The seed used; pass it as --seed to make the same records again.
    pub seed: u64,
    /// Where the records went, for the summary line.
    pub destination: String,
}

impl GenSummary {
    /// Records per second over the whole run.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Where event time comes from: the wall clock, or a synthetic clock for reproducible
/// records.
#[derive(Debug, Clone, Copy)]
pub enum EventClock {
    /// Epoch ms now, read at most every [`CHUNK`] records.
    Wall,
    /// `start_ms + index * 1000 / per_second`.
    Synthetic { start_ms: i64, per_second: u64 },
}

impl EventClock {
    /// The clock reading for record number `index` (`wall_ms` is the cached wall time).
    pub fn at(&self, index: u64, wall_ms: i64) -> i64 {
        match *self {
            EventClock::Wall => wall_ms,
            EventClock::Synthetic {
                start_ms,
                per_second,
            } => start_ms + (index as i128 * 1000 / per_second.max(1) as i128) as i64,
        }
    }
}

/// Epoch milliseconds now.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Most records made between clock reads, pacing checks and progress checks.
pub const CHUNK: u64 = 256;

impl GenOptions {
    /// The record spec these options describe, with `seed` resolved.
    pub fn record_spec(&self, seed: u64) -> RecordSpec {
        RecordSpec {
            seed,
            term: self.additional_term.clone(),
            term_rate: self.additional_term_rate,
            max_disorder_ms: self.max_disorder_ms,
        }
    }

    /// The event clock these options describe.
    pub fn clock(&self) -> EventClock {
        match self.start_time_ms {
            Some(start_ms) => EventClock::Synthetic {
                start_ms,
                per_second: self.event_rate,
            },
            None => EventClock::Wall,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.additional_term_rate == 0 {
            return Err(Error::option("ADDITIONAL_TERM_RATE", "must be at least 1"));
        }
        if self.partitions == 0 {
            return Err(Error::option("--partitions", "must be at least 1"));
        }
        if self.start_time_ms.is_some() && self.event_rate == 0 {
            return Err(Error::option("--event-rate", "must be at least 1"));
        }
        Ok(())
    }
}

/// Runs the generator until `max_records` are out (or forever when 0), or until
/// `stop` returns true. Progress goes to `progress` about once a second.
pub fn run(
    opts: &GenOptions,
    progress: &mut dyn Write,
    stop: &dyn Fn() -> bool,
) -> Result<GenSummary> {
    opts.validate()?;
    if opts.nexmark {
        return nexmark::run(opts, progress, stop);
    }
    let seed = opts.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut out: Box<dyn GenOutput> = open_output(opts)?;
    let mut maker = RecordMaker::new(&opts.record_spec(seed));
    let clock = opts.clock();
    let mut buf = Vec::with_capacity(512);
    let start = Instant::now();
    let mut last_report = (start, 0u64);
    let mut wall = wall_ms();
    let mut index = 0u64;
    let limit = if opts.max_records == 0 {
        u64::MAX
    } else {
        opts.max_records
    };
    // Check the clock, pacing and progress every `every` records: often enough that a
    // low target rate is smooth, rarely enough to cost nothing at full speed.
    let every = match opts.target_rps {
        0 => CHUNK,
        rps => (rps / 100).clamp(1, CHUNK),
    };

    while index < limit {
        if index.is_multiple_of(every) {
            if stop() {
                break;
            }
            wall = wall_ms();
            out.tick(wall);
            pace(opts.target_rps, start, index);
            let now = Instant::now();
            if !opts.quiet && now.duration_since(last_report.0) >= Duration::from_secs(1) {
                let secs = now.duration_since(last_report.0).as_secs_f64();
                let rate = (index - last_report.1) as f64 / secs;
                let _ = writeln!(progress, "gen: {index} records sent, {rate:.0} rec/s");
                last_report = (now, index);
            }
        }
        buf.clear();
        maker.append(clock.at(index, wall), &mut buf);
        out.send(index, &buf)?;
        index += 1;
    }
    out.finish()?;
    let summary = GenSummary {
        records: index,
        elapsed: start.elapsed(),
        seed,
        destination: out.describe(),
    };
    let _ = writeln!(
        progress,
        "gen: done: {} records to {} in {:.2} s ({:.0} rec/s), seed {}",
        summary.records,
        summary.destination,
        summary.elapsed.as_secs_f64(),
        summary.rate(),
        summary.seed
    );
    Ok(summary)
}

/// Sleeps until record `index` is due at `rps` records per second (no-op for rps 0).
pub(crate) fn pace(rps: u64, start: Instant, index: u64) {
    if rps == 0 {
        return;
    }
    let due = Duration::from_nanos((index as u128 * 1_000_000_000 / rps as u128) as u64);
    let elapsed = start.elapsed();
    if due > elapsed {
        std::thread::sleep(due - elapsed);
    }
}
