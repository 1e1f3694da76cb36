//! The micro-batch loop. Once per batch, top to bottom:
//!
//! ```text
//!  plan offset ranges per table (or replay a logged batch) ─► fetch + decode on each
//!    table's source workers ─► log the exact ranges (checkpoint write-ahead)
//!    ─► request the next batch early ─► stage 1 ─► state merge ─► emit ─► stage 2
//!    ─► sink ─► commit (state, offsets per table) ─► progress line
//! ```
//! [`Job::open`] does everything before the first batch (plan, sources, recovery,
//! sinks); [`Job::run_batch`] is one trip down the picture; [`Job::close_windows`] is the
//! last batch of a bounded replay.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use super::analyze::Analysis;
use super::clocks::SourceClocks;
use super::gather::{gather, Gathered};
use super::late::LateOutput;
use super::sources::Sources;
use super::stateful::StreamState;
use super::{open_sink, plan_query, RunOptions, StreamPlan};
use crate::checkpoint::{fingerprint, Checkpoint, Commit, Metadata, OffsetLog, StateWrite};
use crate::error::Error;
use crate::metrics::http::Published;
use crate::metrics::status::Status;
use crate::metrics::{BatchProgress, FallingBehind, SourceProgress};
use crate::sink::aside::DeadLetter;
use crate::sink::{Discard, Sink};
use crate::source::PartitionData;
use crate::sql::QueryFile;

/// Runs the query in `opts.file` until the source is exhausted (`--available-now`) or
/// `stop` returns true. Progress lines go to `progress`.
pub async fn run(
    opts: &RunOptions,
    progress: &mut (dyn Write + Send),
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    run_with(opts, progress, stop, None).await
}

/// [`run`], or with `analysis` (`explain --analyze`): results are discarded, each batch
/// is added to the analysis, the run stops after the analysis's batches and leaves the
/// annotated plan in `analysis.text`.
pub async fn run_with(
    opts: &RunOptions,
    progress: &mut (dyn Write + Send),
    stop: &(dyn Fn() -> bool + Sync),
    mut analysis: Option<&mut Analysis>,
) -> anyhow::Result<()> {
    let Some(mut job) = Job::open(opts, progress, stop, analysis.is_some()).await? else {
        return Ok(()); // stopped while waiting for a source (--wait-for-source)
    };
    let mut closing_replay = false;
    loop {
        if stop() || analysis.as_ref().is_some_and(|a| a.done()) {
            break;
        }
        if job.state.limit_reached() {
            let n = job.plan.limit.unwrap_or(0);
            job.say(
                progress,
                &format!("[sluice] LIMIT {n} reached: the query is done"),
            );
            break;
        }
        match job
            .run_batch(progress, stop, analysis.as_deref_mut())
            .await?
        {
            Step::Ran => {}
            Step::Idle => {
                let idle = job.opts.trigger.unwrap_or(Duration::from_millis(100));
                tokio::time::sleep(idle.min(Duration::from_millis(100))).await;
            }
            Step::Exhausted | Step::Stopped => break,
            Step::CloseAll => {
                closing_replay = true;
                break;
            }
        }
    }
    let exhausted = job.bounded && !stop() && !analysis.as_ref().is_some_and(|a| a.done());
    if closing_replay || (opts.close_windows_at_end && exhausted && job.state.has_open_windows()) {
        job.close_windows(progress, analysis.as_deref_mut()).await?;
    }
    let next = job.batch_id;
    job.say(
        progress,
        &format!("[sluice] stopped; the next batch id is {next}"),
    );
    job.status.finish(progress);
    if let Some(a) = analysis {
        a.text = super::explain::describe(
            &job.file_name,
            &job.file,
            &job.plan,
            opts.no_prefilter,
            Some(a),
        );
    }
    Ok(())
}

/// What one turn of the loop did.
enum Step {
    /// A batch ran.
    Ran,
    /// No table had new data.
    Idle,
    /// `--available-now` and everything was read.
    Exhausted,
    /// Stopped mid-fetch; the batch was abandoned before it was logged.
    Stopped,
    /// The checkpoint's pending batch is the one that closes every window.
    CloseAll,
}

/// A running query: its plan, state, sources and outputs.
struct Job<'a> {
    opts: &'a RunOptions,
    file_name: String,
    file: QueryFile,
    plan: StreamPlan,
    state: StreamState,
    sources: Sources,
    /// The id of the batch that runs next.
    batch_id: u64,
    /// A batch logged but not committed before a restart: replayed first.
    pending: Option<OffsetLog>,
    /// `--available-now`: the tables' ends are fixed.
    bounded: bool,
    /// Whether the next batch is already requested from the sources.
    requested: bool,
    /// When each static table was last loaded (for `refresh_interval`).
    loaded_at: Vec<Instant>,
    /// Several sources under a windowed aggregate: each source's event-time clock.
    clocks: Option<SourceClocks>,
    outputs: Outputs,
    late: Option<LateOutput>,
    dead_letter: Option<DeadLetter>,
    status: Status,
    reports: Reports,
}

impl<'a> Job<'a> {
    /// Parses and plans the query, opens its sources, resumes from the checkpoint,
    /// opens the sink and the side outputs, and says what it reads.
    async fn open(
        opts: &'a RunOptions,
        progress: &mut (dyn Write + Send),
        stop: &(dyn Fn() -> bool + Sync),
        analyzing: bool,
    ) -> anyhow::Result<Option<Job<'a>>> {
        let file_name = opts.file.display().to_string();
        crate::storage::set_retry_for(opts.write_retry);
        let text = std::fs::read_to_string(&opts.file)
            .map_err(|e| Error::io("cannot read the query file", &opts.file, e))?;
        let file = QueryFile::parse(&file_name, &text)?;
        let plan = plan_query(&file, &file_name, opts).await?;
        let state = StreamState::new(&plan)?;
        let mut status = Status::new(opts.status);
        let mut say = |m: &str| status.say(progress, m);
        let Some(sources) = Sources::open(&plan, opts, stop, &mut say)? else {
            return Ok(None);
        };
        let plan_statics = plan.statics.len();
        let clocks = SourceClocks::new(&plan)?;
        let checkpoint = match &opts.checkpoint {
            Some(loc) => Some(Checkpoint::open(loc, opts.keep_checkpoints)?),
            None => None,
        };
        let mut job = Job {
            opts,
            file_name,
            file,
            plan,
            state,
            sources,
            batch_id: 0,
            pending: None,
            bounded: opts.available_now,
            requested: false,
            loaded_at: vec![Instant::now(); plan_statics],
            clocks,
            outputs: Outputs {
                sink: Box::new(Discard),
                checkpoint: None,
            },
            late: None,
            dead_letter: None,
            status,
            reports: Reports::open(opts)?,
        };
        if let Some(c) = &checkpoint {
            job.resume(c, progress).await?;
        }
        job.outputs.checkpoint = checkpoint;
        if opts.available_now {
            job.sources.bound_to_now()?;
        }
        // The batch a restart replays: the sinks and the files of records kept aside must
        // not write it twice.
        let replay = job.pending.as_ref().map(|l| l.batch_id);
        if !analyzing {
            let schema = job.plan.output_schema.clone();
            let changes = crate::operator::has_change(&job.plan.flow.top.schema());
            let mode = (job.plan.mode, changes);
            job.outputs.sink = open_sink(&job.file, opts, mode, schema, replay)?;
        }
        job.dead_letter = opts
            .dead_letter
            .as_ref()
            .map(|p| DeadLetter::open(p, replay))
            .transpose()?;
        if let Some(path) = &opts.late_data {
            job.late = Some(LateOutput::open(path, &job.file, &job.plan, replay)?);
        }
        job.announce(progress).await?;
        job.say_news(progress);
        Ok(Some(job))
    }

    /// Says what the sources had to say (an outage, partitions gained).
    fn say_news(&mut self, progress: &mut (dyn Write + Send)) {
        for line in self.sources.take_news() {
            self.status.say(progress, &line);
        }
    }

    /// Checks the checkpoint was written by this query, restores the last committed
    /// batch's state and offsets, and keeps a logged-but-uncommitted batch to replay.
    async fn resume(
        &mut self,
        c: &Checkpoint,
        progress: &mut (dyn Write + Send),
    ) -> anyhow::Result<()> {
        // The query and, when there are any, the views it may use: a changed view
        // changes what the state means.
        let mut sql = self.file.query.to_string();
        for v in &self.file.views {
            sql.push_str(&format!("\nCREATE VIEW {} AS {}", v.name, v.query));
        }
        let schemas: Vec<String> = self
            .plan
            .inputs
            .iter()
            .map(|i| format!("{:?}", i.schema))
            .collect();
        let meta = Metadata {
            version: 1,
            query: fingerprint(&[
                &sql,
                &schemas.join("\n"),
                &self.plan.mode.to_string(),
                self.file.insert_into.as_deref().unwrap_or(""),
            ]),
            sql,
        };
        if let Some(w) = c.check_metadata(&meta, self.opts.force).await? {
            self.say(progress, &format!("[sluice] warning: {w}"));
        }
        let rec = c.recover().await?;
        for w in &rec.warnings {
            self.say(progress, &format!("[sluice] warning: {w}"));
        }
        if let Some(commit) = &rec.commit {
            let location = self.opts.checkpoint.as_deref().unwrap_or("");
            self.sources.resume(commit, location)?;
            if let Some(c) = self.clocks.as_mut() {
                c.restore(&commit.source_max_event);
            }
            self.state.restore(&rec.state, commit)?;
            self.batch_id = commit.batch_id + 1;
            let msg = format!(
                "[sluice] resuming after committed batch {}",
                commit.batch_id
            );
            self.say(progress, &msg);
        }
        self.pending = rec.pending;
        Ok(())
    }

    /// Says what the query reads and in which mode; starts the dashboard if asked.
    async fn announce(&mut self, progress: &mut (dyn Write + Send)) -> anyhow::Result<()> {
        let screens: Vec<String> = self
            .sources
            .list
            .iter()
            .filter_map(|s| {
                let literals = s.screen.as_ref()?;
                Some(match self.sources.list.len() {
                    1 => format!(", prefilter requires {literals:?}"),
                    _ => format!(", prefilter on {} requires {literals:?}", s.def.name),
                })
            })
            .collect();
        let line = format!(
            "[sluice] {}: reading {}, output mode {}{}",
            self.file_name,
            self.sources.describe(),
            self.plan.mode,
            screens.concat()
        );
        self.say(progress, &line);
        if let Some(spec) = &self.opts.http {
            let plan = super::explain::describe(
                &self.file_name,
                &self.file,
                &self.plan,
                self.opts.no_prefilter,
                None,
            );
            let board = Arc::new(Published::new(crate::secrets::redact(&plan).into_owned()));
            let address = crate::metrics::http::address(spec)?;
            let token = self.opts.http_token.as_deref().filter(|t| !t.is_empty());
            token.inspect(|t| crate::secrets::register(t));
            let bound = crate::metrics::http::serve(address, Arc::clone(&board), token).await?;
            let line =
                format!("[sluice] dashboard on http://{bound}/ (also /metrics, /progress, /plan)");
            self.say(progress, &line);
            self.reports.published = Some(board);
        }
        Ok(())
    }

    fn say(&mut self, progress: &mut (dyn Write + Send), message: &str) {
        self.status.say(progress, message);
    }

    /// One batch: request (unless requested early), collect, log, request the next,
    /// execute, sink, commit, report.
    async fn run_batch(
        &mut self,
        progress: &mut (dyn Write + Send),
        stop: &(dyn Fn() -> bool + Sync),
        analysis: Option<&mut Analysis>,
    ) -> anyhow::Result<Step> {
        self.refresh_statics(progress).await;
        let started = Instant::now();
        if !self.requested {
            match self.pending.take() {
                Some(log) if log.close_all => return Ok(Step::CloseAll),
                Some(log) => self.sources.request_replay(&log)?,
                None => {
                    self.sources.refresh_ends()?;
                    self.say_news(progress);
                    if !self.sources.request_next()? {
                        return Ok(match self.bounded {
                            true => Step::Exhausted,
                            false => Step::Idle,
                        });
                    }
                }
            }
        }
        let fetch_started = Instant::now();
        let Some(data) = self.sources.collect(stop)? else {
            return Ok(Step::Stopped); // not logged: nothing is lost
        };
        let fetch_wait = fetch_started.elapsed();
        self.sources.refresh_ends()?;
        self.say_news(progress);
        if let Some(c) = &self.outputs.checkpoint {
            c.log_offsets(&self.sources.log(self.batch_id, &data))
                .await?;
        }
        // Ask for the next batch now, so it is fetched and decoded while this one runs.
        self.requested = self.opts.trigger.is_none()
            && !stop()
            && !self.state.limit_reached()
            && self.sources.request_next()?;

        let mut p = BatchProgress {
            batch_id: self.batch_id,
            ..Default::default()
        };
        let (input, with_origin) = self.gather_inputs(data, &mut p, progress)?;
        let sources_watermark = self.sources_watermark(); // before this batch's rows
        if let Some(c) = self.clocks.as_mut() {
            for (i, partitions) in input.iter().enumerate() {
                c.observe(i, partitions)?;
            }
            if let Some(t) = self.plan.watermark_tracker() {
                t.set_from_sources(c.watermark());
            }
        }
        p.phases.push(("fetch", fetch_wait));
        let watermark = self.state.time().0; // the watermark this batch runs with
        let output = (self.state)
            .execute(&self.plan, input, (false, sources_watermark), &mut p)
            .await?;
        if let Some(l) = self.late.as_mut().filter(|_| p.late_rows > 0) {
            let batch_id = self.batch_id;
            let dropped = self.state.take_late_rows();
            if let Some(w) = l
                .write(batch_id, dropped, with_origin, watermark, p.late_rows)
                .await?
            {
                self.status.say(progress, &w);
            }
        }
        if self.file.insert_into.is_none() && !output.is_empty() {
            self.status.clear(progress); // the results go to the terminal's stdout next
        }
        self.finish(&output, &mut p).await?;
        p.duration = started.elapsed();
        p.started_ms = crate::gen::wall_ms() - p.duration.as_millis() as i64;
        p.lag = self.sources.lag();
        for (s, src) in p.sources.iter_mut().zip(&self.sources.list) {
            s.lag = src.lag();
        }
        self.report(progress, &mut p, started, analysis)?;
        self.batch_id += 1;
        // A backlog cut by the default bounds is read on at once; a bound the user set
        // holds per trigger interval (Spark's maxOffsetsPerTrigger).
        let user_bound =
            self.opts.max_records_per_batch.is_some() || self.opts.max_bytes_per_batch.is_some();
        let backlog = self.sources.cut_short();
        if let Some(t) = self.opts.trigger.filter(|_| user_bound || !backlog) {
            tokio::time::sleep(t.saturating_sub(started.elapsed())).await;
        }
        Ok(Step::Ran)
    }

    /// The watermark the sources' clocks allow (never decreasing), for operators that
    /// take it from the batch (interval joins).
    fn sources_watermark(&mut self) -> i64 {
        self.clocks
            .as_mut()
            .map_or(super::watermark::NO_WATERMARK, SourceClocks::advance)
    }

    /// Sinks the batch's output and commits it with every table's next offsets (and
    /// clocks).
    async fn finish(
        &mut self,
        output: &[RecordBatch],
        p: &mut BatchProgress,
    ) -> anyhow::Result<()> {
        let next = self.sources.next_offsets();
        let clocks = self.clocks.as_ref().map(SourceClocks::snapshot);
        let offsets = (next, clocks);
        self.outputs
            .finish(self.batch_id, output, &mut self.state, offsets, p)
            .await
    }

    /// Reads again the static tables whose `refresh_interval` has passed and swaps them
    /// in before this batch runs. A table that fails to load (or loads with other
    /// columns) keeps its previous rows, with a warning; it is tried again next interval.
    async fn refresh_statics(&mut self, progress: &mut (dyn Write + Send)) {
        for i in 0..self.plan.statics.len() {
            let input = &self.plan.statics[i];
            let Some(every) = input.refresh else { continue };
            if self.loaded_at[i].elapsed() < every {
                continue;
            }
            self.loaded_at[i] = Instant::now();
            let name = input.def.name.clone();
            let msg = match crate::source::static_table::load(&input.def).await {
                Ok((schema, _)) if schema.fields() != input.def.schema.fields() => format!(
                    "[sluice] warning: static table {name} now has other columns ({}); keeping its previous rows",
                    schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
                ),
                Ok((_, rows)) => match self.plan.install_static(i, rows).await {
                    Ok(n) => format!("[sluice] reloaded static table {name}: {n} rows"),
                    Err(e) => format!("[sluice] warning: static table {name} reloaded but not installed: {}", e.strip_backtrace()),
                },
                Err(e) => format!("[sluice] warning: static table {name} could not be reloaded ({e}); keeping its previous rows"),
            };
            self.say(progress, &msg);
        }
    }

    /// Each table's decoded batches, dealt over the plan's input partitions; malformed
    /// records said and set aside; the rows with their origin for the late-data file.
    fn gather_inputs(
        &mut self,
        data: Vec<Vec<PartitionData>>,
        p: &mut BatchProgress,
        progress: &mut (dyn Write + Send),
    ) -> anyhow::Result<(Vec<Vec<Vec<RecordBatch>>>, Vec<RecordBatch>)> {
        let mut inputs = Vec::with_capacity(data.len());
        let mut origins = Vec::new();
        for (src, data) in self.sources.list.iter().zip(data) {
            let mut sp = SourceProgress {
                table: src.def.name.clone(),
                description: src.describe(),
                ..Default::default()
            };
            let late = self.late.as_ref().and_then(|l| l.finder.as_ref());
            let Gathered {
                input,
                malformed,
                with_origin,
            } = gather(data, self.plan.partitions, src.workers(), late, p, &mut sp)?;
            if let Some(m) = malformed.first() {
                let table = match self.sources.list.len() {
                    1 => String::new(),
                    _ => format!(" of table {}", src.def.name),
                };
                let msg = format!(
                    "[sluice] batch {}: {} malformed record(s){table} skipped; first at partition {} offset {}: {}",
                    self.batch_id,
                    malformed.len(),
                    m.partition,
                    m.offset,
                    m.error
                );
                self.status.say(progress, &msg);
            }
            if let Some(dl) = self.dead_letter.as_mut() {
                dl.write(
                    self.batch_id,
                    &src.def.name,
                    src.def.kafka_topic(),
                    &malformed,
                )?;
            }
            p.sources.push(sp);
            inputs.push(input);
            origins.extend(with_origin);
        }
        Ok((inputs, origins))
    }

    /// The progress line, the analysis, the falling-behind warning, the JSON record.
    fn report(
        &mut self,
        progress: &mut (dyn Write + Send),
        p: &mut BatchProgress,
        started: Instant,
        analysis: Option<&mut Analysis>,
    ) -> anyhow::Result<()> {
        let r = &mut self.reports;
        p.since_previous = r.previous_start.map(|t| started.duration_since(t));
        r.previous_start = Some(started);
        self.status.batch(progress, p);
        if let Some(a) = analysis {
            a.observe(p, &self.plan);
        }
        if let Some(line) = r.behind.observe(p) {
            self.status.say(progress, &line);
        }
        if r.json_file.is_some() || r.json_to_progress || r.published.is_some() {
            let json = crate::secrets::redact(&p.json(&self.file_name)).into_owned();
            if let Some(out) = r.json_file.as_mut() {
                writeln!(out, "{json}")?;
            }
            if r.json_to_progress {
                self.status.say(progress, &json);
            }
            if let Some(board) = &r.published {
                board.record(p, json);
            }
        }
        Ok(())
    }

    /// The input is exhausted (or the checkpoint says so): close every window and emit
    /// it in one last batch.
    async fn close_windows(
        &mut self,
        progress: &mut (dyn Write + Send),
        analysis: Option<&mut Analysis>,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        if let Some(c) = &self.outputs.checkpoint {
            let log = OffsetLog {
                batch_id: self.batch_id,
                ranges: Vec::new(),
                tables: Default::default(),
                close_all: true,
            };
            c.log_offsets(&log).await?;
        }
        let mut p = BatchProgress {
            batch_id: self.batch_id,
            ..Default::default()
        };
        let empty = vec![vec![Vec::new(); self.plan.partitions]; self.plan.inputs.len()];
        let at = (true, self.sources_watermark());
        let output = self.state.execute(&self.plan, empty, at, &mut p).await?;
        self.finish(&output, &mut p).await?;
        p.duration = started.elapsed();
        self.report(progress, &mut p, started, analysis)?;
        self.batch_id += 1;
        Ok(())
    }
}

/// Where progress goes besides the status line.
struct Reports {
    /// The dashboard's figures (`--http`).
    published: Option<Arc<Published>>,
    /// `--progress-json FILE`.
    json_file: Option<Box<dyn Write + Send>>,
    /// `--progress-json -`: through the status line, so it does not tear the live line.
    json_to_progress: bool,
    behind: FallingBehind,
    previous_start: Option<Instant>,
}

impl Reports {
    fn open(opts: &RunOptions) -> anyhow::Result<Self> {
        let json_file: Option<Box<dyn Write + Send>> = match opts.progress_json.as_deref() {
            None | Some("-") => None,
            Some(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::io("cannot open the progress file", path, e))?,
            )),
        };
        Ok(Self {
            published: None,
            json_file,
            json_to_progress: opts.progress_json.as_deref() == Some("-"),
            behind: FallingBehind::default(),
            previous_start: None,
        })
    }
}

/// Where a batch's results go once it ran: the sink and the checkpoint.
struct Outputs {
    sink: Box<dyn Sink>,
    checkpoint: Option<Checkpoint>,
}

impl Outputs {
    /// Sink, then commit (with each table's next offsets and, with several sources,
    /// their clocks), then the state figures of the progress line.
    async fn finish(
        &mut self,
        batch_id: u64,
        output: &[RecordBatch],
        state: &mut StreamState,
        (next, clocks): (BTreeMap<String, Vec<i64>>, Option<BTreeMap<String, i64>>),
        p: &mut BatchProgress,
    ) -> anyhow::Result<()> {
        p.output_rows = output.iter().map(|b| b.num_rows() as u64).sum();
        let sink_started = Instant::now();
        self.sink.write_batch(batch_id, output).await?;
        crash_point(batch_id, p.output_rows);
        p.phases.push(("sink", sink_started.elapsed()));
        let commit_started = Instant::now();
        if let Some(c) = &self.checkpoint {
            let snapshots = state.snapshot(|op, rows| c.plan_write(op, rows))?;
            let (watermark, max_event, emitted_through) = state.time();
            let commit = Commit {
                batch_id,
                next_offsets: Vec::new(),
                offsets: next,
                watermark,
                max_event,
                emitted_through,
                state_file: None,
                state_deltas: Vec::new(),
                more_state: Vec::new(),
                limit_emitted: state.limit_emitted(),
                source_max_event: clocks.unwrap_or_default(),
            };
            let writes: Vec<StateWrite> = snapshots
                .iter()
                .map(|s| match s.full {
                    true => StateWrite::Full(&s.schema, &s.rows),
                    false => StateWrite::Delta(&s.schema, &s.rows, s.slice),
                })
                .collect();
            let written = c.commit(commit, &writes).await?;
            if !writes.is_empty() {
                p.checkpoint_written = Some(written);
            }
        }
        p.phases.push(("checkpoint", commit_started.elapsed()));
        state.describe(p);
        Ok(())
    }
}

/// Test hook: with `SLUICE_CRASH_AFTER_SINK=N`, the process aborts right after the sink
/// wrote the first batch with rows whose id is N or more, before the checkpoint commits
/// it: the crash window that exactly-once sinks must survive (tests/recovery.rs).
fn crash_point(batch_id: u64, rows: u64) {
    let Some(at) = std::env::var_os("SLUICE_CRASH_AFTER_SINK") else {
        return;
    };
    if rows > 0
        && at
            .to_str()
            .and_then(|a| a.parse().ok())
            .is_some_and(|a: u64| batch_id >= a)
    {
        eprintln!(
            "[sluice] SLUICE_CRASH_AFTER_SINK: aborting after the sink wrote batch {batch_id}"
        );
        std::process::abort();
    }
}
