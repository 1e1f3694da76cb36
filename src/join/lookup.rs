//! The lookup join: a stream joined with a static table whose hash table is built once,
//! when the table is loaded, and kept across batches (DataFusion's hash join would build
//! it again on every run of the re-executed plan, so per-batch cost would grow with the
//! table).
//!
//! ```text
//!  static subtree (scan of the loaded table, its filters) ─► collect ─► key rows ─► hash map
//!                                                       (built at load, swapped on reload)
//!  stream batch ─► key rows ─► probe the map ─► pairs ─► join filter ─► join type ─► projection
//! ```
//! The operator replaces a planned `HashJoinExec` / `NestedLoopJoinExec` /
//! `CrossJoinExec` whose one side reads only static tables, and keeps its join type,
//! keys, filter and projection, so it computes what DataFusion's join would.

use std::fmt;
use std::sync::{Arc, RwLock};

use arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{JoinSide, JoinType, NullEquality};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::joins::utils::{build_join_schema, ColumnIndex, JoinFilter};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    ExecutionPlanProperties, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

type PhysicalExprRef = Arc<dyn PhysicalExpr>;

/// The static side of a lookup join: the plan that reads it, its key expressions, and
/// the table built from it (shared by every copy of the operator).
pub struct StaticSide {
    /// Reads the static rows (scans of loaded static tables and the operators on them).
    plan: Arc<dyn ExecutionPlan>,
    /// Join keys over the static rows (empty for a join without equality keys).
    keys: Vec<PhysicalExprRef>,
    /// The names of the static tables it reads, for messages.
    pub tables: Vec<String>,
    built: RwLock<Option<Arc<Built>>>,
}

/// A static side's rows and the hash table over their keys.
struct Built {
    rows: RecordBatch,
    /// Key row → the first static row with that key; `next[i]` chains the others.
    heads: hashbrown::HashMap<Box<[u8]>, u32>,
    next: Vec<u32>,
    converter: Option<RowConverter>,
    /// Some static row has a NULL key (NOT IN over it is never true).
    null_key: bool,
}

const END: u32 = u32::MAX;

impl StaticSide {
    /// The static side read by `plan`, keyed by `keys`.
    pub fn new(
        plan: Arc<dyn ExecutionPlan>,
        keys: Vec<PhysicalExprRef>,
        tables: Vec<String>,
    ) -> Self {
        Self {
            plan,
            keys,
            tables,
            built: RwLock::new(None),
        }
    }

    /// Runs the static plan over the loaded tables and builds the hash table; the new
    /// table replaces the old one for the batches that start afterwards.
    pub async fn build(&self, ctx: Arc<TaskContext>) -> Result<usize> {
        let plan = reset_plan_states(Arc::clone(&self.plan))?;
        let schema = plan.schema();
        let batches = collect(plan, ctx).await?;
        let rows = concat_batches(&schema, &batches)?;
        if rows.num_rows() >= END as usize {
            return Err(DataFusionError::Plan(format!(
                "static table {} has {} rows; a lookup join holds at most {}",
                self.tables.join(", "),
                rows.num_rows(),
                END - 1
            )));
        }
        let n = rows.num_rows();
        let mut heads = hashbrown::HashMap::new();
        let mut next = vec![END; n];
        let mut null_key = false;
        let converter = if self.keys.is_empty() {
            // No equality keys: every static row is a candidate, in one chain.
            for i in (0..n).rev() {
                let head = heads.entry(Box::from(&[][..])).or_insert(END);
                next[i] = *head;
                *head = i as u32;
            }
            None
        } else {
            let columns = evaluate(&self.keys, &rows)?;
            let converter = row_converter(&columns)?;
            let keys = converter.convert_columns(&columns)?;
            let valid = all_valid(&columns, n);
            for i in (0..n).rev() {
                if !valid[i] {
                    null_key = true;
                    continue;
                }
                let key = keys.row(i);
                match heads.get_mut(key.as_ref()) {
                    Some(head) => {
                        next[i] = *head;
                        *head = i as u32;
                    }
                    None => {
                        heads.insert(Box::from(key.as_ref()), i as u32);
                    }
                }
            }
            Some(converter)
        };
        let built = Built {
            rows,
            heads,
            next,
            converter,
            null_key,
        };
        if let Ok(mut slot) = self.built.write() {
            *slot = Some(Arc::new(built));
        }
        Ok(n)
    }

    fn current(&self) -> Result<Arc<Built>> {
        self.built
            .read()
            .ok()
            .and_then(|b| b.clone())
            .ok_or_else(|| DataFusionError::Internal("static table not loaded".into()))
    }
}

fn evaluate(exprs: &[PhysicalExprRef], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

fn row_converter(columns: &[ArrayRef]) -> Result<RowConverter> {
    let fields = columns
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    Ok(RowConverter::new(fields)?)
}

/// Rows whose key columns are all non-null.
fn all_valid(columns: &[ArrayRef], n: usize) -> Vec<bool> {
    let mut valid = vec![true; n];
    for c in columns {
        if c.null_count() > 0 {
            for (i, v) in valid.iter_mut().enumerate() {
                *v &= c.is_valid(i);
            }
        }
    }
    valid
}

/// How the join treats stream rows, from the planned join type and which side is static.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Matched pairs only.
    Inner,
    /// Matched pairs, and unmatched stream rows with NULL static columns.
    KeepStream,
    /// Stream rows with a match.
    Semi,
    /// Stream rows without a match (`null_aware`: NOT IN semantics).
    Anti { null_aware: bool },
    /// Every stream row with a boolean: has it a match.
    Mark,
}

/// A stream joined with a [`StaticSide`]. Its one child is the stream side.
pub struct LookupJoinExec {
    stream: Arc<dyn ExecutionPlan>,
    side: Arc<StaticSide>,
    join_type: JoinType,
    /// What a probe of one stream batch computes.
    probe: Arc<Probe>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for LookupJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupJoinExec")
            .field("join_type", &self.join_type)
            .field("tables", &self.side.tables)
            .finish()
    }
}

/// The planned join a [`LookupJoinExec`] takes over.
pub struct PlannedJoin {
    /// Left and right inputs as planned.
    pub left: Arc<dyn ExecutionPlan>,
    pub right: Arc<dyn ExecutionPlan>,
    /// Equality keys `(left, right)`.
    pub on: Vec<(PhysicalExprRef, PhysicalExprRef)>,
    pub filter: Option<JoinFilter>,
    pub join_type: JoinType,
    pub projection: Option<Vec<usize>>,
    pub null_equality: NullEquality,
    pub null_aware: bool,
    /// The join's output schema.
    pub schema: SchemaRef,
}

impl LookupJoinExec {
    /// Takes over `join`, whose left (`static_is_left`) or right input reads only static
    /// tables (`tables`). Refuses join types that would emit static rows no stream row
    /// matched: those are only known when the stream ends.
    pub fn new(join: PlannedJoin, static_is_left: bool, tables: Vec<String>) -> Result<Self> {
        use JoinType::*;
        let kind = match (join.join_type, static_is_left) {
            (Inner, _) => Kind::Inner,
            (Left, false) | (Right, true) => Kind::KeepStream,
            (LeftSemi, false) | (RightSemi, true) => Kind::Semi,
            (LeftAnti, false) | (RightAnti, true) => Kind::Anti {
                null_aware: join.null_aware,
            },
            (LeftMark, false) | (RightMark, true) => Kind::Mark,
            (t, _) => {
                return Err(DataFusionError::Plan(format!(
                    "a {t} join that keeps rows of static table {} without a match needs the end of the stream; \
                     join the stream LEFT JOIN the static table (or INNER) instead",
                    tables.join(", ")
                )))
            }
        };
        let (unprojected, columns) =
            build_join_schema(&join.left.schema(), &join.right.schema(), &join.join_type);
        let (static_plan, stream) = match static_is_left {
            true => (join.left, join.right),
            false => (join.right, join.left),
        };
        let (static_keys, stream_keys) = join
            .on
            .into_iter()
            .map(|(l, r)| if static_is_left { (l, r) } else { (r, l) })
            .unzip();
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&join.schema)),
            stream.output_partitioning().clone(),
            stream.pipeline_behavior(),
            stream.boundedness(),
        );
        let probe = Probe {
            stream_keys,
            static_is_left,
            kind,
            filter: join.filter,
            null_equality: join.null_equality,
            columns,
            unprojected: Arc::new(unprojected),
            projection: join.projection,
            schema: join.schema,
        };
        Ok(Self {
            side: Arc::new(StaticSide::new(static_plan, static_keys, tables)),
            stream,
            join_type: join.join_type,
            probe: Arc::new(probe),
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The static side, built when its tables are loaded.
    pub fn static_side(&self) -> &Arc<StaticSide> {
        &self.side
    }
}

/// What one probe computes, shared by the stream's batches.
struct Probe {
    stream_keys: Vec<PhysicalExprRef>,
    static_is_left: bool,
    kind: Kind,
    filter: Option<JoinFilter>,
    null_equality: NullEquality,
    columns: Vec<ColumnIndex>,
    unprojected: SchemaRef,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
}

impl Probe {
    /// Whether a column of the planned join's `side` comes from the static rows.
    fn from_static(&self, side: JoinSide) -> bool {
        matches!(
            (side, self.static_is_left),
            (JoinSide::Left, true) | (JoinSide::Right, false)
        )
    }

    fn join(&self, built: &Built, batch: &RecordBatch) -> Result<RecordBatch> {
        let (stream_idx, static_idx) = self.pairs(built, batch)?;
        let (stream_idx, static_idx) = match &self.filter {
            Some(f) => self.filtered(f, built, batch, stream_idx, static_idx)?,
            None => (stream_idx, static_idx),
        };
        let n = batch.num_rows();
        let (stream_idx, static_idx, mark) = match self.kind {
            Kind::Inner => (stream_idx, static_idx, None),
            Kind::KeepStream => {
                let matched = matched(n, &stream_idx);
                let mut s: Vec<u32> = stream_idx.values().to_vec();
                let mut t: Vec<Option<u32>> =
                    static_idx.values().iter().map(|v| Some(*v)).collect();
                for (i, m) in matched.iter().enumerate() {
                    if !m {
                        s.push(i as u32);
                        t.push(None);
                    }
                }
                (UInt32Array::from(s), UInt32Array::from(t), None)
            }
            Kind::Semi | Kind::Anti { .. } | Kind::Mark => {
                let matched = matched(n, &stream_idx);
                let keep: Vec<u32> = match self.kind {
                    Kind::Semi => (0..n as u32).filter(|i| matched[*i as usize]).collect(),
                    Kind::Anti { null_aware } => {
                        self.unmatched(built, batch, &matched, null_aware)?
                    }
                    _ => (0..n as u32).collect(),
                };
                let mark = (self.kind == Kind::Mark).then(|| BooleanArray::from(matched.clone()));
                (
                    UInt32Array::from(keep),
                    UInt32Array::from(Vec::<u32>::new()),
                    mark,
                )
            }
        };
        let mut out = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let from_static = self.from_static(c.side);
            out.push(match c.side {
                JoinSide::None => match &mark {
                    Some(m) => Arc::new(m.clone()) as ArrayRef,
                    None => new_null_array(&arrow::datatypes::DataType::Boolean, stream_idx.len()),
                },
                _ if from_static => take(built.rows.column(c.index), &static_idx, None)?,
                _ => take(batch.column(c.index), &stream_idx, None)?,
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(stream_idx.len()));
        let joined =
            RecordBatch::try_new_with_options(Arc::clone(&self.unprojected), out, &options)?;
        let projected = match &self.projection {
            Some(p) => joined.project(p)?,
            None => joined,
        };
        // The planned join's field names and nullability, the same columns.
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            projected.columns().to_vec(),
            &options,
        )?)
    }

    /// Every (stream row, static row) with equal keys.
    fn pairs(&self, built: &Built, batch: &RecordBatch) -> Result<(UInt32Array, UInt32Array)> {
        let n = batch.num_rows();
        let mut s = Vec::with_capacity(n);
        let mut t = Vec::with_capacity(n);
        let mut chain = |i: usize, mut j: u32| {
            while j != END {
                s.push(i as u32);
                t.push(j);
                j = built.next[j as usize];
            }
        };
        match &built.converter {
            None => {
                if let Some(&head) = built.heads.get(&[][..]) {
                    for i in 0..n {
                        chain(i, head);
                    }
                }
            }
            Some(converter) => {
                let columns = evaluate(&self.stream_keys, batch)?;
                let rows: Rows = converter.convert_columns(&columns)?;
                let valid = all_valid(&columns, n);
                let nulls_match = self.null_equality == NullEquality::NullEqualsNull;
                for i in 0..n {
                    if !valid[i] && !nulls_match {
                        continue;
                    }
                    if let Some(&head) = built.heads.get(rows.row(i).as_ref()) {
                        chain(i, head);
                    }
                }
            }
        }
        Ok((UInt32Array::from(s), UInt32Array::from(t)))
    }

    /// The pairs that pass the join's filter.
    fn filtered(
        &self,
        f: &JoinFilter,
        built: &Built,
        batch: &RecordBatch,
        s: UInt32Array,
        t: UInt32Array,
    ) -> Result<(UInt32Array, UInt32Array)> {
        let mut cols = Vec::with_capacity(f.column_indices().len());
        for c in f.column_indices() {
            cols.push(match self.from_static(c.side) {
                true => take(built.rows.column(c.index), &t, None)?,
                false => take(batch.column(c.index), &s, None)?,
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(s.len()));
        let inter = RecordBatch::try_new_with_options(Arc::clone(f.schema()), cols, &options)?;
        let mask = f.expression().evaluate(&inter)?.into_array(s.len())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("join filter is not boolean".into()))?;
        let keep = |a: &UInt32Array| -> Result<UInt32Array> {
            let out = arrow::compute::filter(a, mask)?;
            Ok(out
                .as_any()
                .downcast_ref::<UInt32Array>()
                .cloned()
                .unwrap_or_else(|| UInt32Array::from(Vec::<u32>::new())))
        };
        Ok((keep(&s)?, keep(&t)?))
    }

    /// Anti join: stream rows without a match; NOT IN (`null_aware`) also drops rows
    /// whose key is NULL, and every row when a static key is NULL.
    fn unmatched(
        &self,
        built: &Built,
        batch: &RecordBatch,
        matched: &[bool],
        null_aware: bool,
    ) -> Result<Vec<u32>> {
        let n = batch.num_rows();
        if !null_aware {
            return Ok((0..n as u32).filter(|i| !matched[*i as usize]).collect());
        }
        if built.null_key {
            return Ok(Vec::new());
        }
        let empty = built.rows.num_rows() == 0;
        let valid = all_valid(&evaluate(&self.stream_keys, batch)?, n);
        Ok((0..n as u32)
            .filter(|i| !matched[*i as usize] && (empty || valid[*i as usize]))
            .collect())
    }
}

fn matched(n: usize, stream_idx: &UInt32Array) -> Vec<bool> {
    let mut m = vec![false; n];
    for i in stream_idx.values() {
        m[*i as usize] = true;
    }
    m
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self
            .probe
            .stream_keys
            .iter()
            .map(|k| k.to_string())
            .collect();
        write!(
            f,
            "LookupJoinExec: {} join of static {} on [{}]",
            self.join_type,
            self.side.tables.join(", "),
            keys.join(", ")
        )?;
        if let Some(filter) = &self.probe.filter {
            write!(f, ", filter={filter}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &'static str {
        "LookupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.stream]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for k in &self.probe.stream_keys {
            if f(k)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let stream = children
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal("lookup join without input".into()))?;
        // A fresh copy over the same built static side: the table is not rebuilt.
        Ok(Arc::new(Self {
            stream,
            side: Arc::clone(&self.side),
            join_type: self.join_type,
            probe: Arc::clone(&self.probe),
            props: Arc::clone(&self.props),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let built = self.side.current()?;
        let probe = Arc::clone(&self.probe);
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let input = self.stream.execute(partition, context)?;
        let stream = input.map(move |batch| {
            let timer = baseline.elapsed_compute().timer();
            let out = probe.join(&built, &batch?);
            timer.done();
            if let Ok(b) = &out {
                baseline.record_output(b.num_rows());
            }
            out
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.probe.schema),
            stream,
        )))
    }
}
