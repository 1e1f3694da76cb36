//! Building the dataflow from DataFusion's optimized physical plan (design.md, "Data
//! flow"): every GROUP BY, top-N and join of two streams becomes a stage — the
//! fragments below it (one per input: a join has two), run by DataFusion each batch,
//! and a stateful operator — and the plan above the topmost one reads what that
//! operator emits.
//!
//! ```text
//!  top fragment ◄── leaf ◄── operator 2 ◄── fragment 2 ◄── leaf ◄── operator 1 ◄── fragment 1 ◄── sources
//! ```
//! Whether an edge can retract is decided here: an aggregate that feeds another
//! operator emits its changes (`-old, +new`, with the weight column) unless it is a
//! window closed by a watermark (final rows). The fragment above such an edge carries
//! the weight column through its filters and projections; an aggregate over it takes
//! rows back ([`crate::operator::updating`]).

use std::sync::Arc;

use datafusion::common::tree_node::TreeNode;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};

use super::input::{BatchInputExec, InputSlot};
use super::plan::{EventColumn, EventTime, OutputMode, Windowing};
use super::watermark::{WatermarkExec, WatermarkTracker};
use super::window::WindowKind;
use crate::operator::join::interval::Interval;
use crate::operator::join::JoinSpec;
use crate::operator::rank::{RankFunction, RankSpec};
use crate::operator::updating::UpdatingSpec;
use crate::operator::{Emit, CHANGE};
use crate::state::window::WindowSpec;
use crate::state::AggregateSpec;

fn plan_err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(msg.into())
}

/// The operator of a stage, as planned.
#[derive(Clone)]
pub enum OperatorPlan {
    /// GROUP BY over an append-only input: stage 1 computes partial aggregates.
    Aggregate {
        /// Keys, aggregates and schemas.
        spec: AggregateSpec,
        /// The event-time window among the keys, if any.
        window: Option<Windowing>,
    },
    /// GROUP BY over an updating input: rows are added and taken back.
    Updating {
        /// Keys, aggregates and schemas.
        spec: UpdatingSpec,
    },
    /// Top-N per key.
    Rank {
        /// The numbering, keys, order and N.
        spec: RankSpec,
    },
    /// A join of two streams: inputs are the left and the right side.
    Join {
        /// Join type, keys, condition and schemas.
        spec: JoinSpec,
    },
}

impl OperatorPlan {
    /// What the operator is, as progress and explain name it.
    pub fn name(&self) -> &'static str {
        match self {
            OperatorPlan::Aggregate { window: None, .. } => "aggregate",
            OperatorPlan::Aggregate {
                window: Some(_), ..
            } => "window aggregate",
            OperatorPlan::Updating { .. } => "aggregate over changes",
            OperatorPlan::Rank { .. } => "top-N",
            OperatorPlan::Join { .. } => "join",
        }
    }
}

/// The fragments and the operator they feed.
pub struct StagePlan {
    /// The fragments whose rows the operator takes each batch, one per operator input
    /// (for an aggregate over an append-only input: down from DataFusion's Partial
    /// aggregate).
    pub inputs: Vec<Arc<dyn ExecutionPlan>>,
    /// The operator.
    pub operator: OperatorPlan,
    /// What it emits.
    pub emit: Emit,
    /// Where the fragment above reads what it emits.
    pub output: Arc<InputSlot>,
    /// Columns (and struct fields) of its output that are event times: every row it
    /// emits after a batch is later than its watermark then (a closed window's end).
    /// Joins above prune by them.
    pub times: Vec<(usize, Option<String>)>,
}

/// The planned dataflow: stages in the order they run, then the top fragment.
pub struct Flow {
    /// Each stateful operator with the fragment below it, inputs first.
    pub stages: Vec<StagePlan>,
    /// The plan above the last operator (the whole query when it has none).
    pub top: Arc<dyn ExecutionPlan>,
}

impl Flow {
    /// Every fragment in the order they run (each stage's inputs, then the top), with
    /// its index: how progress, analysis and explain number them.
    pub fn fragments(&self) -> impl Iterator<Item = &Arc<dyn ExecutionPlan>> {
        self.stages
            .iter()
            .flat_map(|s| s.inputs.iter())
            .chain([&self.top])
    }

    /// The index of stage `stage`'s first input fragment.
    pub fn first_fragment(&self, stage: usize) -> usize {
        self.stages[..stage.min(self.stages.len())]
            .iter()
            .map(|s| s.inputs.len())
            .sum()
    }
}

/// Cuts `physical` into stages. `mode` is the requested output mode (default: append
/// for a window closed by a watermark, complete for other aggregates).
pub fn build(
    physical: Arc<dyn ExecutionPlan>,
    mode: Option<OutputMode>,
    (event_time, event_columns): (&EventTime, &[EventColumn]),
    partitions: usize,
) -> Result<(Flow, OutputMode)> {
    let root = root_stateful(&physical)?;
    let root_window = match root.downcast_ref::<AggregateExec>() {
        Some(_) => window_of(as_aggregate(&partial_below(&root)?)?)?,
        None => None,
    };
    let root_is_join = super::plan::JOINS.contains(&root.name());
    let mode_defaulted = mode.is_none();
    let mode = mode.unwrap_or(match (&root_window, event_time.delay_ms) {
        _ if root_is_join => OutputMode::Append,
        (Some(_), Some(_)) => OutputMode::Append,
        _ => OutputMode::Complete,
    });
    let mut cutter = Cutter {
        root,
        mode,
        mode_defaulted,
        event_time,
        event_columns,
        partitions,
        stages: Vec::new(),
        ranks: Vec::new(),
    };
    let (top, _) = cutter.cut(physical)?;
    let mode = cutter.mode;
    if mode == OutputMode::Update && super::plan::has_node(&top, super::plan::SORT_OR_LIMIT)? {
        return Err(plan_err(
            "ORDER BY and LIMIT need complete output mode; use --output-mode complete",
        ));
    }
    Ok((
        Flow {
            stages: cutter.stages,
            top,
        },
        mode,
    ))
}

/// Whether `node` becomes a stateful operator: a (Final) aggregate, a filter of a
/// rank over a window (a top-N), or a join (lookup joins with static tables are
/// planned before: any join left joins two streams).
fn is_stateful(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.downcast_ref::<AggregateExec>().is_some()
        || rank_pattern(node).is_some()
        || super::plan::JOINS.contains(&node.name())
}

/// Whether `plan` holds a stateful operator.
pub fn has_stateful(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    plan.exists(|n| Ok(is_stateful(n)))
}

/// The topmost stateful node: the operator whose output the sink's rows come from.
fn root_stateful(plan: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let mut node = Arc::clone(plan);
    loop {
        if is_stateful(&node) {
            return Ok(node);
        }
        let with_state: Vec<_> = node
            .children()
            .into_iter()
            .filter(|c| has_stateful(c).unwrap_or(false))
            .cloned()
            .collect();
        match with_state.as_slice() {
            [one] => node = Arc::clone(one),
            [] => return Err(plan_err("internal: no stateful operator in a stateful plan")),
            _ => {
                return Err(plan_err(
                    "several stateful operators side by side under one UNION (of GROUP BY results, joins or top-Ns) are not supported yet",
                ))
            }
        }
    }
}

/// The Partial aggregate under a Final one (through repartitioning and coalescing).
fn partial_below(node: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let mut at = node
        .children()
        .into_iter()
        .next()
        .cloned()
        .ok_or_else(|| plan_err("internal: aggregate without input"))?;
    loop {
        if let Some(a) = at.downcast_ref::<AggregateExec>() {
            if a.mode() == &AggregateMode::Partial {
                return Ok(at);
            }
            return Err(plan_err("internal: final aggregate over a final aggregate"));
        }
        let next = match at.children().as_slice() {
            [one] => Arc::clone(one),
            _ => {
                return Err(plan_err(
                    "this aggregation cannot be split into partial and final steps",
                ))
            }
        };
        at = next;
    }
}

fn as_aggregate(node: &Arc<dyn ExecutionPlan>) -> Result<&AggregateExec> {
    node.downcast_ref::<AggregateExec>()
        .ok_or_else(|| plan_err("internal: not an aggregate"))
}

/// The event-time window among an aggregate's keys, with its time column.
fn window_of(
    agg: &AggregateExec,
) -> Result<Option<(WindowSpec, Arc<dyn datafusion::physical_expr::PhysicalExpr>)>> {
    let mut window = None;
    for (i, (e, _)) in agg.group_expr().expr().iter().enumerate() {
        if let Some(found) = WindowKind::from_expr(e) {
            if window.is_some() {
                return Err(plan_err("more than one window in GROUP BY"));
            }
            let (kind, ts) = found?;
            window = Some((WindowSpec { kind, key_index: i }, ts));
        }
    }
    Ok(window)
}

struct Cutter<'a> {
    root: Arc<dyn ExecutionPlan>,
    mode: OutputMode,
    /// No mode was asked for: a join whose rows can be taken back switches the default
    /// (append) to changelog.
    mode_defaulted: bool,
    event_time: &'a EventTime,
    /// Source columns that are event times (interval joins bound them).
    event_columns: &'a [EventColumn],
    partitions: usize,
    stages: Vec<StagePlan>,
    /// Top-N filters seen on the way down, until their window node is reached (with
    /// whether the filter is the root).
    ranks: Vec<(RankMatch, bool)>,
}

impl Cutter<'_> {
    /// `node` with every aggregate below it replaced by a leaf that reads its operator's
    /// output; true when its rows carry weights.
    fn cut(&mut self, node: Arc<dyn ExecutionPlan>) -> Result<(Arc<dyn ExecutionPlan>, bool)> {
        if node.downcast_ref::<AggregateExec>().is_some() {
            return self.stage(node);
        }
        if super::plan::JOINS.contains(&node.name()) {
            return self.join_stage(node);
        }
        if let Some(m) = rank_pattern(&node) {
            // The window below becomes the operator; this filter stays above it.
            let root = Arc::ptr_eq(&node, &self.root);
            self.ranks.push((m, root));
        }
        if let Some(i) = self
            .ranks
            .iter()
            .position(|(m, _)| Arc::ptr_eq(&m.window, &node))
        {
            let (m, root) = self.ranks.remove(i);
            return self.rank_stage(m, root);
        }
        if WINDOWS.contains(&node.name()) {
            return Err(plan_err(
                "window functions (OVER) run on streams as a top-N only: \
                 SELECT … FROM (SELECT …, row_number() OVER (PARTITION BY k ORDER BY t) AS rn FROM …) WHERE rn <= N \
                 (also rank() and dense_rank())",
            ));
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok((node, false));
        }
        let mut cut = Vec::with_capacity(children.len());
        let mut updating = Vec::with_capacity(children.len());
        for c in &children {
            let (c, u) = self.cut(Arc::clone(c))?;
            cut.push(c);
            updating.push(u);
        }
        if cut.iter().zip(&children).all(|(a, b)| Arc::ptr_eq(a, b)) {
            return Ok((node, false));
        }
        if !updating.iter().any(|u| *u) {
            let opts = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
            return Ok((node.replace_children(cut, opts)?, false));
        }
        if !updating.iter().all(|u| *u) {
            return Err(plan_err(format!(
                "{} over both an updating input (the changing result of a GROUP BY) and an append-only one is not supported yet",
                node.name()
            )));
        }
        Ok((carry_weight(node, cut)?, true))
    }

    /// A join of two streams' stage; returns the leaf that reads its output.
    fn join_stage(
        &mut self,
        node: Arc<dyn ExecutionPlan>,
    ) -> Result<(Arc<dyn ExecutionPlan>, bool)> {
        let Some(join) = crate::join::planned_join(&node)? else {
            return Err(plan_err(format!(
                "{} between two streams is not supported; join them ON an equality of columns",
                node.name()
            )));
        };
        if join.null_aware {
            return Err(plan_err(
                "NOT IN over a stream is not supported (a null on the other side would empty the result); \
                 write NOT EXISTS (SELECT … WHERE a.k = b.k)",
            ));
        }
        let is_root = Arc::ptr_eq(&node, &self.root);
        // Each side's partitions are collected in order (a coalesce or repartition on
        // top would interleave them as they arrive: the output would not be repeatable).
        let (left, left_updating) = self.cut(without_exchange(Arc::clone(&join.left)))?;
        let (right, right_updating) = self.cut(without_exchange(Arc::clone(&join.right)))?;
        let without_change = |plan: &Arc<dyn ExecutionPlan>, updating: bool| {
            let schema = plan.schema();
            match updating {
                true => project(&schema, schema.fields().len() - 1),
                false => Ok(schema),
            }
        };
        let spec = JoinSpec {
            join_type: join.join_type,
            on: join.on,
            filter: join.filter,
            projection: join.projection,
            null_equality: join.null_equality,
            schemas: [
                without_change(&left, left_updating)?,
                without_change(&right, right_updating)?,
            ],
            updating: [left_updating, right_updating],
            output_schema: node.schema(),
            interval: None,
        };
        let times = [self.event_times(&left), self.event_times(&right)];
        let spec = JoinSpec {
            interval: Interval::of(&spec.on, spec.filter.as_ref(), &times),
            ..spec
        };
        spec.check()?;
        let changes = spec.emits_changes();
        if is_root {
            if changes && self.mode_defaulted {
                self.mode = OutputMode::Changelog;
            }
            match (self.mode, changes) {
                (OutputMode::Complete, _) => {
                    return Err(plan_err(
                        "complete output mode cannot carry a join of two streams (it would re-emit the whole joined result every batch); \
                         use --output-mode append or changelog, or aggregate the join",
                    ))
                }
                (OutputMode::Append | OutputMode::Update, true) => {
                    return Err(plan_err(format!(
                        "{} output mode cannot carry this join: its rows can be taken back (an outer join's null-padded rows, \
                         or an updating input); use --output-mode changelog",
                        self.mode
                    )))
                }
                _ => {}
            }
        }
        let emit = match changes {
            true => Emit::Changes,
            false => Emit::Closed,
        };
        let slot = Arc::new(InputSlot::default());
        self.stages.push(StagePlan {
            inputs: vec![left, right],
            operator: OperatorPlan::Join { spec },
            emit,
            output: Arc::clone(&slot),
            times: Vec::new(),
        });
        let schema = match changes {
            true => crate::operator::with_change(&node.schema()),
            false => node.schema(),
        };
        let leaf: Arc<dyn ExecutionPlan> = Arc::new(BatchInputExec::new(slot, schema, 1));
        Ok((leaf, changes))
    }

    /// The columns of `side`'s rows that are event times: a source's event time, or
    /// an event time of a stage's output (the end of a closed window).
    fn event_times(&self, side: &Arc<dyn ExecutionPlan>) -> Vec<usize> {
        let window_ends = self.stages.iter().flat_map(|s| {
            s.times
                .iter()
                .map(move |(column, field)| (&s.output, *column, field.clone()))
        });
        let columns: Vec<(&Arc<InputSlot>, usize, Option<String>)> = self
            .event_columns
            .iter()
            .map(|e| (&e.slot, e.column, None))
            .chain(window_ends)
            .collect();
        (0..side.schema().fields().len())
            .filter(|c| {
                let name = side.schema().field(*c).name().clone();
                let col: Arc<dyn datafusion::physical_expr::PhysicalExpr> =
                    Arc::new(Column::new(&name, *c));
                columns.iter().any(|(slot, column, field)| {
                    super::lineage::source_of(&col, side, slot)
                        .is_some_and(|s| s.column == *column && s.field == *field)
                })
            })
            .collect()
    }

    /// A top-N's stage; returns its filter over the leaf that reads the operator's output.
    fn rank_stage(
        &mut self,
        m: RankMatch,
        is_root: bool,
    ) -> Result<(Arc<dyn ExecutionPlan>, bool)> {
        use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
        let below = below_window(&m.window)?;
        let (below_cut, updating) = self.cut(Arc::clone(&below))?;
        let expr = match (
            m.window.downcast_ref::<BoundedWindowAggExec>(),
            m.window.downcast_ref::<WindowAggExec>(),
        ) {
            (Some(w), _) => Arc::clone(&w.window_expr()[0]),
            (_, Some(w)) => Arc::clone(&w.window_expr()[0]),
            _ => return Err(plan_err("internal: top-N without its window")),
        };
        let emit = match (is_root, self.mode) {
            (true, OutputMode::Complete) => Emit::All,
            (true, OutputMode::Append) => {
                return Err(plan_err(
                    "append output mode cannot carry a top-N (a better row later replaces a ranked one); \
                     use --output-mode changelog, update or complete",
                ))
            }
            _ => Emit::Changes,
        };
        let spec = RankSpec {
            function: m.function,
            partition_by: expr.partition_by().to_vec(),
            order_by: expr.order_by().to_vec(),
            limit: m.limit,
            input_schema: below.schema(),
            output_schema: m.window.schema(),
            updating,
        };
        let slot = Arc::new(InputSlot::default());
        self.stages.push(StagePlan {
            inputs: vec![below_cut],
            operator: OperatorPlan::Rank { spec },
            emit,
            output: Arc::clone(&slot),
            times: Vec::new(),
        });
        let changes = emit == Emit::Changes;
        let schema = match changes {
            true => crate::operator::with_change(&m.window.schema()),
            false => m.window.schema(),
        };
        let leaf: Arc<dyn ExecutionPlan> = Arc::new(BatchInputExec::new(slot, schema, 1));
        Ok((leaf, changes))
    }

    /// An aggregate's stage; returns the leaf that reads its output.
    fn stage(&mut self, node: Arc<dyn ExecutionPlan>) -> Result<(Arc<dyn ExecutionPlan>, bool)> {
        let is_root = Arc::ptr_eq(&node, &self.root);
        let partial_node = partial_below(&node)?;
        let agg = as_aggregate(&partial_node)?;
        if !agg.group_expr().is_single() {
            return Err(plan_err(
                "GROUP BY GROUPING SETS, ROLLUP and CUBE are not supported on streams",
            ));
        }
        let below = Arc::clone(agg.input());
        if super::plan::has_node(&below, super::plan::SORT_OR_LIMIT)? {
            return Err(plan_err(
                "ORDER BY or LIMIT below an aggregation is not supported on streams",
            ));
        }
        let (below_cut, updating) = self.cut(Arc::clone(&below))?;
        let window = window_of(agg)?;
        let slot = Arc::new(InputSlot::default());
        let (stage, emits_changes) = if updating {
            if window.is_some() {
                return Err(plan_err(
                    "a windowed aggregate over an updating input (the changing result of a GROUP BY) is not supported",
                ));
            }
            let emit = match (is_root, self.mode) {
                (false, _) => Emit::Changes,
                (true, OutputMode::Complete) => Emit::All,
                (true, OutputMode::Update | OutputMode::Changelog) => Emit::Changes,
                (true, OutputMode::Append) => {
                    return Err(plan_err(
                        "append output mode cannot carry an aggregate over another aggregate's result (its rows change and go away); \
                         use --output-mode changelog, update or complete",
                    ))
                }
            };
            let key_schema = project(&node.schema(), agg.group_expr().expr().len())?;
            let spec = UpdatingSpec {
                group_exprs: agg
                    .group_expr()
                    .expr()
                    .iter()
                    .map(|(e, _)| Arc::clone(e))
                    .collect(),
                key_schema,
                aggregates: agg
                    .aggr_expr()
                    .iter()
                    .cloned()
                    .zip(agg.filter_expr().iter().cloned())
                    .collect(),
                input_schema: below.schema(),
                output_schema: node.schema(),
            };
            spec.check()?;
            let stage = StagePlan {
                inputs: vec![below_cut],
                operator: OperatorPlan::Updating { spec },
                emit,
                output: Arc::clone(&slot),
                times: Vec::new(),
            };
            (stage, emit == Emit::Changes)
        } else {
            let below_changed = !Arc::ptr_eq(&below_cut, &below);
            let per_window = window.is_none() && self.groups_by_window_below(agg, &below_cut);
            let times = match per_window {
                true => self.window_end_keys(agg, &below_cut),
                false => Vec::new(),
            };
            let parts = AppendParts {
                node: &node,
                partial: &partial_node,
                below: below_changed.then_some(below_cut),
                per_window,
            };
            let (mut stage, changes) = self.append_stage(parts, window, is_root, &slot)?;
            if per_window {
                stage.times = times;
            }
            (stage, changes)
        };
        let _ = self.partitions;
        self.stages.push(stage);
        let schema = match emits_changes {
            true => crate::operator::with_change(&node.schema()),
            false => node.schema(),
        };
        let leaf: Arc<dyn ExecutionPlan> = Arc::new(BatchInputExec::new(slot, schema, 1));
        Ok((leaf, emits_changes))
    }

    /// Whether the Partial aggregate `agg` groups by the window (the column, or its
    /// start or end) of a windowed aggregate below that emits closed windows, reading
    /// it through `below` (the fragment over that operator's output).
    fn groups_by_window_below(&self, agg: &AggregateExec, below: &Arc<dyn ExecutionPlan>) -> bool {
        let closed = self
            .stages
            .iter()
            .filter_map(|s| match (&s.operator, s.emit) {
                (
                    OperatorPlan::Aggregate {
                        window: Some(w), ..
                    },
                    Emit::Closed,
                ) => Some((&s.output, w.spec.key_index)),
                _ => None,
            });
        for (slot, window_column) in closed {
            let by_window = agg.group_expr().expr().iter().any(|(e, _)| {
                super::lineage::source_of(e, below, slot).is_some_and(|s| {
                    s.column == window_column
                        && matches!(s.field.as_deref(), None | Some("start") | Some("end"))
                })
            });
            if by_window {
                return true;
            }
        }
        false
    }

    /// The group keys of `agg` that are an event time of a stage below (a window's
    /// end): in its output they are event times too, as its groups are final when
    /// their window arrives.
    fn window_end_keys(
        &self,
        agg: &AggregateExec,
        below: &Arc<dyn ExecutionPlan>,
    ) -> Vec<(usize, Option<String>)> {
        let keys = agg.group_expr().expr().iter().enumerate();
        keys.filter(|(_, (e, _))| {
            self.stages.iter().any(|st| {
                super::lineage::source_of(e, below, &st.output)
                    .is_some_and(|s| st.times.contains(&(s.column, s.field)))
            })
        })
        .map(|(g, _)| (g, None))
        .collect()
    }

    /// An aggregate over an append-only input: stage 1 is the Partial aggregate over
    /// the fragment below; a window gets its watermark step.
    fn append_stage(
        &self,
        parts: AppendParts,
        window: Option<(WindowSpec, Arc<dyn datafusion::physical_expr::PhysicalExpr>)>,
        is_root: bool,
        slot: &Arc<InputSlot>,
    ) -> Result<(StagePlan, bool)> {
        let mode = self.mode;
        let (node, agg) = (parts.node, as_aggregate(parts.partial)?);
        let tracker = match (&window, self.event_time.delay_ms) {
            (Some(_), Some(_)) if self.event_time.processing => {
                Some(Arc::new(WatermarkTracker::processing_time()))
            }
            (Some(_), Some(d)) => Some(Arc::new(WatermarkTracker::new(d))),
            _ => None,
        };
        let below = match (&window, &tracker) {
            (Some((_, ts)), Some(t)) => {
                let below = parts.below.unwrap_or_else(|| Arc::clone(agg.input()));
                let step: Arc<dyn ExecutionPlan> =
                    Arc::new(WatermarkExec::new(below, Arc::clone(ts), Arc::clone(t)));
                Some(step)
            }
            _ => parts.below,
        };
        let partial = match below {
            Some(b) => Arc::clone(parts.partial).replace_children(
                vec![b],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?,
            None => Arc::clone(parts.partial),
        };
        let emit = match (is_root, &window, mode) {
            (false, Some(_), _) if tracker.is_some() => Emit::Closed,
            (false, Some(_), _) => {
                return Err(plan_err(
                    "a windowed aggregate below another aggregation needs a watermark (watermark_delay on the source) so its windows close",
                ))
            }
            // Groups of whole windows from below: final when their batch ends.
            (_, None, OutputMode::Complete) if parts.per_window && is_root => Emit::All,
            (_, None, _) if parts.per_window => Emit::Closed,
            (false, None, _) => Emit::Changes,
            (true, _, OutputMode::Complete) => Emit::All,
            (true, _, OutputMode::Update) => Emit::Upserts,
            (true, _, OutputMode::Append) => Emit::Closed,
            (true, None, OutputMode::Changelog) => Emit::Changes,
            (true, Some(_), OutputMode::Changelog) if tracker.is_some() => Emit::Closed,
            (true, Some(_), OutputMode::Changelog) => {
                return Err(plan_err(
                    "changelog output of a windowed aggregate needs a watermark (windows are emitted once, closed); \
                     add watermark_delay to the source's WITH (…), or use --output-mode update or complete",
                ))
            }
        };
        if is_root && !parts.per_window {
            check_root_mode(mode, window.as_ref().map(|(w, _)| w), tracker.is_some())?;
        }
        let partial_schema = partial.schema();
        let keys = agg.group_expr().expr().len();
        let aggregates = agg.aggr_expr().to_vec();
        let state_widths = aggregates
            .iter()
            .map(|a| a.state_fields().map(|f| f.len()))
            .collect::<Result<Vec<_>>>()?;
        let spec = AggregateSpec {
            key_schema: project(&partial_schema, keys)?,
            aggregates,
            state_widths,
            output_schema: node.schema(),
            partial_schema,
        };
        let times = match (&window, &tracker, emit) {
            (Some((w, _)), Some(_), Emit::Closed) => vec![(w.key_index, Some("end".into()))],
            _ => Vec::new(),
        };
        let window = window.map(|(spec, _)| Windowing { spec, tracker });
        let stage = StagePlan {
            inputs: vec![partial],
            operator: OperatorPlan::Aggregate { spec, window },
            emit,
            output: Arc::clone(slot),
            times,
        };
        Ok((stage, emit == Emit::Changes))
    }
}

const WINDOWS: &[&str] = &["WindowAggExec", "BoundedWindowAggExec"];

/// A top-N found in the plan: the window node under the filter, and what it ranks.
pub struct RankMatch {
    window: Arc<dyn ExecutionPlan>,
    function: RankFunction,
    limit: u64,
}

/// `Filter(rn <= N | rn < N | rn = 1)` over a window node computing one
/// `row_number()` / `rank()` / `dense_rank()` as `rn`.
fn rank_pattern(node: &Arc<dyn ExecutionPlan>) -> Option<RankMatch> {
    use datafusion::logical_expr::Operator as Op;
    use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
    use datafusion::physical_expr::window::StandardWindowExpr;
    use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec, WindowUDFExpr};
    let filter = node.downcast_ref::<FilterExec>()?;
    // The rank column may reach the filter through a projection.
    let (window, projection) = match filter.input().downcast_ref::<ProjectionExec>() {
        Some(p) => (Arc::clone(p.input()), Some(p)),
        None => (Arc::clone(filter.input()), None),
    };
    let exprs = match (
        window.downcast_ref::<BoundedWindowAggExec>(),
        window.downcast_ref::<WindowAggExec>(),
    ) {
        (Some(w), _) => w.window_expr(),
        (_, Some(w)) => w.window_expr(),
        _ => return None,
    };
    let [expr] = exprs else { return None };
    let udf = expr
        .as_any()
        .downcast_ref::<StandardWindowExpr>()?
        .get_standard_func_expr()
        .as_any()
        .downcast_ref::<WindowUDFExpr>()?;
    let function = match udf.fun().name() {
        "row_number" => RankFunction::RowNumber,
        "rank" => RankFunction::Rank,
        "dense_rank" => RankFunction::DenseRank,
        _ => return None,
    };
    let in_window = window.schema().fields().len() - 1;
    let rank_at = match projection {
        None => in_window,
        Some(p) => p.expr().iter().position(|e| {
            e.expr
                .downcast_ref::<Column>()
                .is_some_and(|c| c.index() == in_window)
        })?,
    };
    let pred = filter.predicate().downcast_ref::<BinaryExpr>()?;
    let column = |e: &Arc<dyn datafusion::physical_expr::PhysicalExpr>| {
        e.downcast_ref::<Column>()
            .is_some_and(|c| c.index() == rank_at)
    };
    let number = |e: &Arc<dyn datafusion::physical_expr::PhysicalExpr>| -> Option<u64> {
        e.downcast_ref::<Literal>()?
            .value()
            .to_string()
            .parse()
            .ok()
    };
    let limit = match (pred.op(), column(pred.left()), column(pred.right())) {
        (Op::LtEq, true, _) | (Op::GtEq, _, true) => {
            number(pred.right()).or(number(pred.left()))?
        }
        (Op::Lt, true, _) | (Op::Gt, _, true) => number(pred.right())
            .or(number(pred.left()))?
            .checked_sub(1)?,
        (Op::Eq, true, _) | (Op::Eq, _, true) => {
            match number(pred.right()).or(number(pred.left()))? {
                1 => 1,
                _ => return None,
            }
        }
        _ => return None,
    };
    (limit > 0).then_some(RankMatch {
        window,
        function,
        limit,
    })
}

/// The rows a window node ranks, without the sorts DataFusion put under it for the
/// window (the operator keeps its own order; they may sit below a projection).
fn below_window(window: &Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let child = window
        .children()
        .into_iter()
        .next()
        .cloned()
        .ok_or_else(|| plan_err("internal: window without input"))?;
    without_sorts(child)
}

/// `at` with the sorts (without a fetch) of its chain of single-input nodes removed.
fn without_sorts(at: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let children = at.children();
    let [child] = children.as_slice() else {
        return Ok(at);
    };
    let child = Arc::clone(child);
    match at.name() {
        "SortExec" | "SortPreservingMergeExec" if at.fetch().is_none() => without_sorts(child),
        "RepartitionExec" | "CoalescePartitionsExec" | "CoalesceBatchesExec" => {
            without_sorts(child)
        }
        "ProjectionExec" | "FilterExec" => {
            let below = without_sorts(Arc::clone(&child))?;
            if Arc::ptr_eq(&below, &child) {
                return Ok(at);
            }
            at.replace_children(
                vec![below],
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )
        }
        _ => Ok(at),
    }
}

/// `at` without the coalescing and repartitioning nodes on top of it.
fn without_exchange(at: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    match (at.name(), at.children().as_slice()) {
        ("CoalescePartitionsExec" | "RepartitionExec" | "CoalesceBatchesExec", [child]) => {
            without_exchange(Arc::clone(child))
        }
        _ => at,
    }
}

/// An aggregate over an append-only input: the Final node, its Partial node, and the
/// fragment below when it changed (it reads another operator's output).
struct AppendParts<'a> {
    node: &'a Arc<dyn ExecutionPlan>,
    partial: &'a Arc<dyn ExecutionPlan>,
    below: Option<Arc<dyn ExecutionPlan>>,
    /// It groups by the window of a windowed aggregate below, which hands over each
    /// window whole and once: its groups are final at the end of their batch.
    per_window: bool,
}

fn project(schema: &arrow::datatypes::SchemaRef, n: usize) -> Result<arrow::datatypes::SchemaRef> {
    Ok(Arc::new(schema.project(&(0..n).collect::<Vec<_>>())?))
}

/// The output modes the topmost aggregate can honour.
fn check_root_mode(mode: OutputMode, window: Option<&WindowSpec>, watermark: bool) -> Result<()> {
    if let Some(w) = window {
        let once = matches!(mode, OutputMode::Append | OutputMode::Changelog);
        if matches!(w.kind, WindowKind::Session { .. }) && !once {
            return Err(plan_err(format!(
                "{mode} output mode is not supported for session windows; use append (each session is emitted once, when the watermark passes its end)"
            )));
        }
        if matches!(w.kind, WindowKind::Hop { .. }) && mode == OutputMode::Update {
            return Err(plan_err(
                "update output mode is not supported for hop windows yet; use append or complete",
            ));
        }
    }
    if mode == OutputMode::Append {
        match (window, watermark) {
            (None, _) => {
                return Err(plan_err(
                    "append output mode needs a windowed aggregation with a watermark (a GROUP BY without \
                     event-time windows never finishes a group); use --output-mode complete or update",
                ))
            }
            (Some(_), false) => {
                return Err(plan_err(
                    "append output mode needs a watermark to know when a window is complete; add \
                     watermark_delay = '30 seconds' to the source's WITH (…)",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// `node` over children whose rows end with the weight column, passing it through.
fn carry_weight(
    node: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let child = Arc::clone(&children[0]);
    let weight_at = child.schema().fields().len() - 1;
    if let Some(p) = node.downcast_ref::<ProjectionExec>() {
        let mut exprs: Vec<ProjectionExpr> = p.expr().to_vec();
        exprs.push(ProjectionExpr {
            expr: Arc::new(Column::new(CHANGE, weight_at)),
            alias: CHANGE.to_string(),
        });
        return Ok(Arc::new(ProjectionExec::try_new(exprs, child)?));
    }
    if let Some(f) = node.downcast_ref::<FilterExec>() {
        let projection = f.projection().as_ref().map(|p| {
            let mut p: Vec<usize> = p.to_vec();
            p.push(weight_at);
            p
        });
        let built = FilterExecBuilder::new(Arc::clone(f.predicate()), child)
            .apply_projection(projection)?
            .build()?;
        return Ok(Arc::new(built));
    }
    match node.name() {
        "CoalesceBatchesExec" | "CoalescePartitionsExec" | "RepartitionExec" | "UnionExec" => {
            node.replace_children(
                children,
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )
        }
        other => Err(plan_err(format!(
            "{other} over an updating input (the changing result of a GROUP BY) is not supported yet"
        ))),
    }
}
