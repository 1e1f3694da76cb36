//! `sluice run`: the micro-batch loop. It reads top to bottom, once per batch:
//!
//! ```text
//!  offsets to read ─► fetch + decode (source workers; next batch is requested early)
//!    ─► stage 1 (filter/project/partial aggregate per partition)
//!    ─► exchange + state merge ─► emit per output mode ─► stage 2 ─► sink ─► progress
//! ```

pub mod analyze;
pub mod clocks;
pub mod dataflow;
pub mod explain;
pub mod gather;
pub mod input;
pub mod late;
pub mod lineage;
pub mod plan;
pub mod run;
pub mod sources;
pub mod stateful;
pub mod watermark;
pub mod window;

use std::path::PathBuf;
use std::time::Duration;

use arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};
use crate::metrics::status::StatusMode;
use crate::sink::console::ConsoleSink;
use crate::sink::file::FileSink;
use crate::sink::kafka::KafkaSink;
use crate::sink::Sink;
use crate::source::OffsetRange;
use crate::sql::{QueryFile, TableDef};
pub use plan::{OutputMode, StreamPlan};
pub use run::run;

/// Options of `sluice run`. Each overrides what the query file says.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// The query file: CREATE TABLE statements and one SELECT / INSERT INTO.
    pub file: PathBuf,
    /// Parallelism: input partitions of stage 1 and shards of the state.
    #[arg(long, default_value_t = default_parallelism())]
    pub target_partitions: usize,
    /// Start a batch at most this often (e.g. `500ms`, `1s`, `1m`); default: as soon as
    /// the previous batch ends.
    #[arg(long, value_parser = parse_duration)]
    pub trigger: Option<Duration>,
    /// Process what the source holds when the run starts, in as many batches as
    /// needed, then exit.
    #[arg(long)]
    pub available_now: bool,
    /// Most records per batch and table, over its partitions (Spark's
    /// maxOffsetsPerTrigger; default 1,000,000). A bound always applies, so a backlog or
    /// an unbounded source cannot fill memory. With `--trigger`, a batch cut short by
    /// the default bound is followed at once by the next (a backlog is not throttled to
    /// one bound per interval); a bound given here holds per interval, as in Spark.
    #[arg(long)]
    pub max_records_per_batch: Option<u64>,
    /// Most payload bytes per batch and table (e.g. `64MB`, `1GB`; default 256MB):
    /// bounds memory when records are large. A batch stops at the first decode chunk
    /// past it.
    #[arg(long, value_parser = parse_bytes)]
    pub max_bytes_per_batch: Option<u64>,
    /// Kafka bootstrap servers (overrides the table's).
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// Where reading starts without a checkpoint: earliest or latest.
    #[arg(long)]
    pub starting_offsets: Option<String>,
    /// Replace the query's source: `generator` (unbounded), `generator:N` (N records), or
    /// `file:DIR` (JSON-lines files), with the same schema. No broker needed.
    #[arg(long)]
    pub source: Option<String>,
    /// Output mode: append, update or complete (default: complete for aggregations,
    /// append otherwise).
    #[arg(long, value_enum)]
    pub output_mode: Option<OutputMode>,
    /// Forget unwindowed state (aggregate groups, top-N and dedup keys) that no batch
    /// has updated for this long, in processing time (e.g. `1h`; Flink's
    /// table.exec.state.ttl). Overrides the tables' `state_ttl` option.
    #[arg(long, value_parser = parse_duration)]
    pub state_ttl: Option<Duration>,
    /// Rows the console shows per batch (0 = all).
    #[arg(long, default_value_t = 20)]
    pub num_rows: usize,
    /// Append records that do not decode to this JSON-lines file, with partition,
    /// offset and error.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// How long a failing write of the checkpoint, a file sink (full or read-only disk,
    /// an object store that does not answer) or a Kafka sink (its broker restarting or
    /// out of reach) is retried, with backoff and a warning each time, before the run
    /// stops with the error (a restart then resumes after the last committed batch).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub write_retry: Duration,
    /// When a source's broker cannot be reached at start, wait for it (saying so every
    /// 30 s) instead of stopping with an error. Once running, Sluice always waits out a
    /// broker that goes away.
    #[arg(long)]
    pub wait_for_source: bool,
    /// Decode every record, even those whose raw bytes prove they cannot pass the
    /// query's filter (slower; counts every malformed record exactly).
    #[arg(long)]
    pub no_prefilter: bool,
    /// Append late rows (behind the watermark, dropped from windows) to this JSON-lines
    /// file, as the aggregation saw them, with the batch id.
    #[arg(long)]
    pub late_data: Option<PathBuf>,
    /// With --available-now: when the input is exhausted, close every open window and
    /// emit it (a bounded replay). Without it, windows the watermark has not passed stay
    /// open, as in Spark.
    #[arg(long)]
    pub close_windows_at_end: bool,
    /// Checkpoint directory: resume from it after a stop or crash, exactly once with
    /// file sinks. Created when missing.
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// Reuse a checkpoint written by a different query (its state may not fit).
    #[arg(long)]
    pub force: bool,
    /// Serve /metrics (Prometheus), /progress (JSON) and a live dashboard at / on this
    /// address: PORT (loopback) or HOST:PORT.
    #[arg(long)]
    pub http: Option<String>,
    /// Require this token on every `--http` request (`Authorization: Bearer TOKEN`, or
    /// `?token=TOKEN` for the dashboard page). Needed when `--http` listens beyond
    /// loopback; prefer the environment variable, which `ps` does not show.
    #[arg(long, env = "SLUICE_HTTP_TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
    /// Progress on stderr: `line` rewrites one live status line after each batch,
    /// `plain` prints one line per batch, `auto` picks `line` on a terminal.
    #[arg(long, value_enum, default_value_t = StatusMode::Auto)]
    pub status: StatusMode,
    /// Append one JSON progress record per batch (Spark's field names) to this file;
    /// `-` writes them to stderr.
    #[arg(long)]
    pub progress_json: Option<String>,
    /// Committed batches kept in the checkpoint; older ones are deleted.
    #[arg(long, default_value_t = 10)]
    pub keep_checkpoints: u64,
}

/// Records per batch unless `--max-records-per-batch` says otherwise.
pub const DEFAULT_MAX_RECORDS: u64 = 1_000_000;

/// Payload bytes per batch unless `--max-bytes-per-batch` says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Parses `1048576`, `64KB`, `256MB`, `1GB` (powers of 1024; `KiB` etc. also accepted).
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 64MB or 1GB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("'{s}': unknown unit; use B, KB, MB or GB")),
    };
    n.checked_mul(scale)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("'{s}' is not a size between 1 byte and 16 EB"))
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Parses `250ms`, `1s`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms, 1s or 2m"))?;
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "millisecond" | "milliseconds" => n / 1000.0,
        "s" | "" | "sec" | "second" | "seconds" => n,
        "m" | "min" | "minute" | "minutes" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        _ => {
            return Err(format!(
                "'{s}': unknown unit; use ms, s, m or h (or seconds, minutes)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is too long a duration"))
}

/// The source tables of the query file (every table whose connector is a source and
/// that the query does not write into), in file order, with `--source` applied.
pub fn source_tables(file: &QueryFile, opts: &RunOptions) -> Result<Vec<TableDef>> {
    let sources: Vec<TableDef> = file
        .tables
        .iter()
        .filter(|t| crate::source::is_source(t.connector()))
        // A Kafka table the query writes into is a sink, not a source.
        .filter(|t| file.insert_into.as_deref() != Some(t.name.as_str()))
        .map(with_default_columns)
        .collect::<Result<_>>()?;
    match sources.as_slice() {
        [] => Err(Error::option(
            "query file",
            "no source table: declare one WITH (connector = 'kafka' | 'generator' | 'file' | 'nexmark')",
        )),
        [def] => Ok(vec![with_source_option(def, opts)?]),
        several if opts.source.is_some() => Err(Error::option(
            "--source",
            format!(
                "it replaces the query's one source table, but this query declares {} ({}); drop --source",
                several.len(),
                several.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
        _ => Ok(sources),
    }
}

/// The static tables of the query file (connector `filesystem` or `postgres`).
pub fn static_tables(file: &QueryFile) -> Vec<TableDef> {
    file.tables
        .iter()
        .filter(|t| crate::source::static_table::is_static(t.connector()))
        .filter(|t| file.insert_into.as_deref() != Some(t.name.as_str()))
        .cloned()
        .collect()
}

/// Plans the query in `file` once: loads its static tables (their rows and, when the
/// file declares none, their columns), plans over the sources and builds the lookup
/// joins. `file_name` prefixes planning errors.
pub async fn plan_query(
    file: &QueryFile,
    file_name: &str,
    opts: &RunOptions,
) -> anyhow::Result<StreamPlan> {
    let sources = source_tables(file, opts)?;
    let mut statics = Vec::new();
    let mut rows = Vec::new();
    for def in static_tables(file) {
        let (schema, batches) = crate::source::static_table::load(&def).await?;
        statics.push(TableDef { schema, ..def });
        rows.push(batches);
    }
    let err = |e: datafusion::error::DataFusionError| {
        anyhow::anyhow!("{file_name}: {}", e.strip_backtrace())
    };
    let mut plan = StreamPlan::new(
        file,
        &sources,
        &statics,
        opts.target_partitions,
        opts.output_mode,
    )
    .await
    .map_err(err)?;
    if opts.state_ttl.is_some() {
        plan.state_ttl = opts.state_ttl;
    }
    for (i, batches) in rows.into_iter().enumerate() {
        plan.install_static(i, batches).await.map_err(err)?;
    }
    Ok(plan)
}

/// `def`, with the columns of its connector when it declares none (a Nexmark stream's).
fn with_default_columns(def: &TableDef) -> Result<TableDef> {
    let mut def = def.clone();
    if def.connector() == "nexmark" && def.schema.fields().is_empty() {
        def.schema = crate::source::nexmark::schema(crate::source::nexmark::event_type(&def)?);
    }
    Ok(def)
}

/// `def`, or the source `--source` names in its place (same name and schema).
fn with_source_option(def: &TableDef, opts: &RunOptions) -> Result<TableDef> {
    let mut def = def.clone();
    if let Some(s) = &opts.source {
        let mut options = std::collections::BTreeMap::new();
        match s.split_once(':') {
            None if s == "generator" => {}
            Some(("generator", n)) => {
                options.insert("max_records".to_string(), n.to_string());
            }
            Some(("file", dir)) => {
                options.insert("path".to_string(), dir.to_string());
            }
            _ => {
                return Err(Error::option(
                    "--source",
                    format!("'{s}' is not a source; use generator, generator:N or file:DIR"),
                ))
            }
        }
        let connector = s.split(':').next().unwrap_or("generator").to_string();
        options.insert("connector".to_string(), connector);
        // Event time belongs to the records, not to where they come from: keep it.
        for key in ["event_time", "watermark_delay"] {
            if let Some(v) = def.options.get(key) {
                options.insert(key.to_string(), v.clone());
            }
        }
        def.options = options;
    }
    Ok(def)
}

/// The sink the query writes to: the INSERT INTO target, or the console.
/// `replay` is the batch a restart replays from the checkpoint's log, if any.
/// `changes`: the result's rows can be updated and deleted (an `op` column leads them).
fn open_sink(
    file: &QueryFile,
    opts: &RunOptions,
    (mode, changes): (OutputMode, bool),
    schema: SchemaRef,
    replay: Option<u64>,
) -> Result<Box<dyn Sink>> {
    let def = file
        .insert_into
        .as_ref()
        .and_then(|t| file.tables.iter().find(|d| &d.name == t));
    let connector = def.map(TableDef::connector).unwrap_or("console");
    match connector {
        // Flink's name: the rows are dropped (benchmarks measure the query, not a sink).
        "blackhole" => Ok(Box::new(crate::sink::Discard)),
        "console" => {
            let num_rows = match def.and_then(|d| d.options.get("num_rows")) {
                Some(n) if opts.num_rows == 20 => n.parse().map_err(|_| {
                    Error::option("num_rows", format!("'{n}' is not a whole number"))
                })?,
                _ => opts.num_rows,
            };
            Ok(Box::new(ConsoleSink::new(
                Box::new(std::io::stdout()),
                num_rows,
                schema,
            )))
        }
        "parquet" | "jsonl" => {
            let def =
                def.ok_or_else(|| Error::option("sink", "internal: file sink without a table"))?;
            if changes && mode == OutputMode::Update {
                return Err(Error::option(
                    "output mode",
                    format!(
                        "update mode cannot express into a {connector} sink the rows this query deletes; \
                         use --output-mode changelog (each row with its op: +I, -U, +U, -D) or complete"
                    ),
                ));
            }
            let sink = FileSink::from_table(def, schema)?;
            // Complete mode: each batch's whole result replaces the previous one, so the
            // directory always holds one copy of the result (never duplicates).
            Ok(Box::new(if mode == OutputMode::Complete {
                sink.replacing()
            } else {
                sink
            }))
        }
        "kafka" => {
            let def =
                def.ok_or_else(|| Error::option("sink", "internal: Kafka sink without a table"))?;
            let checkpoint = opts.checkpoint.as_deref().unwrap_or("");
            let sink = KafkaSink::from_table(
                def,
                schema,
                &[&file.query.to_string(), checkpoint],
                replay,
            )?;
            Ok(Box::new(match changes && mode == OutputMode::Update {
                true => sink.upserts()?,
                false => sink,
            }))
        }
        other => Err(Error::option(
            "sink connector",
            format!("'{other}' is not a sink; use 'console', 'parquet', 'jsonl', 'kafka' or 'blackhole'"),
        )),
    }
}

/// Splits what is available into this batch's ranges: everything from `next` to
/// `ends`, or, when that is more than `max_records`, a share of it proportional to
/// each partition's backlog.
pub fn plan_ranges(next: &[i64], ends: &[i64], max_records: u64) -> Vec<(OffsetRange, u64)> {
    let backlog: Vec<u64> = next
        .iter()
        .zip(ends)
        .map(|(n, e)| e.saturating_sub(*n).max(0) as u64)
        .collect();
    // u128: an unbounded source reports i64::MAX as its end.
    let total: u128 = backlog.iter().map(|b| *b as u128).sum();
    let quota = |b: u64| -> u64 {
        if total > max_records as u128 {
            ((b as u128 * max_records as u128 / total) as u64).max(u64::from(b > 0))
        } else {
            u64::MAX
        }
    };
    backlog
        .iter()
        .enumerate()
        .filter(|(_, b)| **b > 0)
        .map(|(p, b)| {
            (
                OffsetRange {
                    partition: p,
                    start: next[p],
                    end: ends[p],
                },
                quota(*b),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_a_limit_by_backlog() {
        let r = plan_ranges(&[0, 10, 5], &[100, 10, 305], 40);
        let got: Vec<(usize, i64, i64, u64)> = r
            .iter()
            .map(|(o, q)| (o.partition, o.start, o.end, *q))
            .collect();
        assert_eq!(got, [(0, 0, 100, 10), (2, 5, 305, 30)]);
        let r = plan_ranges(&[0], &[5], 40);
        assert_eq!(r[0].1, u64::MAX);
        assert!(plan_ranges(&[5], &[5], u64::MAX).is_empty());
    }

    /// Regression (found by tests/fuzz_sql.rs): a huge duration panicked in
    /// `Duration::from_secs_f64`.
    #[test]
    fn durations_parse_and_a_huge_one_is_an_error() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("2 minutes").unwrap(),
            Duration::from_secs(120)
        );
        let e = parse_duration(&format!("{}h", "9".repeat(400))).unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("256MB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1gib").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("0").is_err() && parse_bytes("lots").is_err());
    }

    #[test]
    fn an_unbounded_source_gets_a_share_of_the_bound() {
        let r = plan_ranges(&[0, 0, 0], &[i64::MAX; 3], 900);
        assert_eq!(
            r.iter().map(|(_, q)| *q).collect::<Vec<_>>(),
            [300, 300, 300]
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("fast").is_err());
    }
}
