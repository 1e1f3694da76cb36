//! The micro-batch loop. Once per batch, top to bottom:
//!
//! ```text
//!  plan offset ranges (or replay a logged batch) ─► fetch + decode on the source workers
//!    ─► log the exact ranges (checkpoint write-ahead) ─► request the next batch early
//!    ─► stage 1 ─► state merge ─► emit ─► stage 2 ─► sink ─► commit (state, offsets)
//!    ─► progress line
//! ```

use std::io::Write;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use super::analyze::Analysis;
use super::gather::{gather, Gathered};
use super::late::LateOutput;
use super::stateful::StreamState;
use super::{open_sink, plan_ranges, source_table, RunOptions, StreamPlan};
use crate::checkpoint::{fingerprint, Checkpoint, Commit, Metadata, OffsetLog};
use crate::error::Error;
use crate::metrics::http::Published;
use crate::metrics::status::Status;
use crate::metrics::BatchProgress;
use crate::sink::aside::DeadLetter;
use crate::sink::{Discard, Sink};
use crate::source::{self, Fetcher, OffsetRange, Source, SourceSettings};
use crate::sql::QueryFile;
use std::sync::Arc;

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
    let file_name = opts.file.display().to_string();
    let mut status = Status::new(opts.status);
    let text = std::fs::read_to_string(&opts.file)
        .map_err(|e| Error::io("cannot read the query file", &opts.file, e))?;
    let file = QueryFile::parse(&file_name, &text)?;
    let def = source_table(&file, opts)?;
    let settings = SourceSettings {
        bootstrap_servers: opts.bootstrap_servers.clone(),
        starting_offsets: opts.starting_offsets.clone(),
        target_partitions: opts.target_partitions,
    };
    let plan = StreamPlan::new(&file, &def, opts.target_partitions, opts.output_mode)
        .await
        .map_err(|e| anyhow::anyhow!("{file_name}: {}", e.strip_backtrace()))?;
    let mut source: Box<dyn Source> = source::open(&def, &settings)?;
    let mut state = StreamState::new(&plan)?;
    let mut next = source.start_offsets()?;
    let mut batch_id = 0u64;

    // Recovery: resume after the last committed batch; replay a logged one first.
    let checkpoint = match &opts.checkpoint {
        Some(loc) => Some(Checkpoint::open(loc, opts.keep_checkpoints)?),
        None => None,
    };
    let mut pending: Option<OffsetLog> = None;
    if let Some(c) = &checkpoint {
        // The query and, when there are any, the views it may use: a changed view
        // changes what the state means.
        let mut sql = file.query.to_string();
        for v in &file.views {
            sql.push_str(&format!("\nCREATE VIEW {} AS {}", v.name, v.query));
        }
        let meta = Metadata {
            version: 1,
            query: fingerprint(&[
                &sql,
                &format!("{:?}", plan.input_schema),
                &plan.mode.to_string(),
                file.insert_into.as_deref().unwrap_or(""),
            ]),
            sql,
        };
        if let Some(w) = c.check_metadata(&meta, opts.force).await? {
            status.say(progress, &format!("[sluice] warning: {w}"));
        }
        let rec = c.recover().await?;
        for w in &rec.warnings {
            status.say(progress, &format!("[sluice] warning: {w}"));
        }
        if let Some(commit) = &rec.commit {
            if commit.next_offsets.len() != next.len() {
                anyhow::bail!(
                    "checkpoint {}: it has offsets for {} partitions but the source has {}; use a new checkpoint location",
                    opts.checkpoint.as_deref().unwrap_or(""),
                    commit.next_offsets.len(),
                    next.len()
                );
            }
            state.restore(&rec.state, commit)?;
            next = commit.next_offsets.clone();
            batch_id = commit.batch_id + 1;
            status.say(
                progress,
                &format!(
                    "[sluice] resuming after committed batch {}",
                    commit.batch_id
                ),
            );
        }
        pending = rec.pending;
    }

    let targets = if opts.available_now {
        let ends = source.available_ends()?;
        if ends.contains(&i64::MAX) {
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
    let mut dead_letter = opts
        .dead_letter
        .as_ref()
        .map(DeadLetter::open)
        .transpose()?;
    let mut outputs = Outputs {
        sink: match analysis {
            Some(_) => Box::new(Discard),
            None => open_sink(
                &file,
                opts,
                plan.mode,
                plan.output_schema.clone(),
                pending.as_ref().map(|l| l.batch_id),
            )?,
        },
        checkpoint,
    };
    let mut late = match &opts.late_data {
        Some(path) => Some(LateOutput::open(path, &file, &def, &plan)?),
        None => None,
    };
    status.say(
        progress,
        &format!(
            "[sluice] {file_name}: reading {}, output mode {}{screen}",
            source.describe(),
            plan.mode
        ),
    );

    let published = match &opts.http {
        Some(spec) => {
            let board = Arc::new(Published::new(super::explain::describe(
                &file_name,
                &file,
                &def,
                &plan,
                opts.no_prefilter,
                None,
            )));
            let bound = crate::metrics::http::serve(
                crate::metrics::http::address(spec)?,
                Arc::clone(&board),
            )
            .await?;
            status.say(
                progress,
                &format!("[sluice] dashboard on http://{bound}/ (also /metrics, /progress, /plan)"),
            );
            Some(board)
        }
        None => None,
    };
    let limit = opts.max_records_per_batch;
    let max_bytes = opts.max_bytes_per_batch;
    let console = file.insert_into.is_none();
    let mut previous_start: Option<Instant> = None;
    let mut behind = crate::metrics::FallingBehind::default();
    // `--progress-json -` goes through `status` so it does not tear the live line.
    let json_to_progress = opts.progress_json.as_deref() == Some("-");
    let mut progress_json: Option<Box<dyn Write + Send>> = match opts.progress_json.as_deref() {
        None | Some("-") => None,
        Some(path) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::io("cannot open the progress file", path, e))?,
        )),
    };
    let mut requested = false;
    let mut closing_replay = false;
    loop {
        if stop() || analysis.as_ref().is_some_and(|a| a.done()) {
            break;
        }
        if state.limit_reached() {
            status.say(
                progress,
                &format!(
                    "[sluice] LIMIT {} reached: the query is done",
                    plan.limit.unwrap_or(0)
                ),
            );
            break;
        }
        let started = Instant::now();
        if !requested {
            let replay = pending.is_some();
            let ranges = match pending.take() {
                Some(log) if log.close_all => {
                    closing_replay = true;
                    break;
                }
                // A batch logged before a crash: the very same offsets, no limit.
                Some(log) => log
                    .ranges
                    .iter()
                    .map(|&(partition, start, end)| {
                        (
                            OffsetRange {
                                partition,
                                start,
                                end,
                            },
                            u64::MAX,
                        )
                    })
                    .collect(),
                None => {
                    let ends = match &targets {
                        Some(t) => t.clone(),
                        None => source.available_ends()?,
                    };
                    plan_ranges(&next, &ends, limit)
                }
            };
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
            // A replay reads its logged ranges whole: no byte bound.
            fetcher.request(&ranges, if replay { u64::MAX } else { max_bytes })?;
        }
        let fetch_started = Instant::now();
        let Some(data) = fetcher.collect(stop)? else {
            break; // stopped mid-fetch: the batch was not logged, nothing is lost
        };
        let fetch_wait = fetch_started.elapsed();
        for d in &data {
            next[d.range.partition] = d.range.end;
        }
        let ends = match &targets {
            Some(t) => t.clone(),
            None => source.available_ends()?,
        };
        if let Some(c) = &outputs.checkpoint {
            let ranges = data
                .iter()
                .map(|d| (d.range.partition, d.range.start, d.range.end))
                .collect();
            c.log_offsets(&OffsetLog {
                batch_id,
                ranges,
                close_all: false,
            })
            .await?;
        }
        // Ask for the next batch now, so it is fetched and decoded while this one runs.
        requested = false;
        if opts.trigger.is_none() && !stop() {
            let ranges = plan_ranges(&next, &ends, limit);
            if !ranges.is_empty() && !state.limit_reached() {
                fetcher.request(&ranges, max_bytes)?;
                requested = true;
            }
        }

        let Gathered {
            input,
            malformed,
            with_origin,
            progress: mut p,
        } = gather(
            batch_id,
            data,
            plan.partitions,
            fetcher.workers(),
            late.as_ref().map(|l| &l.finder),
        )?;
        p.malformed_rows = malformed.len() as u64;
        if let Some(m) = malformed.first() {
            status.say(
                progress,
                &format!(
                    "[sluice] batch {batch_id}: {} malformed record(s) skipped; first at partition {} offset {}: {}",
                    malformed.len(),
                    m.partition,
                    m.offset,
                    m.error
                ),
            );
        }
        if let Some(dl) = dead_letter.as_mut() {
            dl.write(&malformed)?;
        }
        p.phases.push(("fetch", fetch_wait));
        let watermark = state.time().0; // the watermark this batch runs with
        let output = state.execute(&plan, input, false, &mut p).await?;
        if let Some(l) = late.as_mut().filter(|_| p.late_rows > 0) {
            if let Some(w) = l
                .write(batch_id, with_origin, watermark, p.late_rows)
                .await?
            {
                status.say(progress, &w);
            }
        }
        if console && !output.is_empty() {
            status.clear(progress); // the results go to the terminal's stdout next
        }
        outputs
            .finish(batch_id, &output, &mut state, &next, &mut p)
            .await?;
        p.duration = started.elapsed();
        p.started_ms = crate::gen::wall_ms() - p.duration.as_millis() as i64;
        p.lag = next
            .iter()
            .zip(&ends)
            .map(|(n, e)| (e - n).max(0) as u64)
            .sum();
        p.since_previous = previous_start.map(|t| started.duration_since(t));
        previous_start = Some(started);
        status.batch(progress, &p);
        if let Some(a) = analysis.as_mut() {
            a.observe(&p, &plan);
        }
        if let Some(line) = behind.observe(&p) {
            status.say(progress, &line);
        }
        if progress_json.is_some() || json_to_progress || published.is_some() {
            let json = p.json(&file_name, source.describe());
            if let Some(out) = progress_json.as_mut() {
                writeln!(out, "{json}")?;
            }
            if json_to_progress {
                status.say(progress, &json);
            }
            if let Some(board) = &published {
                board.record(&p, json);
            }
        }
        batch_id += 1;
        if let Some(t) = opts.trigger {
            tokio::time::sleep(t.saturating_sub(started.elapsed())).await;
        }
    }
    let exhausted = targets.is_some() && !stop() && !analysis.as_ref().is_some_and(|a| a.done());
    if closing_replay || (opts.close_windows_at_end && exhausted && state.has_open_windows()) {
        // The input is exhausted: close every window and emit it in one last batch.
        let started = Instant::now();
        if let Some(c) = &outputs.checkpoint {
            c.log_offsets(&OffsetLog {
                batch_id,
                ranges: Vec::new(),
                close_all: true,
            })
            .await?;
        }
        let mut p = BatchProgress {
            batch_id,
            ..Default::default()
        };
        let output = state
            .execute(&plan, vec![Vec::new(); plan.partitions], true, &mut p)
            .await?;
        outputs
            .finish(batch_id, &output, &mut state, &next, &mut p)
            .await?;
        p.duration = started.elapsed();
        status.batch(progress, &p);
        if let Some(a) = analysis.as_mut() {
            a.observe(&p, &plan);
        }
        batch_id += 1;
    }
    status.say(
        progress,
        &format!("[sluice] stopped; the next batch id is {batch_id}"),
    );
    status.finish(progress);
    if let Some(a) = analysis {
        a.text =
            super::explain::describe(&file_name, &file, &def, &plan, opts.no_prefilter, Some(a));
    }
    Ok(())
}

/// Where a batch's results go once it ran: the sink and the checkpoint.
struct Outputs {
    sink: Box<dyn Sink>,
    checkpoint: Option<Checkpoint>,
}

impl Outputs {
    /// Sink, then commit, then the state figures of the progress line.
    async fn finish(
        &mut self,
        batch_id: u64,
        output: &[RecordBatch],
        state: &mut StreamState,
        next: &[i64],
        p: &mut BatchProgress,
    ) -> anyhow::Result<()> {
        p.output_rows = output.iter().map(|b| b.num_rows() as u64).sum();
        let sink_started = Instant::now();
        self.sink.write_batch(batch_id, output).await?;
        crash_point(batch_id, p.output_rows);
        p.phases.push(("sink", sink_started.elapsed()));
        let commit_started = Instant::now();
        if let Some(c) = &self.checkpoint {
            let (schema, rows) = state.snapshot()?;
            let (watermark, max_event, emitted_through) = state.time();
            let commit = Commit {
                batch_id,
                next_offsets: next.to_vec(),
                watermark,
                max_event,
                emitted_through,
                state_file: None,
                limit_emitted: state.limit_emitted(),
            };
            c.commit(commit, schema.as_ref(), &rows).await?;
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
