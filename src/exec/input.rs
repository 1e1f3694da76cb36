//! How a micro-batch gets into a plan that was made once: the source table's
//! `TableProvider` returns a [`BatchInputExec`] that reads whatever batches the engine
//! put into its [`InputSlot`] before this run. The slot swaps; the plan does not.
//!
//! ```text
//!  engine: slot.set(batches per partition) ─► reset_plan_states(plan) ─► execute
//!                                                      │
//!                      BatchInputExec::execute(p) ◄────┘ reads partition p's batches
//!  engine: slot.clear() once the run is over
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};

/// The batches of the current micro-batch, one list per plan input partition.
#[derive(Debug, Default)]
pub struct InputSlot {
    partitions: Mutex<Vec<Vec<RecordBatch>>>,
}

impl InputSlot {
    /// Puts the next run's input in place (`batches[p]` feeds input partition `p`).
    pub fn set(&self, batches: Vec<Vec<RecordBatch>>) {
        if let Ok(mut slot) = self.partitions.lock() {
            *slot = batches;
        }
    }

    /// Empties the slot once a run is over, so its batches are freed.
    pub fn clear(&self) {
        if let Ok(mut slot) = self.partitions.lock() {
            slot.clear();
        }
    }

    /// Partition `partition`'s batches. They stay in the slot: a table the query reads
    /// twice (a union of two filters, a self-join) has one scan per reference, and each
    /// scan sees the whole batch.
    fn get(&self, partition: usize) -> Vec<RecordBatch> {
        match self.partitions.lock() {
            Ok(slot) => slot.get(partition).cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

/// A leaf that yields the slot's batches for one partition, then ends.
#[derive(Debug)]
pub struct BatchInputExec {
    slot: Arc<InputSlot>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
    partitions: usize,
    /// Rows the planner should assume (see [`StreamTable::new`]).
    rows_estimate: Option<usize>,
    metrics: ExecutionPlanMetricsSet,
}

impl BatchInputExec {
    /// A leaf with `partitions` partitions of `schema`, fed from `slot`.
    pub fn new(slot: Arc<InputSlot>, schema: SchemaRef, partitions: usize) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            slot,
            schema,
            props: Arc::new(props),
            partitions,
            rows_estimate: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The leaf with a row estimate for the planner's statistics.
    pub fn with_rows_estimate(mut self, rows: Option<usize>) -> Self {
        self.rows_estimate = rows;
        self
    }

    /// Whether this leaf reads `slot` (tells one source table's scans from another's).
    pub fn reads(&self, slot: &Arc<InputSlot>) -> bool {
        Arc::ptr_eq(&self.slot, slot)
    }
}

impl DisplayAs for BatchInputExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BatchInputExec: partitions={}", self.partitions)
    }
}

impl ExecutionPlan for BatchInputExec {
    fn name(&self) -> &'static str {
        "BatchInputExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A fresh copy: each run counts its own rows.
        Ok(Arc::new(Self {
            slot: Arc::clone(&self.slot),
            schema: Arc::clone(&self.schema),
            props: Arc::clone(&self.props),
            partitions: self.partitions,
            rows_estimate: self.rows_estimate,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn partition_statistics(&self, _partition: Option<usize>) -> Result<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema);
        if let Some(rows) = self.rows_estimate {
            stats.num_rows = Precision::Inexact(rows);
            stats.total_byte_size = Precision::Inexact(rows.saturating_mul(64));
        }
        Ok(Arc::new(stats))
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

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.partitions {
            return Err(DataFusionError::Internal(format!(
                "BatchInputExec has {} partitions, asked for {partition}",
                self.partitions
            )));
        }
        let batches = self
            .slot
            .get(partition)
            .iter()
            .map(|b| project_to(b, &self.schema))
            .collect::<Result<Vec<_>>>()?;
        BaselineMetrics::new(&self.metrics, partition)
            .record_output(batches.iter().map(RecordBatch::num_rows).sum());
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            Arc::clone(&self.schema),
            None,
        )?))
    }
}

/// `batch` with the columns of `schema`, by name: the slot holds the columns every scan
/// of the table needs, each scan takes its own.
fn project_to(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let indices = schema
        .fields()
        .iter()
        .map(|f| batch.schema().index_of(f.name()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(batch.project(&indices)?)
}

/// The streaming source as a table. Scanning records which columns the plan reads, so
/// the decoder decodes only those.
#[derive(Debug)]
pub struct StreamTable {
    schema: SchemaRef,
    slot: Arc<InputSlot>,
    partitions: usize,
    rows_estimate: Option<usize>,
    /// The columns any scan of the query reads (indices into `schema`).
    projection: Mutex<Option<std::collections::BTreeSet<usize>>>,
}

impl StreamTable {
    /// The table of `schema`, whose scans read `slot` with `partitions` partitions.
    /// `rows_estimate` is what the planner assumes a scan yields: a stream is assumed
    /// huge and a static table small, so a join builds its hash table from the static
    /// side and streams the other.
    pub fn new(
        schema: SchemaRef,
        slot: Arc<InputSlot>,
        partitions: usize,
        rows_estimate: Option<usize>,
    ) -> Self {
        Self {
            schema,
            slot,
            partitions,
            rows_estimate,
            projection: Mutex::new(None),
        }
    }

    /// The columns the planned query reads, over all its scans of this table (set by
    /// planning), in the table's order: what the decoder produces.
    pub fn projected_schema(&self) -> Option<SchemaRef> {
        let p = self.projection.lock().ok()?;
        let indices: Vec<usize> = p.as_ref()?.iter().copied().collect();
        self.schema.project(&indices).ok().map(Arc::new)
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let all: Vec<usize> = (0..self.schema.fields().len()).collect();
        let projection = projection.unwrap_or(&all);
        let schema = Arc::new(self.schema.project(projection)?);
        self.projection
            .lock()
            .map_err(|_| DataFusionError::Internal("projection lock poisoned".into()))?
            .get_or_insert_with(Default::default)
            .extend(projection.iter().copied());
        Ok(Arc::new(
            BatchInputExec::new(Arc::clone(&self.slot), schema, self.partitions)
                .with_rows_estimate(self.rows_estimate),
        ))
    }
}
