//! The watermark step of a windowed aggregation, placed right below the Partial
//! aggregate (where Spark's EventTimeWatermark sits after the query's filter):
//!
//! ```text
//!  filter/project ─► WatermarkExec ─► AggregateExec(Partial)
//!                     │ drops rows with event time <= watermark (late) or none,
//!                     │ counts them, and tracks the largest event time seen
//!                     └─► WatermarkTracker (shared with the batch loop)
//! ```
//! The batch loop advances the watermark after each batch: max event time seen minus
//! the delay, never decreasing (Spark semantics). Rows that reach this step are the
//! ones that passed the query's filter, so the watermark does not depend on how many
//! records the raw-byte prefilter skipped.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;

use super::window::event_time_ms;

/// No watermark yet.
pub const NO_WATERMARK: i64 = i64::MIN;

/// Watermark state shared between the plan and the batch loop.
#[derive(Debug)]
pub struct WatermarkTracker {
    /// Current watermark (epoch ms); rows at or before it are late.
    watermark: AtomicI64,
    /// Largest event time seen so far.
    max_event: AtomicI64,
    /// Late rows dropped since the last [`WatermarkTracker::take_late`].
    late: AtomicU64,
    /// Set when the query reads several sources: the watermark their clocks allow
    /// (`exec::clocks`), used by [`WatermarkTracker::advance`] instead of the largest
    /// event time here.
    from_sources: std::sync::Mutex<Option<i64>>,
    /// How far the watermark trails the largest event time.
    pub delay_ms: i64,
    /// Processing time (`event_time = 'proctime()'`): the watermark is the wall clock
    /// (less 1 ms, so rows stamped in the same millisecond as the advance are on time).
    processing: bool,
}

impl WatermarkTracker {
    /// A tracker with `delay_ms`.
    pub fn new(delay_ms: i64) -> Self {
        Self {
            watermark: AtomicI64::new(NO_WATERMARK),
            max_event: AtomicI64::new(NO_WATERMARK),
            late: AtomicU64::new(0),
            from_sources: std::sync::Mutex::new(None),
            delay_ms,
            processing: false,
        }
    }

    /// A processing-time tracker: after each batch the watermark moves to the wall
    /// clock, so a window closes at the first batch after the clock passes its end. Rows
    /// are stamped when their batch runs, after the previous advance: none is ever late.
    pub fn processing_time() -> Self {
        Self {
            processing: true,
            ..Self::new(0)
        }
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark.load(Ordering::SeqCst)
    }

    /// Largest event time seen.
    pub fn max_event(&self) -> i64 {
        self.max_event.load(Ordering::SeqCst)
    }

    /// After a batch: watermark = max(watermark, max event time − delay). Returns it.
    /// With several sources, the candidate their clocks set wins (never decreasing
    /// either).
    pub fn advance(&self) -> i64 {
        if self.processing {
            let now = crate::gen::wall_ms().saturating_sub(1);
            self.watermark.fetch_max(now, Ordering::SeqCst);
            return self.watermark();
        }
        if let Some(candidate) = self.from_sources.lock().ok().and_then(|c| *c) {
            self.watermark.fetch_max(candidate, Ordering::SeqCst);
            return self.watermark();
        }
        let max = self.max_event();
        if max != NO_WATERMARK {
            self.watermark
                .fetch_max(max.saturating_sub(self.delay_ms), Ordering::SeqCst);
        }
        self.watermark()
    }

    /// The watermark the sources' clocks allow after this batch (`NO_WATERMARK` holds
    /// it where it is).
    pub fn set_from_sources(&self, candidate: i64) {
        if let Ok(mut c) = self.from_sources.lock() {
            *c = Some(candidate);
        }
    }

    /// Restores a checkpointed watermark and largest event time.
    pub fn restore(&self, watermark: i64, max_event: i64) {
        self.watermark.store(watermark, Ordering::SeqCst);
        self.max_event.store(max_event, Ordering::SeqCst);
    }

    /// Sets the watermark past every window (input exhausted, windows to be closed).
    pub fn close_all(&self) {
        self.watermark.store(i64::MAX, Ordering::SeqCst);
    }

    /// Late rows dropped since the last call (the late-data sink finds the rows
    /// themselves with their offsets: `exec::late`).
    pub fn take_late(&self) -> u64 {
        self.late.swap(0, Ordering::SeqCst)
    }

    fn observe(&self, batch: &RecordBatch, ts: &Arc<dyn PhysicalExpr>) -> Result<RecordBatch> {
        let values = ts.evaluate(batch)?.into_array(batch.num_rows())?;
        let ms = event_time_ms(&values)?;
        let watermark = self.watermark();
        let mut max = NO_WATERMARK;
        let keep: BooleanArray = ms
            .iter()
            .map(|t| {
                Some(match t {
                    Some(t) => {
                        max = max.max(t);
                        t > watermark
                    }
                    None => false,
                })
            })
            .collect();
        self.max_event.fetch_max(max, Ordering::SeqCst);
        let dropped = keep.len() - keep.true_count();
        if dropped == 0 {
            return Ok(batch.clone());
        }
        self.late.fetch_add(dropped as u64, Ordering::SeqCst);
        Ok(filter_record_batch(batch, &keep)?)
    }
}

/// Passes rows through, minus late ones, recording event times.
#[derive(Debug)]
pub struct WatermarkExec {
    input: Arc<dyn ExecutionPlan>,
    event_time: Arc<dyn PhysicalExpr>,
    tracker: Arc<WatermarkTracker>,
    metrics: ExecutionPlanMetricsSet,
}

impl WatermarkExec {
    /// The step over `input`, reading event time with `event_time`.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        event_time: Arc<dyn PhysicalExpr>,
        tracker: Arc<WatermarkTracker>,
    ) -> Self {
        Self {
            input,
            event_time,
            tracker,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for WatermarkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "WatermarkExec: event_time={}, delay={} ms",
            self.event_time, self.tracker.delay_ms
        )
    }
}

impl ExecutionPlan for WatermarkExec {
    fn name(&self) -> &'static str {
        "WatermarkExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.event_time)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(WatermarkExec::new(
            children.swap_remove(0),
            Arc::clone(&self.event_time),
            Arc::clone(&self.tracker),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
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
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let tracker = Arc::clone(&self.tracker);
        let ts = Arc::clone(&self.event_time);
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let stream = input.map(move |b| {
            let _timer = metrics.elapsed_compute().timer();
            let kept = b.and_then(|b| tracker.observe(&b, &ts))?;
            metrics.record_output(kept.num_rows());
            Ok(kept)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
