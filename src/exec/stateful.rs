//! What a running query keeps between batches, and one batch's trip through it:
//! stage 1, state merge, emit per output mode, stage 2. Also what a checkpoint takes
//! from it and gives back.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::plan::{OutputMode, PlanKind, StreamPlan};
use super::watermark::{WatermarkTracker, NO_WATERMARK};
use crate::checkpoint::Commit;
use crate::metrics::BatchProgress;
use crate::state::window::WindowedState;
use crate::state::ShardedState;

/// A streaming `LIMIT n`: n rows in all, over every batch (Spark's semantics).
#[derive(Debug, Clone, Copy)]
pub struct RowLimit {
    /// Rows the query may emit in all.
    pub n: u64,
    /// Rows emitted so far (checkpointed).
    pub emitted: u64,
}

impl RowLimit {
    /// Keeps the rows of `out` that still fit under the limit.
    fn cut(&mut self, out: Vec<RecordBatch>) -> Vec<RecordBatch> {
        let mut kept = Vec::with_capacity(out.len());
        for b in out {
            let room = self.n.saturating_sub(self.emitted) as usize;
            if room == 0 {
                break;
            }
            let b = if b.num_rows() > room {
                b.slice(0, room)
            } else {
                b
            };
            self.emitted += b.num_rows() as u64;
            kept.push(b);
        }
        kept
    }
}

/// What the query keeps between batches.
pub enum StreamState {
    /// Filter/project only, with the rows a global LIMIT has let through.
    Stateless(Option<RowLimit>),
    /// GROUP BY without windows.
    Groups(ShardedState),
    /// GROUP BY with an event-time window, and its watermark.
    Windows(WindowedState, Option<Arc<WatermarkTracker>>),
}

impl StreamState {
    /// Empty state for `plan`.
    pub fn new(plan: &StreamPlan) -> anyhow::Result<Self> {
        Ok(match &plan.kind {
            PlanKind::Stateless { .. } => StreamState::Stateless(plan.limit.map(|n| RowLimit {
                n: n as u64,
                emitted: 0,
            })),
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

    /// Rows a global LIMIT has let through so far (0 without one).
    pub fn limit_emitted(&self) -> u64 {
        match self {
            StreamState::Stateless(Some(l)) => l.emitted,
            _ => 0,
        }
    }

    /// Whether a global LIMIT has emitted all its rows: the query is done.
    pub fn limit_reached(&self) -> bool {
        matches!(self, StreamState::Stateless(Some(l)) if l.emitted >= l.n)
    }

    /// Whether windows are still open.
    pub fn has_open_windows(&self) -> bool {
        matches!(self, StreamState::Windows(w, _) if w.panes() > 0)
    }

    /// Runs one batch (`input[i]`: source `i`'s batches, one list per partition):
    /// stage 1, state merge, emit per output mode, stage 2. With
    /// `close_all`, the watermark first moves past every window. Adds the phases
    /// `execute` (stage 1 and stage 2) and `stateMerge` (exchange, merge, emit) and the
    /// rows routed to each shard to `p`.
    pub async fn execute(
        &mut self,
        plan: &StreamPlan,
        input: Vec<Vec<Vec<RecordBatch>>>,
        close_all: bool,
        p: &mut BatchProgress,
    ) -> anyhow::Result<Vec<RecordBatch>> {
        let started = Instant::now();
        let (partial, upper, upper_input) = match &plan.kind {
            PlanKind::Stateless { plan: stateless } => {
                let mut out = plan.run_stateless(stateless, input).await?;
                if let StreamState::Stateless(Some(limit)) = self {
                    out = limit.cut(out);
                }
                p.phases.push(("execute", started.elapsed()));
                return Ok(out);
            }
            PlanKind::Aggregate {
                partial,
                upper,
                upper_input,
                ..
            } => (partial, upper, upper_input),
        };
        let partials = plan.run_partial(partial, input).await?;
        let stage1 = started.elapsed();
        let merge_started = Instant::now();
        let (rows, emitted) = match self {
            StreamState::Stateless(_) => anyhow::bail!("internal: aggregate without state"),
            StreamState::Groups(state) => {
                let rows = state.merge(&partials)?;
                (rows, state.emit(plan.mode == OutputMode::Update)?)
            }
            StreamState::Windows(state, tracker) => {
                if let Some(t) = tracker {
                    p.late_rows = t.take_late();
                }
                let rows = state.merge(&partials)?;
                let watermark = match tracker {
                    Some(t) if close_all => {
                        t.close_all();
                        t.watermark()
                    }
                    Some(t) => t.advance(),
                    None => NO_WATERMARK,
                };
                let emitted = match plan.mode {
                    OutputMode::Append => state.emit_closed(watermark)?,
                    OutputMode::Update => state.emit_changed(watermark)?,
                    OutputMode::Complete => state.emit_all()?,
                };
                (rows, emitted)
            }
        };
        let merge = merge_started.elapsed();
        p.shard_rows = rows;
        p.emitted_rows = emitted.iter().map(|b| b.num_rows() as u64).sum();
        let stage2_started = Instant::now();
        let out = plan.run_upper(upper, upper_input, emitted).await?;
        p.phases
            .push(("execute", stage1 + stage2_started.elapsed()));
        p.phases.push(("stateMerge", merge));
        Ok(out)
    }

    /// Fills in the state figures of `p`.
    pub fn describe(&self, p: &mut BatchProgress) {
        match self {
            StreamState::Stateless(_) => {}
            StreamState::Groups(s) => {
                p.state_groups = s.groups();
                p.state_bytes = s.size();
                p.shard_groups = s.shard_groups();
            }
            StreamState::Windows(s, tracker) => {
                p.state_groups = s.groups();
                p.shard_groups = s.shard_groups();
                p.state_bytes = s.size();
                p.open_panes = Some(s.panes());
                if let Some(t) = tracker {
                    p.watermark = Some(t.watermark());
                }
            }
        }
    }

    /// The state to checkpoint: its schema, its rows, and whether they are the whole
    /// state (`full`, or state that is always written whole: windows) or only the
    /// groups changed since the previous checkpoint.
    pub fn snapshot(
        &mut self,
        full: bool,
    ) -> anyhow::Result<Option<(SchemaRef, Vec<RecordBatch>, bool)>> {
        Ok(match self {
            StreamState::Stateless(_) => None,
            StreamState::Groups(s) if full => {
                let rows = s.snapshot()?;
                s.clear_delta();
                Some((s.spec().partial_schema.clone(), rows, true))
            }
            StreamState::Groups(s) => Some((s.spec().partial_schema.clone(), s.delta()?, false)),
            StreamState::Windows(w, _) => {
                Some((w.spec().partial_schema.clone(), w.snapshot()?, true))
            }
        })
    }

    /// Watermark, largest event time and last emitted window, for the commit.
    pub fn time(&self) -> (i64, i64, Option<i64>) {
        match self {
            StreamState::Windows(w, Some(t)) => (t.watermark(), t.max_event(), w.emitted_through()),
            StreamState::Windows(w, None) => (NO_WATERMARK, NO_WATERMARK, w.emitted_through()),
            _ => (NO_WATERMARK, NO_WATERMARK, None),
        }
    }

    /// Restores a checkpointed snapshot and the deltas after it into empty state.
    pub fn restore(
        &mut self,
        rows: &[RecordBatch],
        deltas: &[Vec<RecordBatch>],
        commit: &Commit,
    ) -> anyhow::Result<()> {
        if !deltas.is_empty() && !matches!(self, StreamState::Groups(_)) {
            anyhow::bail!(
                "internal: state deltas in the checkpoint of a query whose state is written whole"
            );
        }
        match self {
            StreamState::Stateless(limit) => {
                if let Some(l) = limit {
                    l.emitted = commit.limit_emitted;
                }
            }
            StreamState::Groups(s) => {
                s.restore(rows)?;
                for d in deltas {
                    s.restore(d)?;
                }
            }
            StreamState::Windows(w, tracker) => {
                w.restore(rows, commit.emitted_through)?;
                if let Some(t) = tracker {
                    t.restore(commit.watermark, commit.max_event);
                }
            }
        }
        Ok(())
    }
}
