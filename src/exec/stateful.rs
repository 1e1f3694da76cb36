//! What a running query keeps between batches — its stateful operators and a global
//! LIMIT's count — and one batch's trip through the dataflow: each stage's fragment,
//! then its operator, then the top fragment. Also what a checkpoint takes from it and
//! gives back.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;

use super::dataflow::OperatorPlan;
use super::plan::StreamPlan;
use super::watermark::NO_WATERMARK;
use crate::checkpoint::{Commit, WriteKind};
use crate::metrics::{BatchProgress, OperatorProgress};
use crate::operator::aggregate::AggregateOp;
use crate::operator::join::JoinOp;
use crate::operator::rank::RankOp;
use crate::operator::sharded::Sharded;
use crate::operator::updating::UpdatingAggregateOp;
use crate::operator::{BatchContext, Operator, Snapshot};

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
pub struct StreamState {
    /// One per stage of the plan's flow, in the same order.
    operators: Vec<Box<dyn Operator>>,
    /// What each is, for progress.
    names: Vec<&'static str>,
    /// A global LIMIT of a query without aggregation.
    limit: Option<RowLimit>,
    /// Per stage and input: the stages whose output the input reads, and whether it
    /// reads a source (whose watermark it then gets).
    feeds: Vec<Vec<(Vec<usize>, bool)>>,
    /// The late rows operators dropped in the last batch (joins keep them).
    late_rows: Vec<OperatorLateRows>,
}

/// Late rows an operator dropped from one of its inputs.
pub struct OperatorLateRows {
    /// The stage of the plan's flow (0-based).
    pub stage: usize,
    /// What the stage's operator is (`join`, as explain names it).
    pub operator: &'static str,
    /// Which of its inputs (a join's 0: left, 1: right).
    pub input: usize,
    /// The rows, as that input gave them.
    pub rows: RecordBatch,
}

impl StreamState {
    /// Empty state for `plan`.
    pub fn new(plan: &StreamPlan) -> anyhow::Result<Self> {
        let mut operators: Vec<Box<dyn Operator>> = Vec::new();
        let names = plan.flow.stages.iter().map(|s| s.operator.name()).collect();
        let ttl_ms = plan.state_ttl.map(|t| t.as_millis() as i64);
        for stage in &plan.flow.stages {
            operators.push(match &stage.operator {
                OperatorPlan::Aggregate { spec, window } => Box::new(AggregateOp::new(
                    spec,
                    window.as_ref(),
                    plan.partitions,
                    stage.emit,
                    ttl_ms,
                )?),
                OperatorPlan::Updating { spec } => Box::new(Sharded::new(plan.partitions, || {
                    UpdatingAggregateOp::new(spec, stage.emit)
                })?),
                OperatorPlan::Rank { spec } => Box::new(Sharded::new(plan.partitions, || {
                    RankOp::new(spec, stage.emit, ttl_ms)
                })?),
                OperatorPlan::Join { spec } => Box::new(Sharded::new(plan.partitions, || {
                    JoinOp::new(spec, stage.emit, ttl_ms)
                })?),
            });
        }
        Ok(Self {
            late_rows: Vec::new(),
            feeds: feeds(plan),
            operators,
            names,
            limit: plan.limit.map(|n| RowLimit {
                n: n as u64,
                emitted: 0,
            }),
        })
    }

    /// The late rows operators dropped and kept in the last batch (joins' sides).
    pub fn take_late_rows(&mut self) -> Vec<OperatorLateRows> {
        std::mem::take(&mut self.late_rows)
    }

    /// Number of stateful operators.
    pub fn operator_count(&self) -> usize {
        self.operators.len()
    }

    /// Rows a global LIMIT has let through so far (0 without one).
    pub fn limit_emitted(&self) -> u64 {
        self.limit.map_or(0, |l| l.emitted)
    }

    /// Whether a global LIMIT has emitted all its rows: the query is done.
    pub fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| l.emitted >= l.n)
    }

    /// Whether windows are still open.
    pub fn has_open_windows(&self) -> bool {
        self.operators.iter().any(|o| o.has_open_windows())
    }

    /// Runs one batch (`input[i]`: source `i`'s batches, one list per partition)
    /// through the dataflow: each stage's fragment and operator, then the top fragment.
    /// With `close_all`, the watermark first moves past every window; `watermark` is
    /// the sources' watermark the batch runs with (interval joins). Adds the phases
    /// `execute` (fragments) and `stateMerge` (operators) and the rows routed to each
    /// shard to `p`.
    pub async fn execute(
        &mut self,
        plan: &StreamPlan,
        input: Vec<Vec<Vec<RecordBatch>>>,
        (close_all, watermark): (bool, i64),
        p: &mut BatchProgress,
    ) -> anyhow::Result<Vec<RecordBatch>> {
        self.late_rows.clear();
        plan.begin_batch(input);
        let out = self.run_flow(plan, (close_all, watermark), p).await;
        plan.end_batch();
        let mut out = crate::operator::output_rows(out?, &plan.output_schema, plan.mode)?;
        if let Some(limit) = self.limit.as_mut() {
            out = limit.cut(out);
        }
        Ok(out)
    }

    async fn run_flow(
        &mut self,
        plan: &StreamPlan,
        (close_all, watermark): (bool, i64),
        p: &mut BatchProgress,
    ) -> anyhow::Result<Vec<RecordBatch>> {
        let (mut fragments, mut operators) = (Duration::ZERO, Duration::ZERO);
        let now_ms = crate::gen::wall_ms();
        // Each operator's watermark as the batch starts (windowed aggregates keep one;
        // an aggregate of whole windows has its input's).
        let mut kept: Vec<i64> = Vec::with_capacity(self.operators.len());
        for (k, (stage, op)) in plan.flow.stages.iter().zip(&self.operators).enumerate() {
            let own = op.time().0;
            let passed = match own == NO_WATERMARK && !stage.times.is_empty() {
                true => input_watermarks(&self.feeds[k], watermark, &kept)
                    .into_iter()
                    .min(),
                false => None,
            };
            kept.push(passed.unwrap_or(own));
        }
        for (i, (stage, op)) in plan.flow.stages.iter().zip(&mut self.operators).enumerate() {
            let started = Instant::now();
            let first = plan.flow.first_fragment(i);
            let mut rows = Vec::with_capacity(stage.inputs.len());
            for (j, input) in stage.inputs.iter().enumerate() {
                rows.push(plan.run_fragment(first + j, input).await?);
            }
            fragments += started.elapsed();
            let rows_in = rows.iter().flatten().map(|b| b.num_rows() as u64).sum();
            let started = Instant::now();
            let watermarks = input_watermarks(&self.feeds[i], watermark, &kept);
            let mut ctx = BatchContext::new(close_all, p, now_ms, watermarks);
            let emitted = op.process(rows, &mut ctx)?;
            let ((expired, pruned, late), late_rows) = ctx.tally();
            p.late_rows += late;
            let operator = self.names[i];
            self.late_rows
                .extend(late_rows.into_iter().map(|(input, rows)| OperatorLateRows {
                    stage: i,
                    operator,
                    input,
                    rows,
                }));
            let time = started.elapsed();
            operators += time;
            let rows_out = emitted.iter().map(|b| b.num_rows() as u64).sum();
            p.emitted_rows += rows_out;
            p.operators.push(OperatorProgress {
                operator: self.names[i].to_string(),
                rows_in,
                rows_out,
                expired,
                pruned,
                time,
                ..Default::default()
            });
            stage.output.set(vec![emitted]);
        }
        let started = Instant::now();
        let top = plan.flow.first_fragment(plan.flow.stages.len());
        let out = plan.run_fragment(top, &plan.flow.top).await?;
        fragments += started.elapsed();
        p.phases.push(("execute", fragments));
        if !self.operators.is_empty() {
            p.phases.push(("stateMerge", operators));
        }
        Ok(out)
    }

    /// Fills in the state figures of `p`.
    pub fn describe(&self, p: &mut BatchProgress) {
        for (i, op) in self.operators.iter().enumerate() {
            let mut own = BatchProgress::default();
            op.describe(&mut own);
            if let Some(o) = p.operators.get_mut(i) {
                o.state_rows = own.state_groups;
                o.state_bytes = own.state_bytes;
                o.sides = own.join_sides;
                o.matches = own.join_matches;
            }
            op.describe(p);
        }
    }

    /// Each operator's state to checkpoint, as `plan(operator, its state rows)` asks
    /// (an operator may answer whole anyway).
    pub fn snapshot(
        &mut self,
        plan: impl Fn(usize, u64) -> WriteKind,
    ) -> anyhow::Result<Vec<Snapshot>> {
        let mut out = Vec::with_capacity(self.operators.len());
        for (i, op) in self.operators.iter_mut().enumerate() {
            let kind = plan(i, op.state_rows());
            out.push(op.snapshot(kind)?);
        }
        Ok(out)
    }

    /// Watermark, largest event time and last emitted window, for the commit: the
    /// first operator's that keeps time.
    pub fn time(&self) -> (i64, i64, Option<i64>) {
        self.operators
            .iter()
            .map(|o| o.time())
            .find(|t| *t != (NO_WATERMARK, NO_WATERMARK, None))
            .unwrap_or((NO_WATERMARK, NO_WATERMARK, None))
    }

    /// Restores each operator's checkpointed snapshot and deltas into empty state.
    pub fn restore(
        &mut self,
        states: &[(Vec<RecordBatch>, Vec<Vec<RecordBatch>>)],
        commit: &Commit,
    ) -> anyhow::Result<()> {
        if let Some(l) = self.limit.as_mut() {
            l.emitted = commit.limit_emitted;
        }
        if states.len() > self.operators.len() {
            anyhow::bail!(
                "the checkpoint holds state for {} operators, this query has {}",
                states.len(),
                self.operators.len()
            );
        }
        for (op, (full, deltas)) in self.operators.iter_mut().zip(states) {
            op.restore(full, deltas, commit)?;
        }
        Ok(())
    }
}

/// Per stage and input: which stages' outputs the input's fragment reads, and whether
/// it reads any other leaf (a source).
fn feeds(plan: &StreamPlan) -> Vec<Vec<(Vec<usize>, bool)>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let stages = &plan.flow.stages;
    stages
        .iter()
        .map(|stage| {
            stage
                .inputs
                .iter()
                .map(|input| {
                    let (mut from, mut sources) = (Vec::new(), false);
                    let _ = input.apply(|node| {
                        if let Some(leaf) = node.downcast_ref::<super::input::BatchInputExec>() {
                            match stages.iter().position(|s| leaf.reads(&s.output)) {
                                Some(k) => from.push(k),
                                None => sources = true,
                            }
                        }
                        Ok(TreeNodeRecursion::Continue)
                    });
                    (from, sources)
                })
                .collect()
        })
        .collect()
}

/// A stage's inputs' watermarks (`feeds`: what each input reads): the minimum over the
/// sources' (`sources`) and the stages' below (`kept`).
fn input_watermarks(feeds: &[(Vec<usize>, bool)], sources: i64, kept: &[i64]) -> Vec<i64> {
    feeds
        .iter()
        .map(|(stages, reads_sources)| {
            let from_sources = reads_sources.then_some(sources);
            let from_stages = stages
                .iter()
                .map(|k| kept.get(*k).copied().unwrap_or(NO_WATERMARK));
            from_sources
                .into_iter()
                .chain(from_stages)
                .min()
                .unwrap_or(NO_WATERMARK)
        })
        .collect()
}
