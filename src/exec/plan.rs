//! Plan once, run many: the query is planned by DataFusion once at start-up and split
//! into the parts the micro-batch loop runs.
//!
//! ```text
//!  stateless:  BatchInputExec(N) → filter/project → sink              (append/update)
//!  aggregate:  stage 1   BatchInputExec(N) → filter/project → AggregateExec(Partial)
//!              exchange + state merge (crate::state)
//!              stage 2   BatchInputExec(1) ← emitted groups → HAVING/ORDER BY/LIMIT → sink
//! ```
//! Stage 1 and stage 2 are cut from one physical plan: the Partial aggregate subtree,
//! and the plan above the Final aggregate with the Final aggregate replaced by an input
//! leaf. DataFusion computes everything; Sluice owns batches and state.

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{FetchType, LogicalPlan, SkipType};
use datafusion::optimizer::Optimizer;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::TryStreamExt;

use super::dataflow::{Flow, OperatorPlan};
use super::input::{BatchInputExec, InputSlot, StreamTable};
use super::watermark::WatermarkTracker;
use crate::decode::prefilter::Prefilter;
use crate::join::lookup::StaticSide;
use crate::sql::{QueryFile, TableDef};
use crate::state::window::WindowSpec;

/// Spark's output modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputMode {
    /// Only new rows: stateless queries (windowed aggregates once windows exist).
    Append,
    /// The rows that changed in this batch.
    Update,
    /// The whole result, every batch (aggregates only; ORDER BY and LIMIT allowed).
    Complete,
    /// Every change with its kind in an `op` column first: `+I`, `-U`, `+U`, `-D`
    /// (Flink's changelog).
    Changelog,
}

impl std::fmt::Display for OutputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputMode::Append => "append",
            OutputMode::Update => "update",
            OutputMode::Complete => "complete",
            OutputMode::Changelog => "changelog",
        })
    }
}

/// An aggregation grouped by an event-time window.
#[derive(Clone)]
pub struct Windowing {
    /// The window key and its kind.
    pub spec: WindowSpec,
    /// The watermark, when the source declares `watermark_delay`.
    pub tracker: Option<Arc<WatermarkTracker>>,
}

/// Event-time settings a source declares in its WITH clause.
#[derive(Debug, Clone, Default)]
pub struct EventTime {
    /// `event_time = 'expr'`: a virtual column `event_time` computed from `expr`.
    pub expr: Option<String>,
    /// `watermark_delay = '30 seconds'`; 0 for processing time.
    pub delay_ms: Option<i64>,
    /// `event_time = 'proctime()'`: each row's time is the wall clock when its batch is
    /// processed, and the watermark follows the clock ([`WatermarkTracker`]).
    ///
    /// [`WatermarkTracker`]: super::watermark::WatermarkTracker
    pub processing: bool,
}

impl EventTime {
    /// Reads the event-time options of `def`.
    pub fn of(def: &TableDef) -> std::result::Result<Self, String> {
        let expr = def.options.get("event_time").cloned();
        let processing = expr.as_deref().is_some_and(super::window::is_proctime);
        let delay_ms = match def.options.get("watermark_delay") {
            Some(_) if processing => {
                return Err("does not apply to event_time = 'proctime()': processing time is never late; remove it".into())
            }
            Some(d) => Some(super::parse_duration(d)?.as_millis() as i64),
            None if processing => Some(0),
            None => None,
        };
        Ok(Self {
            expr,
            delay_ms,
            processing,
        })
    }
}

/// One source table the planned query reads.
pub struct PlanInput {
    /// The table as declared.
    pub def: TableDef,
    /// Where each batch's decoded records of this table go (one list per partition).
    pub slot: Arc<InputSlot>,
    /// The table's columns the query reads: what its decoder produces.
    pub schema: SchemaRef,
}

/// A static table the planned query joins with.
pub struct StaticInput {
    /// The table as declared (its schema: as loaded).
    pub def: TableDef,
    /// Holds the loaded rows (one partition) while the static sides that read them are
    /// built (and afterwards when a side reads several tables).
    pub slot: Arc<InputSlot>,
    /// How often it is read again, if ever.
    pub refresh: Option<std::time::Duration>,
}

/// A streaming query, planned once.
pub struct StreamPlan {
    /// The source tables the query reads, in file order (tables it never scans are
    /// left out: nothing reads them).
    pub inputs: Vec<PlanInput>,
    /// The static tables the query joins with, in file order.
    pub statics: Vec<StaticInput>,
    /// The lookup joins' static sides, built when their tables load.
    lookups: Vec<Arc<StaticSide>>,
    /// Number of input partitions (`--target-partitions`).
    pub partitions: usize,
    /// The stages (fragment + stateful operator) and the top fragment.
    pub flow: Flow,
    /// The output mode in force.
    pub mode: OutputMode,
    /// Schema of the rows sinks receive.
    pub output_schema: SchemaRef,
    /// `LIMIT n` of a query without aggregation: n rows in all, over every batch.
    pub limit: Option<usize>,
    /// How long unwindowed state lives without an update (`--state-ttl`, or the
    /// smallest `state_ttl` of the tables read); `None`: for ever.
    pub state_ttl: Option<std::time::Duration>,
    task_ctx: Arc<TaskContext>,
    /// The trees the last batch executed (each stage's fragment, then the top): each
    /// batch runs a fresh copy, and its operator metrics are read from here
    /// (`explain --analyze`).
    executed: Mutex<Vec<Option<Arc<dyn ExecutionPlan>>>>,
}

fn plan_err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(msg.into())
}

/// DataFusion session for streaming: stage 1 runs on the source's partitions as they
/// are (no round-robin repartition), partial and final aggregates stay separate (the
/// state merges partials), and rules that would split one aggregate into two or plant
/// run-time filters in a re-executed plan are off.
fn session(partitions: usize) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(16 * 1024)
        .with_information_schema(false);
    let opts = config.options_mut();
    opts.optimizer.enable_round_robin_repartition = false;
    opts.optimizer.enable_dynamic_filter_pushdown = false;
    // Joins keep the stream's partitions: the static side is collected whole (it
    // becomes a lookup join's hash table), the stream is never repartitioned for it.
    opts.optimizer.repartition_joins = false;
    let logical_rules = Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
        .collect();
    let physical_rules = PhysicalOptimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != "CombinePartialFinalAggregate")
        .collect();
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(logical_rules)
        .with_physical_optimizer_rules(physical_rules)
        .build();
    // json_get / json_get_str / `->` / `->>` over JSON held in a string column. Only
    // fails on a name clash, which the crate's own names cannot have with DataFusion's.
    if let Err(e) = datafusion_functions_json::register_all(&mut state) {
        tracing::warn!("JSON functions not registered: {e}");
    }
    let ctx = SessionContext::new_with_state(state);
    for udf in super::window::udfs() {
        ctx.register_udf(udf);
    }
    ctx
}

impl StreamPlan {
    /// Plans `file`'s query over its `sources` and `statics` (static tables, with the
    /// schema they loaded with) with `partitions` input partitions. `mode` is the
    /// requested output mode (default: complete for aggregates, append otherwise).
    /// Joins with static tables become lookup joins: load the tables with
    /// [`StreamPlan::install_static`] before the first batch.
    pub async fn new(
        file: &QueryFile,
        sources: &[TableDef],
        statics: &[TableDef],
        partitions: usize,
        mode: Option<OutputMode>,
    ) -> Result<Self> {
        let partitions = partitions.max(1);
        let ctx = session(partitions);
        let mut tables = Vec::new();
        for source in sources {
            let slot = Arc::new(InputSlot::default());
            let table = Arc::new(StreamTable::new(
                Arc::clone(&source.schema),
                Arc::clone(&slot),
                partitions,
                Some(STREAM_ROWS_ESTIMATE),
            ));
            register_source(&ctx, source, table.clone()).await?;
            tables.push((source, slot, table));
        }
        let mut static_inputs = Vec::new();
        for def in statics {
            let slot = Arc::new(InputSlot::default());
            let table = StreamTable::new(Arc::clone(&def.schema), Arc::clone(&slot), 1, Some(1));
            ctx.register_table(def.name.as_str(), Arc::new(table))?;
            static_inputs.push(StaticInput {
                def: def.clone(),
                slot,
                refresh: crate::source::static_table::refresh_interval(def)
                    .map_err(|e| plan_err(e.to_string()))?,
            });
        }
        // Views, in file order: each is planned over what was registered before it and
        // inlined wherever the query uses it (a view used twice reads the batch once).
        for view in &file.views {
            let df = ctx
                .sql(&view.query.to_string())
                .await
                .map_err(|e| plan_err(format!("view {}: {}", view.name, e.strip_backtrace())))?;
            ctx.register_table(view.name.as_str(), df.into_view())?;
        }
        let stmt = DFStatement::Statement(Box::new(SqlStatement::Query(file.query.clone())));
        let state = ctx.state();
        let logical = state.statement_to_plan(stmt).await?;
        let physical = state.create_physical_plan(&logical).await?;
        if std::env::var_os("SLUICE_SHOW_PLAN").is_some() {
            let shown = datafusion::physical_plan::displayable(physical.as_ref()).indent(true);
            eprintln!("[sluice] DataFusion's physical plan:\n{shown}");
        }
        let leaves = PlanLeaves {
            statics: &static_inputs,
        };
        let (physical, lookups) = crate::join::plan_lookups(physical, &leaves)?;
        // A table the query never scans has no projection: it is not read at all.
        let inputs: Vec<PlanInput> = tables
            .into_iter()
            .filter_map(|(def, slot, table)| {
                Some(PlanInput {
                    def: def.clone(),
                    slot,
                    schema: table.projected_schema()?,
                })
            })
            .collect();
        if inputs.is_empty() {
            return Err(plan_err(
                "the query reads no source table; select FROM a table declared WITH (connector = 'kafka' | 'generator' | 'file')",
            ));
        }
        let event_time = query_event_time(&inputs)?;
        let event_columns = event_columns(&inputs)?;
        let state_ttl = query_state_ttl(&inputs)?;
        let task_ctx = ctx.task_ctx();

        let stateful = super::dataflow::has_stateful(&physical)?;
        let mut limit = None;
        let (flow, mode) = if !stateful {
            let mode = mode.unwrap_or(OutputMode::Append);
            limit = global_limit(&logical)?;
            check_stateless(&physical, mode)?;
            let flow = Flow {
                stages: Vec::new(),
                top: physical,
            };
            (flow, mode)
        } else {
            let times = (&event_time, event_columns.as_slice());
            super::dataflow::build(physical, mode, times, partitions)?
        };
        let output_schema = crate::operator::output_schema(&flow.top.schema(), mode);
        Ok(Self {
            inputs,
            statics: static_inputs,
            lookups,
            partitions,
            flow,
            mode,
            output_schema,
            limit,
            state_ttl,
            task_ctx,
            executed: Mutex::default(),
        })
    }

    /// The raw-byte screen the stage-1 filter allows for input `i` (see
    /// `decode::prefilter`): only when the query scans that table once, right below a
    /// filter (two scans would each need their own screen, and a record may pass either).
    pub fn prefilter(&self, i: usize) -> Option<Prefilter> {
        let input = self.inputs.get(i)?;
        let types: Vec<_> = input
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let is_leaf = |node: &Arc<dyn ExecutionPlan>| {
            node.downcast_ref::<BatchInputExec>()
                .is_some_and(|b| b.reads(&input.slot))
        };
        let reads =
            |plan: &Arc<dyn ExecutionPlan>| plan.exists(|n| Ok(is_leaf(n))).unwrap_or(false);
        let mut readers = self.flow.fragments().filter(|p| reads(p));
        let plan = readers.next()?;
        if readers.next().is_some() {
            return None; // a self-join: each side's fragment would need its own screen
        }
        Prefilter::from_plan(plan, &types, &is_leaf)
    }

    /// Whether a stage is an interval join (it prunes its state by the watermark).
    pub fn has_interval_join(&self) -> bool {
        self.flow
            .stages
            .iter()
            .any(|s| matches!(&s.operator, OperatorPlan::Join { spec } if spec.interval.is_some()))
    }

    /// The watermark of the first windowed aggregate, if it has one.
    pub fn watermark_tracker(&self) -> Option<&Arc<WatermarkTracker>> {
        self.flow.stages.iter().find_map(|s| match &s.operator {
            OperatorPlan::Aggregate {
                window: Some(w), ..
            } => w.tracker.as_ref(),
            _ => None,
        })
    }

    /// Puts static table `i`'s rows in place and builds every lookup join that reads it;
    /// the batches that start afterwards see the new rows. Returns the rows loaded.
    pub async fn install_static(&self, i: usize, rows: Vec<RecordBatch>) -> Result<usize> {
        let input = self
            .statics
            .get(i)
            .ok_or_else(|| plan_err("internal: no such static table"))?;
        let n = rows.iter().map(RecordBatch::num_rows).sum();
        input.slot.set(vec![rows]);
        let name = &input.def.name;
        let mut shared = false;
        for side in self.lookups.iter().filter(|s| s.tables.contains(name)) {
            side.build(Arc::clone(&self.task_ctx)).await?;
            shared |= side.tables.len() > 1;
        }
        // The built sides hold the rows now; a side over several tables is built again
        // when one of them reloads, and needs the others' rows still in their slots.
        if !shared {
            input.slot.clear();
        }
        Ok(n)
    }

    /// Puts one batch's input in place: `inputs[i]` (one list per partition) feeds
    /// `self.inputs[i]`.
    fn set_inputs(&self, inputs: Vec<Vec<Vec<RecordBatch>>>) {
        for (input, batches) in self.inputs.iter().zip(inputs) {
            input.slot.set(batches);
        }
    }

    fn clear_inputs(&self) {
        for input in &self.inputs {
            input.slot.clear();
        }
    }

    /// Puts one batch's input in place for [`StreamPlan::run_fragment`]; `inputs[i]`
    /// (one list per partition) feeds source `i`.
    pub fn begin_batch(&self, inputs: Vec<Vec<Vec<RecordBatch>>>) {
        self.set_inputs(inputs);
    }

    /// Frees the batch's input and every operator output once the batch is over.
    pub fn end_batch(&self) {
        self.clear_inputs();
        for s in &self.flow.stages {
            s.output.clear();
        }
    }

    /// Runs fragment `index` (stage inputs in order, then the top) over what is in the
    /// slots, every output partition in parallel (a union has more than its inputs).
    pub async fn run_fragment(
        &self,
        index: usize,
        fragment: &Arc<dyn ExecutionPlan>,
    ) -> Result<Vec<RecordBatch>> {
        let plan = reset_plan_states(Arc::clone(fragment))?;
        self.keep_executed(index, &plan);
        let outputs = plan.output_partitioning().partition_count();
        if outputs == 1 {
            let stream = execute_stream(plan, Arc::clone(&self.task_ctx))?;
            return stream.try_collect().await;
        }
        let tasks: Vec<_> = (0..outputs)
            .map(|p| {
                let plan = Arc::clone(&plan);
                let ctx = Arc::clone(&self.task_ctx);
                tokio::spawn(async move {
                    let stream = plan.execute(p, ctx)?;
                    stream.try_collect::<Vec<_>>().await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            let batches = t
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
            out.extend(batches);
        }
        Ok(out)
    }

    fn keep_executed(&self, index: usize, plan: &Arc<dyn ExecutionPlan>) {
        if let Ok(mut e) = self.executed.lock() {
            if e.len() <= index {
                e.resize(index + 1, None);
            }
            e[index] = Some(Arc::clone(plan));
        }
    }

    /// The plan trees the last batch executed: each stage's input fragment, then the top.
    pub fn last_executed(&self) -> Vec<Option<Arc<dyn ExecutionPlan>>> {
        self.executed.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// Rows the planner assumes a stream's scan yields: more than any static table, so
/// joins build their hash table from the static side.
const STREAM_ROWS_ESTIMATE: usize = 1 << 40;

/// The plan's leaves: scans of static tables by their slots, every other input leaf a
/// stream's.
struct PlanLeaves<'a> {
    statics: &'a [StaticInput],
}

impl crate::join::Leaves for PlanLeaves<'_> {
    fn is_stream(&self, node: &Arc<dyn ExecutionPlan>) -> bool {
        node.downcast_ref::<BatchInputExec>().is_some() && self.static_name(node).is_none()
    }

    fn static_name(&self, node: &Arc<dyn ExecutionPlan>) -> Option<String> {
        let leaf = node.downcast_ref::<BatchInputExec>()?;
        self.statics
            .iter()
            .find(|s| leaf.reads(&s.slot))
            .map(|s| s.def.name.clone())
    }
}

/// Registers `source` as a table of `ctx`: the stream itself, or, with an `event_time`
/// option, a view over it with a virtual `event_time` column.
async fn register_source(
    ctx: &SessionContext,
    source: &TableDef,
    table: Arc<StreamTable>,
) -> Result<()> {
    let event_time = EventTime::of(source)
        .map_err(|e| plan_err(format!("table {}: watermark_delay {e}", source.name)))?;
    let Some(expr) = &event_time.expr else {
        ctx.register_table(source.name.as_str(), table)?;
        return Ok(());
    };
    let raw = format!("__sluice_raw_{}", source.name);
    ctx.register_table(raw.as_str(), table)?;
    let view = ctx
        .sql(&format!("SELECT *, {expr} AS event_time FROM \"{raw}\""))
        .await
        .map_err(|e| {
            plan_err(format!(
                "table {}: event_time = '{expr}': {}",
                source.name,
                e.strip_backtrace()
            ))
        })?;
    ctx.register_table(source.name.as_str(), view.into_view())?;
    Ok(())
}

/// The event-time settings of the windowed aggregate: the first source's that declares
/// a watermark delay. With several sources each keeps its own clock and delay
/// (`exec::clocks`); this delay then only shows in `explain`.
/// The smallest `state_ttl` among the tables the query reads.
fn query_state_ttl(inputs: &[PlanInput]) -> Result<Option<std::time::Duration>> {
    let mut ttl = None;
    for input in inputs {
        if let Some(t) = input.def.options.get("state_ttl") {
            let t = super::parse_duration(t)
                .map_err(|e| plan_err(format!("table {}: state_ttl {e}", input.def.name)))?;
            ttl = Some(ttl.map_or(t, |old: std::time::Duration| old.min(t)));
        }
    }
    Ok(ttl)
}

/// A source's column that is its event time (`event_time = 'column'` with a
/// `watermark_delay`): a join condition bounding it makes an interval join.
pub struct EventColumn {
    /// The source's input slot.
    pub slot: Arc<InputSlot>,
    /// The column, in the source's decoded rows.
    pub column: usize,
}

fn event_columns(inputs: &[PlanInput]) -> Result<Vec<EventColumn>> {
    let mut out = Vec::new();
    for input in inputs {
        let et = EventTime::of(&input.def)
            .map_err(|e| plan_err(format!("table {}: watermark_delay {e}", input.def.name)))?;
        let (Some(expr), Some(_)) = (et.expr, et.delay_ms) else {
            continue;
        };
        let name = expr.trim().trim_matches('"');
        if let Some(column) = input
            .schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
        {
            out.push(EventColumn {
                slot: Arc::clone(&input.slot),
                column,
            });
        }
    }
    Ok(out)
}

fn query_event_time(inputs: &[PlanInput]) -> Result<EventTime> {
    for input in inputs {
        let et = EventTime::of(&input.def)
            .map_err(|e| plan_err(format!("table {}: watermark_delay {e}", input.def.name)))?;
        if et.delay_ms.is_some() {
            return Ok(et);
        }
    }
    Ok(EventTime::default())
}

pub(crate) fn has_node(plan: &Arc<dyn ExecutionPlan>, names: &[&str]) -> Result<bool> {
    let mut found = false;
    plan.apply(|node| {
        found |= names.contains(&node.name());
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    Ok(found)
}

/// Joins DataFusion plans; those left after lookup joins took over join two streams.
pub(crate) const JOINS: &[&str] = &[
    "HashJoinExec",
    "NestedLoopJoinExec",
    "CrossJoinExec",
    "SortMergeJoinExec",
    "SymmetricHashJoinExec",
    "PiecewiseMergeJoinExec",
];

pub(crate) const SORT_OR_LIMIT: &[&str] = &[
    "SortExec",
    "SortPreservingMergeExec",
    "GlobalLimitExec",
    "LocalLimitExec",
];

/// The `n` of a `LIMIT n` on the outermost query (under projections only). Each batch
/// runs the plan with its limit, which bounds the batch's rows; the engine keeps the
/// first n rows over all batches (Spark's streaming LIMIT). Any other LIMIT in the
/// query, or an OFFSET, would need state across batches: refused.
fn global_limit(logical: &LogicalPlan) -> Result<Option<usize>> {
    let mut node = logical;
    let fetch = loop {
        match node {
            LogicalPlan::Projection(p) => node = p.input.as_ref(),
            LogicalPlan::SubqueryAlias(a) => node = a.input.as_ref(),
            LogicalPlan::Limit(l) => {
                if !matches!(l.get_skip_type()?, SkipType::Literal(0)) {
                    return Err(plan_err(
                        "OFFSET is not supported on streams (the rows to skip would span batches); remove it",
                    ));
                }
                let FetchType::Literal(fetch) = l.get_fetch_type()? else {
                    return Err(plan_err("LIMIT on a stream needs a constant row count"));
                };
                node = l.input.as_ref();
                break fetch;
            }
            _ => break None,
        }
    };
    if node.exists(|n| Ok(matches!(n, LogicalPlan::Limit(_))))? {
        return Err(plan_err(
            "LIMIT inside a subquery is not supported on streams; put the LIMIT on the outermost query",
        ));
    }
    Ok(fetch)
}

fn check_stateless(plan: &Arc<dyn ExecutionPlan>, mode: OutputMode) -> Result<()> {
    if mode == OutputMode::Complete {
        return Err(plan_err(
            "complete output mode needs an aggregation (GROUP BY or an aggregate function); \
             use --output-mode append for a query that only filters and projects",
        ));
    }
    if has_node(plan, &["WindowAggExec", "BoundedWindowAggExec"])? {
        return Err(plan_err(
            "window functions (OVER) run on streams as a top-N only: \
             SELECT … FROM (SELECT …, row_number() OVER (PARTITION BY k ORDER BY t) AS rn FROM …) WHERE rn <= N \
             (also rank() and dense_rank())",
        ));
    }
    if has_node(plan, &["SortExec", "SortPreservingMergeExec"])? {
        return Err(plan_err(
            "ORDER BY over a stream needs an aggregation in complete output mode; \
             remove it or aggregate the stream",
        ));
    }
    Ok(())
}
