//! `sluice run`: the micro-batch loop. It reads top to bottom, once per batch:
//!
//! ```text
//!  offsets to read ─► fetch + decode (source workers; next batch is requested early)
//!    ─► stage 1 (filter/project/partial aggregate per partition)
//!    ─► exchange + state merge ─► emit per output mode ─► stage 2 ─► sink ─► progress
//! ```

pub mod input;
pub mod plan;
pub mod watermark;
pub mod window;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use crate::decode::Malformed;
use crate::error::{Error, Result};
use crate::metrics::BatchProgress;
use crate::sink::console::ConsoleSink;
use crate::sink::Sink;
use crate::source::{self, Fetcher, OffsetRange, PartitionData, Source, SourceSettings};
use crate::sql::{QueryFile, TableDef};
use crate::state::window::WindowedState;
use crate::state::ShardedState;
pub use plan::{OutputMode, PlanKind, StreamPlan};
use std::sync::Arc;
use watermark::{WatermarkTracker, NO_WATERMARK};

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
    /// Most records per batch, over all partitions (Spark's maxOffsetsPerTrigger).
    #[arg(long)]
    pub max_records_per_batch: Option<u64>,
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
    /// Rows the console shows per batch (0 = all).
    #[arg(long, default_value_t = 20)]
    pub num_rows: usize,
    /// Append records that do not decode to this JSON-lines file, with partition,
    /// offset and error.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
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
    Ok(Duration::from_secs_f64(secs))
}

/// The source table of the query file (the one table whose connector is a source),
/// with `--source` applied.
fn source_table(file: &QueryFile, opts: &RunOptions) -> Result<TableDef> {
    let mut sources = file
        .tables
        .iter()
        .filter(|t| matches!(t.connector(), "kafka" | "generator" | "file"));
    let def = sources.next().ok_or_else(|| {
        Error::option(
            "query file",
            "no source table: declare one WITH (connector = 'kafka' | 'generator' | 'file')",
        )
    })?;
    if sources.next().is_some() {
        return Err(Error::option(
            "query file",
            "more than one source table; a query reads exactly one source",
        ));
    }
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
fn open_sink(file: &QueryFile, opts: &RunOptions, schema: SchemaRef) -> Result<Box<dyn Sink>> {
    let def = file
        .insert_into
        .as_ref()
        .and_then(|t| file.tables.iter().find(|d| &d.name == t));
    let connector = def.map(TableDef::connector).unwrap_or("console");
    match connector {
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
        other => Err(Error::option(
            "sink connector",
            format!("'{other}' is not a sink yet; use connector = 'console'"),
        )),
    }
}

/// Splits what is available into this batch's ranges: everything from `next` to
/// `ends`, or, with a limit, a share of it proportional to each partition's backlog.
pub fn plan_ranges(
    next: &[i64],
    ends: &[i64],
    max_records: Option<u64>,
) -> Vec<(OffsetRange, u64)> {
    let backlog: Vec<u64> = next
        .iter()
        .zip(ends)
        .map(|(n, e)| (e - n).max(0) as u64)
        .collect();
    let total: u64 = backlog.iter().sum();
    let quota = |b: u64| -> u64 {
        match max_records {
            Some(max) if total > max => {
                ((b as u128 * max as u128 / total as u128) as u64).max(u64::from(b > 0))
            }
            _ => u64::MAX,
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

/// Runs the query in `opts.file` until the source is exhausted (`--available-now`) or
/// `stop` returns true. Progress lines go to `progress`.
pub async fn run(
    opts: &RunOptions,
    progress: &mut (dyn Write + Send),
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    let file_name = opts.file.display().to_string();
    let text = std::fs::read_to_string(&opts.file)
        .map_err(|e| Error::io("cannot read the query file", &opts.file, e))?;
    let file = QueryFile::parse(&file_name, &text)?;
    let def = source_table(&file, opts)?;
    let settings = SourceSettings {
        bootstrap_servers: opts.bootstrap_servers.clone(),
        starting_offsets: opts.starting_offsets.clone(),
        target_partitions: opts.target_partitions,
    };
    let plan = StreamPlan::new(
        &file,
        &def,
        opts.target_partitions,
        opts.output_mode,
        opts.late_data.is_some(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{file_name}: {}", e.strip_backtrace()))?;
    let mut sink = open_sink(&file, opts, plan.output_schema.clone())?;
    let mut source: Box<dyn Source> = source::open(&def, &settings)?;
    let mut next = source.start_offsets()?;
    let targets = if opts.available_now {
        let ends = source.available_ends()?;
        if ends.iter().any(|e| *e == i64::MAX) {
            return Err(Error::option(
                "--available-now",
                "the source is unbounded; bound it (e.g. --source generator:1000000) or drop --available-now",
            )
            .into());
        }
        Some(ends)
    } else {
        None
    };
    let prefilter = if opts.no_prefilter {
        None
    } else {
        plan.prefilter()
    };
    let screen = match &prefilter {
        Some(p) => format!(", prefilter requires {:?}", p.literals()),
        None => String::new(),
    };
    let mut fetcher = Fetcher::start(
        source.readers()?,
        source.workers(),
        plan.input_schema.clone(),
        prefilter,
    )?;
    let mut state = StreamState::new(&plan)?;
    let mut late_sink = match &opts.late_data {
        Some(p) => Some(LateSink::open(p)?),
        None => None,
    };
    let mut dead_letter = match &opts.dead_letter {
        Some(p) => Some(DeadLetter::open(p)?),
        None => None,
    };
    let _ = writeln!(
        progress,
        "[sluice] {file_name}: reading {}, output mode {}{screen}",
        source.describe(),
        plan.mode
    );

    let limit = opts.max_records_per_batch;
    let mut requested = false;
    let mut batch_id = 0u64;
    loop {
        if stop() {
            break;
        }
        let started = Instant::now();
        if !requested {
            let ends = match &targets {
                Some(t) => t.clone(),
                None => source.available_ends()?,
            };
            let ranges = plan_ranges(&next, &ends, limit);
            if ranges.is_empty() {
                if targets.is_some() {
                    break;
                }
                tokio::time::sleep(
                    opts.trigger
                        .unwrap_or(Duration::from_millis(100))
                        .min(Duration::from_millis(100)),
                )
                .await;
                continue;
            }
            fetcher.request(&ranges)?;
        }
        let data = fetcher.collect()?;
        for d in &data {
            next[d.range.partition] = d.range.end;
        }
        // Ask for the next batch now, so it is fetched and decoded while this one runs.
        requested = false;
        if opts.trigger.is_none() && !stop() {
            let ends = match &targets {
                Some(t) => t.clone(),
                None => source.available_ends()?,
            };
            let ranges = plan_ranges(&next, &ends, limit);
            if !ranges.is_empty() {
                fetcher.request(&ranges)?;
                requested = true;
            }
        }

        let (input, mut p) = gather(batch_id, data, plan.partitions);
        let malformed: Vec<Malformed> = input.1;
        p.malformed_rows = malformed.len() as u64;
        if let Some(m) = malformed.first() {
            let _ = writeln!(
                progress,
                "[sluice] batch {batch_id}: {} malformed record(s) skipped; first at partition {} offset {}: {}",
                malformed.len(),
                m.partition,
                m.offset,
                m.error
            );
        }
        if let Some(dl) = dead_letter.as_mut() {
            dl.write(&malformed)?;
        }
        let output = state.execute(&plan, input.0, false).await?;
        p.output_rows = output.iter().map(|b| b.num_rows() as u64).sum();
        sink.write_batch(batch_id, &output)?;
        state.describe(&mut p, batch_id, late_sink.as_mut())?;
        p.duration = started.elapsed();
        let _ = writeln!(progress, "{}", p.line());
        batch_id += 1;
        if let Some(t) = opts.trigger {
            let wait = t.saturating_sub(started.elapsed());
            tokio::time::sleep(wait).await;
        }
    }
    if opts.close_windows_at_end && targets.is_some() && !stop() && state.has_open_windows() {
        // The input is exhausted: close every window and emit it in one last batch.
        let started = Instant::now();
        let output = state
            .execute(&plan, vec![Vec::new(); plan.partitions], true)
            .await?;
        sink.write_batch(batch_id, &output)?;
        let mut p = BatchProgress {
            batch_id,
            output_rows: output.iter().map(|b| b.num_rows() as u64).sum(),
            ..Default::default()
        };
        state.describe(&mut p, batch_id, late_sink.as_mut())?;
        p.duration = started.elapsed();
        let _ = writeln!(progress, "{}", p.line());
        batch_id += 1;
    }
    let _ = writeln!(progress, "[sluice] stopped after {batch_id} batches");
    Ok(())
}

type Gathered = (Vec<Vec<RecordBatch>>, Vec<Malformed>);

/// Deals the decoded batches round-robin over the plan's input partitions.
fn gather(batch_id: u64, data: Vec<PartitionData>, partitions: usize) -> (Gathered, BatchProgress) {
    let mut progress = BatchProgress {
        batch_id,
        ..Default::default()
    };
    let mut input: Vec<Vec<RecordBatch>> = (0..partitions).map(|_| Vec::new()).collect();
    let mut malformed = Vec::new();
    let mut i = 0;
    for d in data {
        progress.input_rows += d.records;
        progress.screened_rows += d.screened;
        progress
            .offsets
            .push((d.range.partition, d.range.start, d.range.end));
        for b in d.batches {
            input[i % partitions].push(b);
            i += 1;
        }
        malformed.extend(d.malformed);
    }
    ((input, malformed), progress)
}

/// What the query keeps between batches.
enum StreamState {
    Stateless,
    Groups(ShardedState),
    Windows(WindowedState, Option<Arc<WatermarkTracker>>),
}

impl StreamState {
    fn new(plan: &StreamPlan) -> anyhow::Result<Self> {
        Ok(match &plan.kind {
            PlanKind::Stateless { .. } => StreamState::Stateless,
            PlanKind::Aggregate {
                spec, window: None, ..
            } => StreamState::Groups(ShardedState::new(spec.clone(), plan.partitions)?),
            PlanKind::Aggregate {
                spec,
                window: Some(w),
                ..
            } => StreamState::Windows(
                WindowedState::new(spec.clone(), w.spec, plan.partitions),
                w.tracker.clone(),
            ),
        })
    }

    fn has_open_windows(&self) -> bool {
        matches!(self, StreamState::Windows(w, _) if w.panes() > 0)
    }

    /// Runs one batch: stage 1, state merge, emit per output mode, stage 2. With
    /// `close_all`, the watermark first moves past every window.
    async fn execute(
        &mut self,
        plan: &StreamPlan,
        input: Vec<Vec<RecordBatch>>,
        close_all: bool,
    ) -> anyhow::Result<Vec<RecordBatch>> {
        let (partial, upper, upper_input) = match &plan.kind {
            PlanKind::Stateless { plan: p } => return Ok(plan.run_stateless(p, input).await?),
            PlanKind::Aggregate {
                partial,
                upper,
                upper_input,
                ..
            } => (partial, upper, upper_input),
        };
        let partials = plan.run_partial(partial, input).await?;
        let emitted = match self {
            StreamState::Stateless => anyhow::bail!("internal: aggregate without state"),
            StreamState::Groups(state) => {
                state.merge(&partials)?;
                state.emit(plan.mode == OutputMode::Update)?
            }
            StreamState::Windows(state, tracker) => {
                state.merge(&partials)?;
                let watermark = match tracker {
                    Some(t) if close_all => {
                        t.close_all();
                        t.watermark()
                    }
                    Some(t) => t.advance(),
                    None => NO_WATERMARK,
                };
                match plan.mode {
                    OutputMode::Append => state.emit_closed(watermark)?,
                    OutputMode::Update => state.emit_changed(watermark)?,
                    OutputMode::Complete => state.emit_all()?,
                }
            }
        };
        Ok(plan.run_upper(upper, upper_input, emitted).await?)
    }

    /// Fills in the state figures of `p`; hands late rows to `late`.
    fn describe(
        &self,
        p: &mut BatchProgress,
        batch_id: u64,
        late: Option<&mut LateSink>,
    ) -> Result<()> {
        match self {
            StreamState::Stateless => {}
            StreamState::Groups(s) => p.state_groups = s.groups(),
            StreamState::Windows(s, tracker) => {
                p.state_groups = s.groups();
                p.open_panes = Some(s.panes());
                if let Some(t) = tracker {
                    let (n, rows) = t.take_late();
                    p.late_rows = n;
                    p.watermark = Some(t.watermark());
                    if let Some(sink) = late {
                        sink.write(batch_id, &rows)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Late rows, appended as JSON lines with the batch id that dropped them.
struct LateSink {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl LateSink {
    fn open(path: &PathBuf) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("cannot open the late-data file", path, e))?;
        Ok(Self {
            path: path.clone(),
            out: std::io::BufWriter::new(f),
        })
    }

    fn write(&mut self, batch_id: u64, rows: &[RecordBatch]) -> Result<()> {
        let path = self.path.clone();
        let io = |e: std::io::Error| Error::io("cannot write", &path, e);
        for b in rows.iter().filter(|b| b.num_rows() > 0) {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            w.write(b)
                .map_err(|e| Error::option("late-data sink", e.to_string()))?;
            w.finish()
                .map_err(|e| Error::option("late-data sink", e.to_string()))?;
            for line in w
                .into_inner()
                .split(|c| *c == b'\n')
                .filter(|l| !l.is_empty())
            {
                // {"batch_id":N, …the row's columns…}
                let row = std::str::from_utf8(line).unwrap_or("{}");
                let body = row.strip_prefix('{').unwrap_or(row);
                let sep = if body == "}" { "" } else { "," };
                writeln!(self.out, "{{\"batch_id\":{batch_id}{sep}{body}").map_err(io)?;
            }
        }
        self.out.flush().map_err(io)
    }
}

/// Records that did not decode, appended as JSON lines with where they came from.
struct DeadLetter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl DeadLetter {
    fn open(path: &PathBuf) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("cannot open the dead-letter file", path, e))?;
        Ok(Self {
            path: path.clone(),
            out: std::io::BufWriter::new(f),
        })
    }

    fn write(&mut self, records: &[Malformed]) -> Result<()> {
        for m in records {
            let line = serde_json::json!({
                "partition": m.partition,
                "offset": m.offset,
                "error": m.error,
                "payload": String::from_utf8_lossy(&m.payload),
            })
            .to_string()
                + "\n";
            self.out
                .write_all(line.as_bytes())
                .map_err(|e| Error::io("cannot write", &self.path, e))?;
        }
        self.out
            .flush()
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_a_limit_by_backlog() {
        let r = plan_ranges(&[0, 10, 5], &[100, 10, 305], Some(40));
        let got: Vec<(usize, i64, i64, u64)> = r
            .iter()
            .map(|(o, q)| (o.partition, o.start, o.end, *q))
            .collect();
        assert_eq!(got, [(0, 0, 100, 10), (2, 5, 305, 30)]);
        let r = plan_ranges(&[0], &[5], Some(40));
        assert_eq!(r[0].1, u64::MAX);
        assert!(plan_ranges(&[5], &[5], None).is_empty());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("fast").is_err());
    }
}
